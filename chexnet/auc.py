"""Per-pathology ROC AUC, bootstrap intervals and tables (no Horovod).

    aucs = per_class_auc(labels, probs)          # nan where a class has one label value
    table = auc_table(labels, probs, CLASSES, n_boot=1000, seed=0)
    print(markdown(table))

The mean is over classes whose AUC is defined, and the table says how many.
"""
import numpy as np
from sklearn.metrics import roc_auc_score

from training.paths import csv_text as _csv


def per_class_auc(labels, probs):
    out = []
    for c in range(labels.shape[1]):
        y = labels[:, c]
        out.append(float(roc_auc_score(y, probs[:, c])) if 0 < y.sum() < len(y) else float("nan"))
    return np.array(out)


def roc_points(y, scores):
    """(fpr, tpr, thresholds) of one class: a point per distinct score, from (0, 0) at threshold +inf
    down to (1, 1); every threshold kept (what a CSV of the curve should hold). ``y`` must hold both
    classes.

    >>> fpr, tpr, thr = roc_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> fpr.tolist(), tpr.tolist(), thr[1:].tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0], [0.8, 0.4, 0.35, 0.1])
    """
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], y[order].astype(np.float64)
    last_of_value = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # ties share one point
    tp = np.cumsum(hits)[last_of_value]
    fp = (last_of_value + 1) - tp
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]], np.r_[np.inf, ranked[last_of_value]]


def roc_csv(labels, probs, class_names):
    """pathology,threshold,fpr,tpr: every point of every class whose ROC is defined."""
    rows = []
    for c, name in enumerate(class_names):
        if 0 < labels[:, c].sum() < len(labels):
            rows += [[name, f"{thr:.17g}", f"{f:.17g}", f"{t:.17g}"]
                     for f, t, thr in zip(*roc_points(labels[:, c], probs[:, c]))]
    return _csv(["pathology", "threshold", "fpr", "tpr"], rows)


def mean_auc(aucs):
    defined = aucs[~np.isnan(aucs)]
    return float(defined.mean()) if defined.size else float("nan")


def bootstrap_ci(labels, probs, n_boot, seed, level=0.95):
    """Percentile intervals per class over image resamples; also for the mean AUC."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    samples = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        samples.append(per_class_auc(labels[idx], probs[idx]))
    samples = np.array(samples)  # (n_boot, classes)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    with np.errstate(all="ignore"):
        lo = np.nanpercentile(samples, lo_q, axis=0)
        hi = np.nanpercentile(samples, hi_q, axis=0)
        means = np.array([mean_auc(s) for s in samples])
    return lo, hi, (float(np.nanpercentile(means, lo_q)), float(np.nanpercentile(means, hi_q)))


def auc_table(labels, probs, class_names, n_boot=1000, seed=0):
    aucs = per_class_auc(labels, probs)
    lo, hi, mean_ci = bootstrap_ci(labels, probs, n_boot, seed)
    rows = [{"pathology": name, "positives": int(labels[:, i].sum()), "auc": aucs[i],
             "ci_low": lo[i], "ci_high": hi[i]} for i, name in enumerate(class_names)]
    defined = int((~np.isnan(aucs)).sum())
    rows.append({"pathology": f"Mean ({defined} classes)", "positives": int(labels.sum()),
                 "auc": mean_auc(aucs), "ci_low": mean_ci[0], "ci_high": mean_ci[1]})
    return rows


def _fmt(v):
    return "n/a" if v is None or np.isnan(v) else f"{v:.3f}"


def markdown(rows):
    lines = ["| pathology | positives | AUC | 95% CI |", "|---|---|---|---|"]
    lines += [f"| {r['pathology']} | {r['positives']} | {_fmt(r['auc'])} | "
              f"{_fmt(r['ci_low'])} - {_fmt(r['ci_high'])} |" for r in rows]
    return "\n".join(lines)


def csv_text(rows):
    return _csv(["pathology", "positives", "auc", "ci_low", "ci_high"],
                [[r["pathology"], r["positives"], *(f"{r[k]:.6f}" for k in ("auc", "ci_low", "ci_high"))]
                 for r in rows])
