"""What every evaluate entry point shares: its settings, the checkpoint, the precision, the data, the record.

    main("chexnet", argv, description)       # an evaluate entry point: workload chexnet's (training.workload)
    ev = start(cfg, wl)                      # checkpoint read and checked, Horovod up in its precision
    for one in ev.each_split():              # --split val,test: one job, one model, both splits
        n = one.manifest.images(one.split)   # one.state["epoch"], one.ctx.rank, one.cfg.bootstrap
        out = one.out_dir()                  # <run>/eval-<split>/, rank 0
        one.record(120, mean_auc=0.91)       # an ``eval`` record (120 images) in <run>/metrics.jsonl, rank 0

Evaluation runs in the precision the checkpoint was trained and validated in
(``--precision checkpoint``, the default), so it reproduces the training log's
figures; the data defaults to the folder the run trained on. ``--split val,test``
grades several splits in one job: one queue wait on a cluster, and one start,
model build and restore for all of them.

Before any work (before Horovod starts): the run folder must be writable, and
the checkpoint readable and of the trainer's kind; ``--checkpoint`` may name a
file in the run folder, a path, or another run folder (its best.npz, said in
the log). Each output file is written under a temporary name and renamed, and
replaces the file of the same name an earlier evaluation of that split wrote.
"""
import dataclasses
import json
import os

from runtime.config import PRECISION_HELP, PRECISIONS, ProcessConfig, field, parse_args
from runtime.errors import UserError, main_guard
from runtime.files import check_writable_folder
from runtime.logs import setup_logging
from runtime.metrics import MetricsStream
from training import paths
from training.manifest import Manifest

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class EvalConfig(ProcessConfig):
    """Evaluate a checkpoint of a run on a split of its data."""

    precision: str = field("checkpoint", "checkpoint = the precision the checkpoint was trained and validated "
                           "in (its figures are then reproduced exactly); or " + PRECISION_HELP,
                           choices=["checkpoint", *PRECISIONS])
    run: str = field("", "run folder of the trainer (holds config.json and the checkpoints)")
    checkpoint: str = field("best.npz", "checkpoint file in the run folder, a path, or another run folder (its "
                            "best.npz)")
    split: str = field("test", "split(s) of the manifest to evaluate: train, val or test, or several "
                       "comma-separated (val,test), graded in turn by one model load")
    data_dir: str = field("", "TFRecord folder (default: the one the run trained on)")
    eval_batch: int = field(32, "images per rank per step", at_least=1, at_most=65536)
    bootstrap: int = field(1000, "bootstrap resamples for the 95% intervals", at_least=1, at_most=1_000_000)

    def validate(self):
        super().validate()
        if not os.path.isfile(os.path.join(self.run, "config.json")):
            raise UserError(f"--run {self.run!r}: no config.json there; pass the folder the trainer wrote")
        names = self.splits()
        if not set(names) <= set(SPLITS) or len(set(names)) != len(names):
            raise UserError(f"--split {self.split!r}: give train, val or test, or several of them comma-separated "
                            "and each once, e.g. val,test")
        self.check_writable()

    def check_writable(self):
        """The run folder, each eval-<split>/ already there and metrics.jsonl take writes: refused now,
        not after grading a split."""
        check_writable_folder(self.run, "--run")
        for name in self.splits():
            check_writable_folder(os.path.join(self.run, f"eval-{name}"), "--run")
        stream = os.path.join(self.run, "metrics.jsonl")
        if os.path.exists(stream) and not os.access(stream, os.W_OK):
            raise UserError(f"{stream} is read-only: evaluate appends its eval records there; make it writable")

    def splits(self):
        """The --split names in the order given."""
        return self.split.split(",")


@dataclasses.dataclass
class Evaluation:
    cfg: EvalConfig
    ctx: object
    log: object
    checkpoint_path: str
    state: dict
    manifest: Manifest
    split: str  # the one being graded: each_split() gives one Evaluation per --split name

    def each_split(self):
        for name in self.cfg.splits():
            yield dataclasses.replace(self, split=name)

    def out_dir(self):
        path = os.path.join(self.cfg.run, f"eval-{self.split}")
        os.makedirs(path, exist_ok=True)
        return path

    def title(self, images):
        return (f"{self.split} split, {images} images, checkpoint {os.path.basename(self.checkpoint_path)} "
                f"(epoch {self.state['epoch']})")

    def record(self, images, **figures):
        """The ``eval`` record (rank 0 calls this)."""
        MetricsStream(os.path.join(self.cfg.run, "metrics.jsonl")).write(
            "eval", split=self.split, images=images, checkpoint=os.path.basename(self.checkpoint_path),
            epoch=self.state["epoch"], precision=self.ctx.precision.policy, **figures)


def main(name, argv=None, description=None):
    """Grade a checkpoint of workload ``name`` (training.workload) on each --split: the workload gathers the
    split's predictions (a collective), then rank 0 writes its tables."""
    main_guard(_evaluate)(name, argv, description)


def _evaluate(name, argv, description):
    from training import workload
    wl = workload.get(name)
    ev = start(parse_args(wl.eval_config, argv, description=description), wl)
    from training import checkpoint
    from training.gather import Predictor

    wl.check_checkpoint(ev.state, ev.checkpoint_path, ev.manifest)
    model = wl.model_from_checkpoint(ev.state)
    checkpoint.restore(ev.checkpoint_path, model, with_optimizer=False)
    predictor = Predictor(wl.device_model(model))  # one traced predict step for every split, on uint8 batches
    # Every split's collectives first: no rank then waits in one while rank 0 bootstraps a table.
    gathered = [(one, wl.grade(one, predictor)) for one in ev.each_split()]
    if ev.ctx.is_chief:
        for one, graded in gathered:
            wl.write_grades(one, predictor, graded)
        wl.after_grades(ev, gathered)


def start(cfg, wl):
    """Read and check the checkpoint, start the runtime in its precision, load the manifest; every rank
    calls this. A checkpoint of another workload than ``wl`` is refused before Horovod starts."""
    path, note = locate(cfg, wl.trainer)
    # TensorFlow loads only from here (tf-keras, then Horovod): --help, a bad flag or a missing file need none of it.
    from runtime import distributed
    from training import checkpoint
    _, _, state = checkpoint.read(path)
    wl.check_checkpoint(state, path)
    if cfg.precision == "checkpoint":
        cfg = dataclasses.replace(cfg, precision=state.get("precision", "float32"))
    ctx = distributed.init(cfg)
    log = setup_logging(ctx.rank, "evaluate")
    if note:
        log.info("%s", note)
    with open(os.path.join(cfg.run, "config.json"), encoding="utf-8") as fh:
        trained = json.load(fh)["config"]
    manifest = Manifest.load(cfg.data_dir or trained["data_dir"])
    for name in cfg.splits():  # a split the records lack stops the job before any is graded
        manifest.split(name)
    return Evaluation(cfg, ctx, log, path, state, manifest, cfg.splits()[0])


def locate(cfg, trainer):
    """(checkpoint file, note or None): --checkpoint in the run folder first, then as a path; a folder
    stands for its best.npz."""
    # The run's own file first: a best.npz in the current folder must not be taken for it.
    in_run = os.path.join(cfg.run, cfg.checkpoint)
    if not os.path.exists(in_run) and not os.path.exists(cfg.checkpoint):
        raise UserError(f"--checkpoint {cfg.checkpoint}: neither {in_run} nor {cfg.checkpoint} exists; has the "
                        f"run written it yet? (pass --checkpoint last.npz, or a checkpoint's path)")
    return paths.locate_checkpoint(in_run if os.path.exists(in_run) else cfg.checkpoint, trainer)
