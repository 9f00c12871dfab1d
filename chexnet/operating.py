"""Operating points: per pathology, the threshold at Youden's J and at a fixed sensitivity, chosen on one split.

    points = choose(val_labels, val_probs, classes, sensitivity=0.9)    # thresholds from val
    rows = measure(test_labels, test_probs, points)                      # test's sensitivity/specificity at them
    text = markdown(rows, "test", points)

An image is called positive for a pathology when its probability is at least
the threshold. Youden's J (sensitivity + specificity - 1) is maximised over
the split's own probabilities, the highest threshold winning a tie; the
fixed-sensitivity threshold is the highest one whose sensitivity on the split
reaches the target (so the most specific of those). A class the split has no
positive or no negative of gets no threshold (None): its ``positive`` output
is then always False; a rate a split cannot measure is None too. Light: NumPy only.
"""
import numpy as np

from chexnet.auc import roc_points
from training import paths

KINDS = ("youden", "sensitivity")  # the two operating points, by name (export --operating-point)


def choose(labels, probs, classes, sensitivity):
    """[{pathology, youden, sensitivity}]: the two thresholds of each class (None where undefined)."""
    points = []
    for c, name in enumerate(classes):
        known = labels[:, c] >= 0  # -1: an uncertain label left out (--uncertain ignore)
        y, p = labels[known, c], probs[known, c]
        youden = at_target = None
        if 0 < y.sum() < len(y):
            fpr, tpr, thr = roc_points(y, p)
            j = tpr[1:] - fpr[1:]  # index 0 is the +inf threshold: no image positive
            youden = float(thr[1:][int(np.argmax(j))])
            at_target = float(thr[int(np.argmax(tpr >= sensitivity))])
        points.append({"pathology": name, "youden": youden, "sensitivity": at_target})
    return points


def rates(y, p, threshold):
    """(sensitivity, specificity) of ``p >= threshold`` against ``y``; None where undefined (JSON-ready)."""
    if threshold is None:
        return None, None
    called = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(called[pos].mean()) if pos.any() else None
    spec = float((~called[neg]).mean()) if neg.any() else None
    return sens, spec


def measure(labels, probs, points):
    """Per class: the thresholds and the sensitivity/specificity they give on (labels, probs)."""
    rows = []
    for c, point in enumerate(points):
        y, p = labels[:, c], probs[:, c]
        row = {"pathology": point["pathology"], "positives": int((y == 1).sum()), "negatives": int((y == 0).sum())}
        for kind in KINDS:
            sens, spec = rates(y, p, point[kind])
            row.update({f"{kind}_threshold": point[kind], f"{kind}_sensitivity": sens,
                        f"{kind}_specificity": spec})
        rows.append(row)
    return rows


COLUMNS = tuple(f"{kind}_{what}" for kind in KINDS for what in ("threshold", "sensitivity", "specificity"))


def _fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(rows, split, chosen_on, target):
    lines = [f"| pathology | positives | Youden threshold | sensitivity | specificity | threshold at "
             f"sensitivity {target:g} | sensitivity | specificity |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['pathology']} | {r['positives']} | " + " | ".join(
        _fmt(r[k], 4 if k.endswith("threshold") else 3) for k in COLUMNS) + " |" for r in rows]
    caption = (f"Thresholds chosen on the {chosen_on} split (an image is positive when its probability is at "
               f"least the threshold); sensitivity and specificity measured on the {split} split. n/a: the "
               f"{chosen_on} split has no positive or no negative of that class.")
    return "\n".join(lines + ["", caption])


def write(folder, rows, split, chosen_on, target):
    """operating_points.md and .csv of one split in ``folder``."""
    paths.write_text(f"{folder}/operating_points.md",
                     f"# Operating points: {split} split\n\n{markdown(rows, split, chosen_on, target)}\n")
    paths.write_csv(f"{folder}/operating_points.csv", ["pathology", "positives", "negatives", *COLUMNS],
                    [[r["pathology"], r["positives"], r["negatives"],
                      *("" if r[k] is None else f"{r[k]:.17g}" for k in COLUMNS)] for r in rows])
