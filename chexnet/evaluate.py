"""Evaluate a CheXNet checkpoint on a split: per-pathology AUC with patient-bootstrap and DeLong 95% CI, ROC curves.

    python -m chexnet.evaluate --run runs/cx                    # best.npz on the test split
    mpirun -np 2 python -m chexnet.evaluate --run runs/cx --split val --checkpoint last.npz
    mpirun -np 2 python -m chexnet.evaluate --run runs/cx --split val,test    # both, one model load

Writes, for each split, <run>/eval-<split>/{auc.md, auc.csv, roc.csv, roc.png, predictions.csv}, appends
an ``eval`` record to <run>/metrics.jsonl, and prints the table (rank 0). A read-only run folder, or a
checkpoint that is unreadable or not chexnet.train's, stops it before any work (training.evaluation).
"""
import os

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.config import parse_args
from runtime.errors import main_guard
from runtime.files import atomic_write
from training import paths
from training.evaluation import EvalConfig, start


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
              patients=mean["patients"], auc={r["pathology"]: r["auc"] for r in rows[:-1]})
    print(f"## Per-pathology AUC: {title}\n\n{auc.markdown(rows)}\n\n(saved in {out}/)", flush=True)
    ev.log.info("evaluation written to %s", out)


@main_guard
def main(argv=None):
    cfg = parse_args(EvalConfig, argv, description="Evaluate a CheXNet checkpoint: per-pathology AUC table, "
                                                   "bootstrap intervals, ROC curves.")
    from chexnet import model as cx_model
    ev = start(cfg, "evaluate", "chexnet.train", cx_model.check_checkpoint)
    from training import checkpoint
    from training.gather import Predictor

    cx_model.check_checkpoint(ev.state, ev.checkpoint_path, ev.manifest.classes, ev.manifest.stored_size)
    model = cx_model.build_model(ev.state["crop"], len(ev.manifest.classes))
    checkpoint.restore(ev.checkpoint_path, model, with_optimizer=False)
    predictor = Predictor(model)  # one traced predict step for every split
    # Every split's collectives first: no rank then waits in one while rank 0 bootstraps a table.
    gathered = [(one, gather_split(one, predictor)) for one in ev.each_split()]
    if ev.ctx.is_chief:
        for one, split_rows in gathered:
            write_split(one, *split_rows)


if __name__ == "__main__":
    main()
