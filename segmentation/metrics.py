"""Per-image segmentation figures on thresholded predictions, and their means with bootstrap intervals.

    counts = confusion_counts(masks, logits)          # (N, 4): tp, fp, fn, tn per image; logit > 0 is polyp
    figures = per_image(counts)                       # {"dice": (N,), "iou": ..., "precision": ..., "recall": ...}
    summary(counts)                                   # {"dice": mean, ...}
    rows = table(counts, n_boot=1000, seed=0)         # mean and 95% CI of each figure

Each figure is computed per image, then averaged over images (so a small
polyp counts as much as a large one), from predictions thresholded at 0.5
(logit 0) - never from probabilities, and never pooled per batch. Cases with
an empty denominator are defined, not skipped:
  - Dice = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN): 1 when the
    mask and the prediction are both empty (a correct "no polyp"), else as written;
  - precision = TP / (TP + FP): with nothing predicted, 1 if the mask is empty
    too and 0 otherwise;
  - recall = TP / (TP + FN): with an empty mask, 1 if nothing was predicted
    and 0 otherwise (any prediction there is all false positive).
"""
import numpy as np

from training.paths import csv_text as _csv

FIGURES = ("dice", "iou", "precision", "recall")


def confusion_counts(masks, logits):
    """(N, 4) int64 tp, fp, fn, tn per image of 0/1 ``masks`` and ``logits``, both (N, H, W[, 1])."""
    masks, logits = np.asarray(masks), np.asarray(logits)
    pixels = int(np.prod(masks.shape[1:]))  # explicit: reshape(0, -1) cannot infer it for zero images
    truth = masks.reshape(len(masks), pixels) > 0.5
    pred = logits.reshape(len(logits), pixels) > 0.0
    tp = (truth & pred).sum(1)
    fp = (~truth & pred).sum(1)
    fn = (truth & ~pred).sum(1)
    tn = (~truth & ~pred).sum(1)
    return np.stack([tp, fp, fn, tn], 1).astype(np.int64)


def _ratio(num, den, when_empty):
    num, den = num.astype(np.float64), den.astype(np.float64)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(den > 0, out, when_empty)


def per_image(counts):
    """{figure: (N,) array} from (N, 4) tp, fp, fn, tn counts.

    >>> {k: v.tolist() for k, v in per_image([[2, 1, 1, 5], [0, 0, 0, 9]]).items()}
    {'dice': [0.6666666666666666, 1.0], 'iou': [0.5, 1.0], 'precision': [0.6666666666666666, 1.0], 'recall': [0.6666666666666666, 1.0]}
    """
    tp, fp, fn, _ = (np.asarray(counts)[:, i] for i in range(4))
    both_empty = (tp + fp + fn) == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, np.where(both_empty, 1.0, 0.0)),
        "recall": _ratio(tp, tp + fn, np.where(fp == 0, 1.0, 0.0)),
    }


def summary(counts):
    """Mean of each figure over images (nan for no images)."""
    if len(counts) == 0:
        return {f: float("nan") for f in FIGURES}
    return {f: float(v.mean()) for f, v in per_image(counts).items()}


def table(counts, n_boot=1000, seed=0, level=0.95):
    """[{figure, mean, ci_low, ci_high}]: percentile intervals over image resamples."""
    values = per_image(counts)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), (n_boot, len(counts)))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    rows = []
    for f in FIGURES:
        means = values[f][idx].mean(1)
        rows.append({"figure": f, "mean": float(values[f].mean()), "ci_low": float(np.percentile(means, lo_q)),
                     "ci_high": float(np.percentile(means, hi_q))})
    return rows


def with_ceiling(rows, known):
    """``rows`` of ``table`` with the ``ceiling`` of the figures ``known`` holds (a manifest split's: the planted
    masks' Dice and IoU, dataprep.ceiling) and ``of_ceiling`` (mean / ceiling); None for the others."""
    for r in rows:
        r["ceiling"] = known.get(r["figure"])
        r["of_ceiling"] = r["mean"] / r["ceiling"] if r["ceiling"] else None
    return rows


CEILING_NOTE = ("Ceiling: the figure of the synthetic set's planted masks (the outlines the frames were drawn from) "
                "against its annotated ones, on these images (the best achievable); of ceiling = mean / ceiling "
                "(docs/data.md, difficulty).")


def _opt(v):
    return "-" if v is None else f"{v:.4f}"


def markdown(rows):
    known = "ceiling" in rows[0]
    lines = ["| figure | mean over images | 95% CI |" + (" ceiling | of ceiling |" if known else ""),
             "|---|---|---|" + ("---|---|" if known else "")]
    lines += [f"| {r['figure']} | {r['mean']:.4f} | {r['ci_low']:.4f} - {r['ci_high']:.4f} |"
              + (f" {_opt(r['ceiling'])} | {_opt(r['of_ceiling'])} |" if known else "") for r in rows]
    return "\n".join(lines + (["", CEILING_NOTE] if known else []))


def csv_text(rows):
    columns = ("mean", "ci_low", "ci_high") + (("ceiling", "of_ceiling") if "ceiling" in rows[0] else ())
    return _csv(["figure", *columns],
                [[r["figure"], *("" if r[k] is None else f"{r[k]:.6f}" for k in columns)] for r in rows])


def per_image_rows(names, counts):
    """(header, rows) of per_image.csv: each image's figures and its tp, fp, fn, tn."""
    figures = per_image(counts)
    rows = [[name, *(f"{figures[f][i]:.6f}" for f in FIGURES), *(int(v) for v in counts[i])]
            for i, name in enumerate(names)]
    return ["image", *FIGURES, "tp", "fp", "fn", "tn"], rows
