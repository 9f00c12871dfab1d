"""CheXNet's evaluation tables: per-pathology AUC with patient-bootstrap and DeLong 95% CI, ROC curves,
predictions, and the operating points chosen on val (``training.evaluation`` runs them, through the
workload: chexnet.workload).

    graded = gather_split(ev, predictor)      # collective: (logits, labels, names, patients) of ev.split
    write_split(ev, *graded)                  # rank 0: <run>/eval-<split>/{auc.md, auc.csv, roc.*, predictions.csv}
    write_operating_points(ev, [(ev, graded), ...])   # rank 0: <run>/operating_points.json and each split's table
"""
import json
import os

from runtime.files import atomic_write, sha256_of, write_json
from training import paths

POINTS_FILE = "operating_points.json"
CHOSEN_ON = "val"


def roc_png(path, labels, probs, classes):
    """The curves of roc.csv (chexnet.auc.roc_points), one colour per pathology, AUC in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from chexnet.auc import per_class_auc, roc_points
    aucs = per_class_auc(labels, probs)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 14 curves: the default 10 colours would repeat
    for c, name in enumerate(classes):
        if 0 < labels[:, c].sum() < len(labels):
            fpr, tpr, _ = roc_points(labels[:, c], probs[:, c])
            ax.plot(fpr, tpr, lw=1, label=f"{name} ({aucs[c]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC per pathology")
    ax.legend(fontsize=7, loc="lower right")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    plt.close(fig)


def write_predictions(path, names, probs, labels, classes):
    paths.write_csv(path, ["image", *(f"p_{c}" for c in classes), *(f"y_{c}" for c in classes)],
                    [[n, *(f"{v:.17g}" for v in p), *(int(v) for v in y)] for n, p, y in zip(names, probs, labels)])


def gather_split(ev, predictor):
    """Collective: (logits, labels, names, patients) of every image of ``ev.split``, gathered on every rank."""
    from chexnet import data, validation
    ds = data.eval_dataset(ev.manifest, ev.split, ev.ctx.rank, ev.ctx.size, ev.cfg.eval_batch, ev.state["crop"])
    return validation.gather_logits(predictor, ds, ev.manifest.images(ev.split))


def write_split(ev, logits, labels, names, patients):
    """Rank 0: the split's tables, curves and predictions in <run>/eval-<split>/, and its ``eval`` record."""
    from chexnet import auc, losses
    cfg, classes = ev.cfg, ev.manifest.classes
    probs = losses.sigmoid(logits)
    rows = auc.auc_table(labels, logits, classes, n_boot=cfg.bootstrap, seed=cfg.seed, patients=patients)
    known = ev.manifest.ceiling(ev.split)
    if known:  # a realistic synthetic set: each AUC beside the best any model can expect there
        rows = auc.with_ceiling(rows, known)
    out, title = ev.out_dir(), ev.title(len(names))
    paths.write_text(os.path.join(out, "auc.md"), f"# Per-pathology AUC: {title}\n\n{auc.markdown(rows)}\n")
    paths.write_text(os.path.join(out, "auc.csv"), auc.csv_text(rows))
    write_predictions(os.path.join(out, "predictions.csv"), names, probs, labels, classes)
    paths.write_text(os.path.join(out, "roc.csv"), auc.roc_csv(labels, probs, classes))
    roc_png(os.path.join(out, "roc.png"), labels, probs, classes)
    mean = rows[-1]
    ev.record(len(names), mean_auc=mean["auc"], mean_auc_ci=[mean["ci_low"], mean["ci_high"]],
              mean_auc_delong_ci=[mean["delong_low"], mean["delong_high"]],
              mean_auc_clustered_ci=[mean["clustered_low"], mean["clustered_high"]],
              patients=mean["patients"], auc={r["pathology"]: r["auc"] for r in rows[:-1]},
              **({"mean_auc_ceiling": mean["ceiling"], "mean_auc_of_ceiling": mean["of_ceiling"]} if known else {}))
    print(f"## Per-pathology AUC: {title}\n\n{auc.markdown(rows)}\n\n(saved in {out}/)", flush=True)
    ev.log.info("evaluation written to %s", out)


def chosen_points(ev, gathered):
    """This checkpoint's operating points (the operating_points.json dict): chosen now if val was graded, else
    read from <run>/operating_points.json when that file is this checkpoint's; None otherwise (rank 0)."""
    from chexnet import losses, operating
    path, sha = os.path.join(ev.cfg.run, POINTS_FILE), sha256_of(ev.checkpoint_path)
    by_split = {one.split: rows for one, rows in gathered}
    if CHOSEN_ON in by_split:
        logits, labels = by_split[CHOSEN_ON][:2]
        points = operating.choose(labels, losses.sigmoid(logits), ev.manifest.classes, ev.cfg.sensitivity)
        return {"checkpoint": os.path.basename(ev.checkpoint_path), "checkpoint_sha256": sha,
                "epoch": ev.state["epoch"], "chosen_on": CHOSEN_ON, "images": len(labels),
                "target_sensitivity": ev.cfg.sensitivity, "points": points, "measured": {}}
    saved = read_points(path)
    if saved and saved.get("checkpoint_sha256") == sha:
        ev.log.info("operating points from %s (chosen on %s at sensitivity %g)", path, CHOSEN_ON,
                    saved["target_sensitivity"])
        return saved
    ev.log.info("no operating points: they are chosen on val; grade --split val,test to have them")
    return None


def read_points(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_operating_points(ev, gathered):
    """Rank 0: each graded split's sensitivity and specificity at the val-chosen thresholds, in its
    eval-<split>/ and in <run>/operating_points.json (read by export's model card)."""
    from chexnet import losses, operating
    chosen = chosen_points(ev, gathered)
    if chosen is None:
        return
    for one, (logits, labels, *_rest) in gathered:
        rows = operating.measure(labels, losses.sigmoid(logits), chosen["points"])
        operating.write(one.out_dir(), rows, one.split, CHOSEN_ON, chosen["target_sensitivity"])
        chosen["measured"][one.split] = rows
    write_json(os.path.join(ev.cfg.run, POINTS_FILE), chosen)
