"""Evaluate a CheXNet checkpoint on a split: per-pathology AUC with bootstrap 95% CI, ROC curves.

    python -m chexnet.evaluate --run runs/cx                    # best.npz on the test split
    mpirun -np 2 python -m chexnet.evaluate --run runs/cx --split val --checkpoint last.npz

Writes <run>/eval-<split>/{auc.md, auc.csv, roc.png, predictions.csv}, appends
an ``eval`` record to <run>/metrics.jsonl, and prints the table (rank 0).
"""
import dataclasses
import json
import os

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime import distributed
from runtime.config import PRECISION_HELP, PRECISIONS, ProcessConfig, field, parse_args
from runtime.errors import UserError, main_guard
from runtime.logs import setup_logging
from runtime.metrics import MetricsStream


@dataclasses.dataclass
class EvalConfig(ProcessConfig):
    """Evaluate a CheXNet checkpoint: per-pathology AUC table, bootstrap intervals, ROC curves."""

    precision: str = field("checkpoint", "checkpoint = the precision the checkpoint was trained and validated "
                           "in (its AUCs are then reproduced exactly); or " + PRECISION_HELP,
                           choices=["checkpoint", *PRECISIONS])
    run: str = field("", "run folder of chexnet.train (holds config.json and the checkpoints)")
    checkpoint: str = field("best.npz", "checkpoint file in the run folder (or a path)")
    split: str = field("test", "split of the manifest to evaluate", choices=["train", "val", "test"])
    data_dir: str = field("", "TFRecord folder (default: the one the run trained on)")
    eval_batch: int = field(64, "images per rank per step")
    bootstrap: int = field(1000, "bootstrap resamples for the 95% intervals")

    def validate(self):
        super().validate()
        if not os.path.isfile(os.path.join(self.run, "config.json")):
            raise UserError(f"--run {self.run!r}: no config.json there; pass the folder chexnet.train wrote")


def roc_png(path, labels, probs, classes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 14 curves: the default 10 colours would repeat
    for c, name in enumerate(classes):
        if 0 < labels[:, c].sum() < len(labels):
            fpr, tpr, _ = roc_curve(labels[:, c], probs[:, c])
            ax.plot(fpr, tpr, lw=1, label=f"{name} ({roc_auc_score(labels[:, c], probs[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC per pathology")
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


@main_guard
def main(argv=None):
    cfg = parse_args(EvalConfig, argv)
    from chexnet import checkpoint
    ckpt = cfg.checkpoint if os.path.isfile(cfg.checkpoint) else os.path.join(cfg.run, cfg.checkpoint)
    _, _, state = checkpoint.read(ckpt)
    if cfg.precision == "checkpoint":
        cfg = dataclasses.replace(cfg, precision=state.get("precision", "float32"))
    ctx = distributed.init(cfg)
    log = setup_logging(ctx.rank, "evaluate")
    from chexnet import auc, data, losses, model as cx_model, validation

    with open(os.path.join(cfg.run, "config.json"), encoding="utf-8") as fh:
        trained = json.load(fh)["config"]
    manifest = data.Manifest.load(cfg.data_dir or trained["data_dir"])
    cx_model.check_checkpoint(state, ckpt, manifest.classes, manifest.stored_size)
    model = cx_model.build_model(state["crop"], len(manifest.classes))
    checkpoint.restore(ckpt, model, with_optimizer=False)
    ds = data.eval_dataset(manifest, cfg.split, ctx.rank, ctx.size, cfg.eval_batch, state["crop"])
    logits, labels, names = validation.gather_predictions(validation.Predictor(model), ds,
                                                          manifest.split(cfg.split)["images"])
    if not ctx.is_chief:
        return
    probs = losses.sigmoid(logits)
    rows = auc.auc_table(labels, logits, manifest.classes, n_boot=cfg.bootstrap, seed=cfg.seed)
    out = os.path.join(cfg.run, f"eval-{cfg.split}")
    os.makedirs(out, exist_ok=True)
    title = f"{cfg.split} split, {len(names)} images, checkpoint {os.path.basename(ckpt)} (epoch {state['epoch']})"
    with open(os.path.join(out, "auc.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# Per-pathology AUC: {title}\n\n{auc.markdown(rows)}\n")
    with open(os.path.join(out, "auc.csv"), "w", encoding="utf-8") as fh:
        fh.write(auc.csv_text(rows))
    with open(os.path.join(out, "predictions.csv"), "w", encoding="utf-8") as fh:
        fh.write("image," + ",".join(f"p_{c}" for c in manifest.classes) + "," +
                 ",".join(f"y_{c}" for c in manifest.classes) + "\n")
        for n, p, y in zip(names, probs, labels):
            fh.write(n + "," + ",".join(f"{v:.9g}" for v in p) + "," + ",".join(str(int(v)) for v in y) + "\n")
    roc_png(os.path.join(out, "roc.png"), labels, probs, manifest.classes)
    MetricsStream(os.path.join(cfg.run, "metrics.jsonl")).write(
        "eval", split=cfg.split, images=len(names), checkpoint=os.path.basename(ckpt), epoch=state["epoch"],
        precision=ctx.precision.policy,
        mean_auc=rows[-1]["auc"], mean_auc_ci=[rows[-1]["ci_low"], rows[-1]["ci_high"]],
        auc={r["pathology"]: r["auc"] for r in rows[:-1]})
    print(f"## Per-pathology AUC: {title}\n\n{auc.markdown(rows)}\n\n(saved in {out}/)", flush=True)
    log.info("evaluation written to %s", out)


if __name__ == "__main__":
    main()
