"""Per-pathology ROC AUC, 95% intervals (patient bootstrap, DeLong) and tables (no Horovod).

    aucs = per_class_auc(labels, probs)          # nan where a class has one label value
    table = auc_table(labels, probs, CLASSES, n_boot=1000, seed=0, patients=patient_ids)
    print(markdown(table))                       # the table and its caption

Three intervals per row. The primary one is a percentile bootstrap that
resamples patients with all their images (a cluster bootstrap): follow-up
images of one patient share findings, so resampling images would treat them as
independent evidence and give too narrow an interval. Without patient ids it
resamples images, and the caption says so. Beside it, DeLong's interval
(DeLong et al. 1988, computed in the O(n log n) midrank form of Sun & Xu 2014),
which treats images as independent, as medical papers report it; and the same
interval with Obuchowski's (1997) clustered variance, which sums each
patient's structural components first. The mean is over classes whose AUC is
defined, and the table says how many.
"""
import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from training.paths import csv_text as _csv

LEVEL = 0.95


def per_class_auc(labels, probs):
    """AUC per class over its known labels (a label below 0 is ignored: --uncertain ignore)."""
    out = []
    for c in range(labels.shape[1]):
        known = labels[:, c] >= 0
        y = labels[known, c]
        out.append(float(roc_auc_score(y, probs[known, c])) if 0 < y.sum() < len(y) else float("nan"))
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


# ------------------------------------------------------------------ bootstrap
def patient_groups(patients, n):
    """(group index per image, group count): one group per patient id, or one per image when
    ``patients`` is None or holds no id."""
    if patients is None or not any(str(p) for p in patients):
        return np.arange(n), n
    codes, inverse = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    return inverse.reshape(-1), len(codes)


def resample_unit(patients):
    return "image" if patients is None or not any(str(p) for p in patients) else "patient"


def bootstrap_ci(labels, probs, n_boot, seed, level=LEVEL, patients=None):
    """Percentile intervals per class and for the mean AUC over ``n_boot`` resamples of patients
    (each drawn patient brings all its images), or of images when no patient id is known."""
    rng = np.random.default_rng(seed)
    group, n_groups = patient_groups(patients, len(labels))
    samples = []
    for _ in range(n_boot):
        copies = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        idx = np.repeat(np.arange(len(labels)), copies[group])
        samples.append(per_class_auc(labels[idx], probs[idx]))
    samples = np.array(samples)  # (n_boot, classes)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    with np.errstate(all="ignore"):
        lo = np.nanpercentile(samples, lo_q, axis=0)
        hi = np.nanpercentile(samples, hi_q, axis=0)
        means = np.array([mean_auc(s) for s in samples])
    return lo, hi, (float(np.nanpercentile(means, lo_q)), float(np.nanpercentile(means, hi_q)))


# ------------------------------------------------------------------ DeLong
def structural_components(y, scores):
    """(V10 of the positives, V01 of the negatives, AUC) of one class, from midranks (Sun & Xu 2014).

    V10_i is the share of negatives below positive i (ties count half), V01_j the share of positives
    above negative j; the AUC is the mean of either. ``y`` must hold both classes.
    """
    pos, neg = scores[y == 1], scores[y != 1]
    m, n = len(pos), len(neg)
    all_ranks = rankdata(np.r_[pos, neg])  # midranks: ties share the mean of their ranks
    v10 = (all_ranks[:m] - rankdata(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - rankdata(neg)) / m
    return v10, v01, float(v10.mean())


def influence(labels, probs):
    """(psi, psi_small_sample, aucs, defined): (images, classes) arrays over the ``defined`` classes
    (those with both label values), their AUCs, and those classes' indices.

    psi[i, k] is image i's term of class k's linearised AUC: (V10_i - AUC) / m for a positive,
    (V01_i - AUC) / n for a negative. psi_small_sample scales the positives' by sqrt(m / (m - 1)) and
    the negatives' by sqrt(n / (n - 1)), so that its Gram matrix is DeLong's S10/m + S01/n exactly
    (a side with a single image, whose sample variance is undefined, adds nothing).
    """
    known = labels >= 0  # an ignored label (below 0) adds no term
    defined = [k for k in range(labels.shape[1]) if 0 < (labels[:, k] == 1).sum() < known[:, k].sum()]
    psi = np.zeros((len(labels), len(defined)))
    small = np.zeros_like(psi)
    aucs = np.zeros(len(defined))
    for col, k in enumerate(defined):
        is_pos, is_neg = labels[:, k] == 1, labels[:, k] == 0
        v10, v01, aucs[col] = structural_components(labels[known[:, k], k], probs[known[:, k], k])
        m, n = len(v10), len(v01)
        psi[is_pos, col], psi[is_neg, col] = (v10 - aucs[col]) / m, (v01 - aucs[col]) / n
        small[is_pos, col] = psi[is_pos, col] * np.sqrt(m / (m - 1)) if m > 1 else 0.0
        small[is_neg, col] = psi[is_neg, col] * np.sqrt(n / (n - 1)) if n > 1 else 0.0
    return psi, small, aucs, defined


def delong_cov(labels, probs, patients=None):
    """(covariance matrix of the defined classes' AUCs, their class indices).

    Without ``patients``: DeLong's, images independent (with one label set for all classes, Sun &
    Xu's S10/m + S01/n). With them: Obuchowski's clustered form, I/(I-1) times the sum over the
    I patients of the outer product of their summed image terms.
    """
    psi, small, _, defined = influence(labels, probs)
    if resample_unit(patients) == "image":
        return small.T @ small, defined
    group, n_groups = patient_groups(patients, len(labels))
    per_patient = np.zeros((n_groups, psi.shape[1]))
    np.add.at(per_patient, group, psi)
    return n_groups / max(n_groups - 1, 1) * per_patient.T @ per_patient, defined


def normal_interval(estimate, variance, level=LEVEL):
    """estimate -/+ z * sqrt(variance), clipped to [0, 1] (an AUC's range)."""
    half = ndtri((1 + level) / 2) * np.sqrt(max(variance, 0.0))
    return max(0.0, estimate - half), min(1.0, estimate + half)


def delong_ci(labels, probs, patients=None, level=LEVEL):
    """(low per class, high per class, (low, high) of the mean AUC): normal intervals from
    ``delong_cov``; nan for a class without both label values. The mean's variance is
    1'C1 / K^2 over the K defined classes (their covariances included)."""
    cov, defined = delong_cov(labels, probs, patients)
    aucs = per_class_auc(labels, probs)
    lo, hi = np.full(labels.shape[1], np.nan), np.full(labels.shape[1], np.nan)
    for col, k in enumerate(defined):
        lo[k], hi[k] = normal_interval(aucs[k], cov[col, col], level)
    if not defined:
        return lo, hi, (float("nan"), float("nan"))
    return lo, hi, normal_interval(mean_auc(aucs), cov.sum() / len(defined) ** 2, level)


# ------------------------------------------------------------------ tables
def auc_table(labels, probs, class_names, n_boot=1000, seed=0, patients=None):
    """One row per class and the mean: AUC, bootstrap (ci_*), DeLong (delong_*) and clustered
    DeLong (clustered_*, nan without patient ids) 95% intervals; the mean row also holds the
    ``images``, ``patients`` (0: none known, images resampled) and ``resamples`` behind them."""
    aucs = per_class_auc(labels, probs)
    lo, hi, mean_ci = bootstrap_ci(labels, probs, n_boot, seed, patients=patients)
    d_lo, d_hi, d_mean = delong_ci(labels, probs)
    clustered = resample_unit(patients) == "patient"
    nan = np.full(len(class_names), np.nan)
    c_lo, c_hi, c_mean = delong_ci(labels, probs, patients) if clustered else (nan, nan, (np.nan, np.nan))
    rows = [{"pathology": name, "positives": int((labels[:, i] == 1).sum()), "auc": aucs[i], "ci_low": lo[i],
             "ci_high": hi[i], "delong_low": d_lo[i], "delong_high": d_hi[i], "clustered_low": c_lo[i],
             "clustered_high": c_hi[i]} for i, name in enumerate(class_names)]
    defined = int((~np.isnan(aucs)).sum())
    rows.append({"pathology": f"Mean ({defined} classes)", "positives": int((labels == 1).sum()), "auc": mean_auc(aucs),
                 "ci_low": mean_ci[0], "ci_high": mean_ci[1], "delong_low": d_mean[0], "delong_high": d_mean[1],
                 "clustered_low": c_mean[0], "clustered_high": c_mean[1], "images": len(labels),
                 "patients": patient_groups(patients, len(labels))[1] if clustered else 0, "resamples": n_boot})
    return rows


def with_ceiling(rows, known):
    """``rows`` of auc_table with each class's ``ceiling`` (a manifest split's, dataprep.ceiling) and
    ``of_ceiling`` (AUC / ceiling); the mean row's are over the classes whose AUC is defined."""
    pairs = []
    for r in rows[:-1]:
        r["ceiling"] = known["auc"].get(r["pathology"])
        r["of_ceiling"] = r["auc"] / r["ceiling"] if r["ceiling"] and not np.isnan(r["auc"]) else float("nan")
        if not np.isnan(r["of_ceiling"]):
            pairs.append((r["auc"], r["ceiling"]))
    mean = rows[-1]
    mean["ceiling"] = float(np.mean([c for _, c in pairs])) if pairs else float("nan")
    mean["of_ceiling"] = float(np.mean([a for a, _ in pairs])) / mean["ceiling"] if pairs else float("nan")
    return rows


def _fmt(v):
    return "n/a" if v is None or np.isnan(v) else f"{v:.3f}"


def _interval(low, high):
    return "n/a" if np.isnan(low) else f"{_fmt(low)} - {_fmt(high)}"


def caption(rows):
    """Which interval is which, and what was resampled (from the mean row of ``auc_table``)."""
    mean = rows[-1]
    images, patients, n_boot = mean["images"], mean["patients"], mean["resamples"]
    if patients:
        boot = (f"percentile bootstrap over {n_boot} resamples of the {patients} patients, each with all its "
                f"images ({images} images)")
        clustered = "DeLong, by patient: the same with Obuchowski's (1997) clustered variance (patients independent)"
    else:
        boot = (f"percentile bootstrap over {n_boot} resamples of the {images} images: no patient ids were known, "
                f"so images were resampled as if independent (too narrow where patients have several)")
        clustered = "DeLong, by patient: n/a without patient ids"
    return (f"95% intervals. Bootstrap (primary): {boot}. DeLong: the normal interval of DeLong et al. (1988), "
            f"which treats the {images} images as independent; the mean's uses the covariance of the classes' "
            f"AUCs. {clustered}.")


def markdown(rows):
    """The table, then its caption."""
    unit = "patient" if rows[-1]["patients"] else "image"
    known = "ceiling" in rows[-1]
    extra = (" ceiling | of ceiling |", "---|---|") if known else ("", "")
    lines = [f"| pathology | positives | AUC | 95% CI ({unit} bootstrap) | 95% CI (DeLong) | "
             f"95% CI (DeLong, by patient) |{extra[0]}", f"|---|---|---|---|---|---|{extra[1]}"]
    lines += [f"| {r['pathology']} | {r['positives']} | {_fmt(r['auc'])} | "
              f"{_interval(r['ci_low'], r['ci_high'])} | {_interval(r['delong_low'], r['delong_high'])} | "
              f"{_interval(r['clustered_low'], r['clustered_high'])} |"
              + (f" {_fmt(r['ceiling'])} | {_fmt(r['of_ceiling'])} |" if known else "") for r in rows]
    note = [CEILING_NOTE] if known else []
    return "\n".join(lines + ["", caption(rows), *note])


CEILING_NOTE = ("Ceiling: the AUC of an oracle that sees the synthetic set's planted findings and their strength, "
                "on these images and labels (the best any model can expect); of ceiling = AUC / ceiling "
                "(docs/data.md, difficulty).")


CSV_COLUMNS = ("auc", "ci_low", "ci_high", "delong_low", "delong_high", "clustered_low", "clustered_high")


def csv_text(rows):
    columns = CSV_COLUMNS + (("ceiling", "of_ceiling") if "ceiling" in rows[-1] else ())
    return _csv(["pathology", "positives", *columns],
                [[r["pathology"], r["positives"], *(f"{_or_nan(r[k]):.6f}" for k in columns)] for r in rows])


def _or_nan(v):
    return float("nan") if v is None else v
