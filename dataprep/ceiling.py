"""The known ceiling of a synthetic set: what an oracle that sees the planted variables scores on a split.

    path = planted_file("data/chestxray14", PLANTED_SCORES)   # None unless SYNTHETIC.json vouches for it
    scores = read_scores(path)                                # {image: (14,) P(label | planted finding)}
    auc_ceiling(names, labels, scores, classes)              # {"auc": {class: AUC}, "mean_auc": ...}
    dice_ceiling(oracle_counts)                              # {"dice": ..., "iou": ...}: planted vs written masks

At ``--difficulty realistic`` the synthetic writers draw a hidden truth (the
finding, its evidence strength; the polyp's true outline) and write labels
and masks through a known noise. The ceiling of a split is the oracle's
figure over the images of that split as written: for ChestX-ray14 the AUC,
per class, of P(label | planted variables) against the written labels
(Bayes-optimal: the image depends on nothing else the label depends on); for
Kvasir-SEG the Dice of the planted mask against the written one, per image
and averaged as segmentation.evaluate averages. A predictor can land a little
above it on a finite split by chance, never far.
"""
import csv
import os

import numpy as np

from dataprep import synthetic_marker

PLANTED_SCORES = "planted_scores.csv"  # ChestX-ray14: one row per image, P(label | planted) per class
PLANTED_MASKS = "planted_masks.zip"    # Kvasir-SEG: <id>.png, the outline the frame was drawn from


def planted_file(data_dir, name):
    """Path of ``name`` in ``data_dir`` when SYNTHETIC.json records it with these bytes, else None."""
    recorded = (synthetic_marker.read(data_dir) or {}).get("files") or {}
    path = os.path.join(data_dir, name)
    if not recorded.get(name) or not os.path.isfile(path) or not synthetic_marker.is_ours(data_dir, name, recorded):
        return None
    return path


def write_scores(path, names, scores, classes):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["image", *classes])
        out.writerows([name, *(f"{v:.6g}" for v in row)] for name, row in zip(names, scores))


def read_scores(path):
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return {r[0]: np.array(r[1:], dtype=np.float64) for r in rows[1:]}


def auc_ceiling(names, labels, scores, classes):
    """Per-class and mean AUC of the planted scores against ``labels`` (N, C) over ``names``; None if any
    image has no planted score (images from elsewhere)."""
    from chexnet.auc import mean_auc, per_class_auc
    if not names or any(n not in scores for n in names):
        return None
    aucs = per_class_auc(np.asarray(labels), np.stack([scores[n] for n in names]))
    return {"auc": {c: (None if np.isnan(a) else round(float(a), 6)) for c, a in zip(classes, aucs)},
            "mean_auc": round(float(mean_auc(aucs)), 6)}


def dice_ceiling(counts):
    """Mean Dice and IoU over images of the planted masks against the written ones, from (N, 4) counts."""
    from segmentation.metrics import summary
    if len(counts) == 0:
        return None
    means = summary(np.asarray(counts))
    return {"dice": round(means["dice"], 6), "iou": round(means["iou"], 6)}


def fraction(value, ceiling):
    """``value`` as a share of ``ceiling`` (None when either is unknown)."""
    if value is None or ceiling is None or not np.isfinite(value) or not ceiling:
        return None
    return float(value) / float(ceiling)
