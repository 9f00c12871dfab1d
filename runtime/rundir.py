"""The run folder ``runs/<name>/``: config.json, metrics.jsonl, checkpoints.

    from training import checkpoint
    run = RunDir.create(cfg, ctx, prefix="chexnet")
    run.stream.write("eval", mean_auc=0.87)        # metrics.jsonl, rank 0 only
    run.save_atomic("best.npz", lambda tmp: checkpoint.save(tmp, model, state))   # temp file + rename, rank 0 only

Only rank 0 writes; the folder name is decided on rank 0 and broadcast so that
every rank agrees even when clocks differ by a second.
"""
import fcntl
import json
import logging
import os
import platform
import time

from runtime import distributed
from runtime.errors import UserError
from runtime.files import atomic_write, check_writable_folder, write_json  # noqa: F401  (re-exported)
from runtime.metrics import MetricsStream

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"  # held by the run's writer (runtime.rundir.lock), not the run's data
CHECKPOINTS = ("last.npz", "best.npz")


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


def held_by(path):
    """Who holds the run folder's lock file ``path``, as its holder wrote it."""
    try:
        with open(path, encoding="utf-8") as fh:
            who = json.load(fh)
        return f"{who['trainer']} on host {who['host']}, pid {who['pid']}, since {who['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock(folder, trainer, shared=False):
    """Hold ``folder``'s lock for this process's life (the open descriptor); a holder refuses any other writer.

    An exclusive lock for a trainer; elastic workers share one among themselves. flock() reaches every node of
    an NFS mount; a file system without locks (Lustre mounted without -o flock) gets a warning instead."""
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{folder} is in use by {held_by(path)}: two writers would interleave its records and "
                        f"checkpoints; wait for that run to end, or pick another --run-name") from None
    except OSError as err:
        log.warning("%s: this file system takes no locks (%s): a second trainer on this run folder would not "
                    "be refused", folder, err.strerror)
        return fd
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"trainer": trainer, "host": platform.node(), "pid": os.getpid(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    return fd


def holds_run(folder):
    """Whether ``folder`` holds a run: a checkpoint, or records beyond the start-up's ``config`` (epochs, a
    benchmark, evaluations). A start that failed before any of them left nothing to keep or to resume."""
    if any(os.path.isfile(os.path.join(folder, name)) for name in CHECKPOINTS):
        return True
    metrics = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(metrics):
        return False
    with open(metrics, encoding="utf-8") as fh:
        return any(json.loads(line).get("event") != "config" for line in fh if line.strip())


def new_folder(runs_dir, prefix):
    """A run folder of its own for a run without --run-name: <prefix>-<time>, then -2, -3... (runs started in
    the same second, a sweep, must not collide)."""
    stem = os.path.join(runs_dir, f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(runs_dir, exist_ok=True)
    for n in range(1, 1000):
        path = stem if n == 1 else f"{stem}-{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise UserError(f"{stem}: 999 runs of this name exist already: pass --run-name")


def claim(cfg, prefix, resume, shared=False):
    """Rank 0's part of RunDir.create: the folder, locked, checked against --resume. (path, lock descriptor)."""
    check_writable_folder(cfg.runs_dir, "--runs-dir")
    if not cfg.run_name:
        path = new_folder(cfg.runs_dir, prefix)
        return path, lock(path, prefix, shared)
    path = os.path.join(cfg.runs_dir, cfg.run_name)
    if resume and not os.path.isdir(path):
        raise UserError(f"{path} holds no run to resume: check --run-name and --runs-dir")
    os.makedirs(path, exist_ok=True)
    fd = lock(path, prefix, shared)  # before looking: a run starting beside this one must be seen
    if not shared:  # an elastic worker continues the folder whatever it holds (a joining worker's case)
        try:
            check_resume(path, resume)
        except UserError:
            os.close(fd)
            raise
    return path, fd


def check_resume(path, resume):
    """A new run needs a folder without a run, --resume one with a run; a failed start's records are dropped."""
    held = holds_run(path)
    others = sorted(set(os.listdir(path)) - {LOCK_FILE})
    if others and not os.path.isfile(os.path.join(path, "metrics.jsonl")):
        raise UserError(f"{path} holds files but no run ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}):"
                        f" a trainer writes only into its own run folders; pick another --run-name or --runs-dir")
    if held and not resume:
        raise UserError(f"{path} already holds a run: pick another --run-name, or pass --resume to continue it")
    if resume and not held:
        raise UserError(f"{path} holds no run to resume (its start stopped before the first checkpoint): run the "
                        f"same command without --resume")
    if not held and os.path.isfile(os.path.join(path, "metrics.jsonl")):
        log.warning("%s: an earlier start of this run stopped before its first checkpoint; starting it again",
                    path)
        os.remove(os.path.join(path, "metrics.jsonl"))  # only the earlier start's config records


class RunDir:
    def __init__(self, path, ctx):
        self.path = path
        self.ctx = ctx
        self.stream = MetricsStream(os.path.join(path, "metrics.jsonl"), enabled=ctx.is_chief)

    @classmethod
    def create(cls, cfg, ctx, prefix, resume=False):
        """The run folder, locked by rank 0 for the run's life. A new run refuses a folder that holds a run
        (one whose start failed before its first checkpoint is started again); ``resume`` requires one.

        An elastic run (``cfg.elastic``, a given --run-name) continues its folder if it exists, and
        decides it without a collective: a worker that joins later runs this too (training.elastic)."""
        elastic = getattr(cfg, "elastic", False)
        if elastic:  # every worker holds a shared lock: none may be taken for a lone writer's
            path, fd = claim(cfg, prefix, resume=False, shared=True)
        else:
            # Rank 0 decides, creates and locks the folder, and tells the others: a rank that looked
            # after that would take the new run for an old one.
            path, fd = distributed.on_chief(lambda: claim(cfg, prefix, resume))
        run = cls(path, ctx)
        run.lock_fd = fd if (elastic or ctx.is_chief) else None
        if ctx.is_chief:
            remove_unfinished_writes(path)
            if not resume or elastic:
                run.write_config(cfg, ctx)
        return run

    def write_config(self, cfg, ctx):
        """config.json and the stream's ``config`` record (rank 0): what this run was started with."""
        if not ctx.is_chief:
            return
        resolved = {"config": cfg.to_dict(), "ranks": ctx.size, "device": ctx.device,
                    "cpu_model": ctx.cpu_model, "intra_op_threads_per_rank": ctx.intra_op_threads,
                    "precision": ctx.precision.to_dict(), "environment": environment()}
        write_json(os.path.join(self.path, "config.json"), resolved)
        self.stream.write("config", **resolved)

    def file(self, name):
        return os.path.join(self.path, name)

    def save_atomic(self, name, write_fn):
        """Rank 0 writes ``name`` in the run folder atomically; other ranks do nothing."""
        if self.ctx.is_chief:
            atomic_write(self.file(name), write_fn)
