"""The run folder ``runs/<name>/``: config.json, metrics.jsonl, checkpoints.

    run = RunDir.create(cfg, ctx, prefix="chexnet")
    run.stream.write("eval", mean_auc=0.87)        # metrics.jsonl, rank 0 only
    run.save_atomic("best.h5", model.save_weights) # temp file + rename, rank 0 only

Only rank 0 writes; the folder name is decided on rank 0 and broadcast so that
every rank agrees even when clocks differ by a second.
"""
import os
import platform
import time

from runtime import distributed
from runtime.errors import UserError
from runtime.files import atomic_write, write_json  # noqa: F401  (re-exported)
from runtime.metrics import MetricsStream


def environment():
    """Versions and machine facts recorded beside every run's figures."""
    import horovod
    import tensorflow as tf
    import tf_keras
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "horovod": horovod.__version__,
            "host": platform.node(), "cpu_count": os.cpu_count(),
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def remove_unfinished_writes(folder):
    """Delete the temporary files of writes a killed process never renamed (runtime.files.atomic_write);
    they were never the checkpoint, only space."""
    for name in os.listdir(folder):
        if name.startswith(".tmp-"):
            os.remove(os.path.join(folder, name))


class RunDir:
    def __init__(self, path, ctx):
        self.path = path
        self.ctx = ctx
        self.stream = MetricsStream(os.path.join(path, "metrics.jsonl"), enabled=ctx.is_chief)

    @classmethod
    def create(cls, cfg, ctx, prefix, resume=False):
        """The run folder. A new run refuses an existing folder; ``resume`` requires one.

        An elastic run (``cfg.elastic``, a given --run-name) continues its folder if it exists, and
        decides it without a collective: a worker that joins later runs this too (training.elastic)."""
        elastic = getattr(cfg, "elastic", False)
        name = cfg.run_name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = os.path.join(cfg.runs_dir, name if elastic else distributed.broadcast_object(name))
        exists = os.path.isfile(os.path.join(path, "metrics.jsonl"))
        if not elastic:
            # Rank 0 decides and tells the others: it creates the folder, and a rank
            # that looked after that would take the new run for an old one.
            exists = distributed.broadcast_object(exists)
            if exists and not resume:
                raise UserError(f"{path} already holds a run: pick another --run-name, or pass --resume to "
                                f"continue it")
            if resume and not exists:
                raise UserError(f"{path} holds no run to resume: check --run-name and --runs-dir")
        run = cls(path, ctx)
        if ctx.is_chief:
            os.makedirs(path, exist_ok=True)
            remove_unfinished_writes(path)
            resolved = {"config": cfg.to_dict(), "ranks": ctx.size, "device": ctx.device,
                        "cpu_model": ctx.cpu_model, "intra_op_threads_per_rank": ctx.intra_op_threads,
                        "precision": ctx.precision.to_dict(), "environment": environment()}
            write_json(os.path.join(path, "config.json"), resolved)
            run.stream.write("config", **resolved)
        return run

    def file(self, name):
        return os.path.join(self.path, name)

    def save_atomic(self, name, write_fn):
        """Rank 0 writes ``name`` in the run folder atomically; other ranks do nothing."""
        if self.ctx.is_chief:
            atomic_write(self.file(name), write_fn)
