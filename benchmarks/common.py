"""What the benchmark scripts share: running the project's commands, MPI launch, the machine's facts.

(the older tfrecord_write.py, lr_scaling.py and segmentation_input.py still carry copies of ``sh``
and ``machine`` to move here.)

    from benchmarks.common import ROOT, sh, ranks_command, machine, start_records
    stream = start_records("benchmarks/results/x", repeats=3)   # fresh x/metrics.jsonl, its study record
    sh(["bash", "write_tfrecords.sh", ...], log="/tmp/w.log")     # exits naming the log on failure
    sh(ranks_command(2, ["-m", "segmentation.train", ...]), log, env=mpi_env())
    machine()                                                     # CPU model, cores, versions
"""
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpi_env():
    # Open MPI refuses to start as root without these two; CI and these machines run as root.
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=ROOT)


def ranks_command(ranks, python_args):
    """``python ARGS`` on one process, or under ``mpirun -np N`` (ranks may outnumber cores)."""
    if ranks == 1:
        return [sys.executable, *python_args]
    return [shutil.which("mpirun") or "mpirun", "-np", str(ranks), "--oversubscribe", sys.executable, *python_args]


def benchmark_flags(workload, size, per_rank_batch, steps, warmup_steps, runs_dir, name, seg_model="resunetpp",
                    extra=()):
    """A trainer's benchmark mode on random tensors: ``-m <workload>.train --benchmark ...``.

    ``size``: CheXNet's crop (DenseNet121 with random weights: the same speed, no download) or the
    segmentation input side (``seg_model``)."""
    if workload == "chexnet":
        model = ["--weights", "none", "--crop", str(size)]
    else:
        model = ["--model", seg_model, "--synthetic-size", str(size)]
    return ["-m", f"{workload}.train", "--benchmark", "--synthetic-input", *model,
            "--per-rank-batch", str(per_rank_batch), "--benchmark-steps", str(steps),
            "--throughput-warmup-steps", str(warmup_steps), "--progress", "none", "--no-tensorboard",
            "--runs-dir", runs_dir, "--run-name", name, *extra]


def sh(cmd, log=None, env=None):
    """Run ``cmd`` in ROOT; its output goes to ``log`` (or nowhere), and a failure names the log.

    Interrupted (Ctrl-C, or an exception raised by a signal handler), it ends ``cmd`` before going on."""
    with open(log or os.devnull, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env or mpi_env())
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()  # mpirun passes SIGTERM on to its ranks, and kills them if they linger
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if rc:
        sys.exit(f"{' '.join(cmd)} exited {rc}" + (f"; see {log}" if log else ""))


def machine():
    import horovod
    import tensorflow as tf
    import tf_keras

    from runtime.precision import cpu_facts
    return {"cpu": cpu_facts().model, "cores": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__, "horovod": horovod.__version__}


def start_records(out, **facts):
    """A fresh ``<out>/metrics.jsonl`` opened by the study's record: its command, date, machine and ``facts``.

    A study rewrites its own records file, so the tables built from it describe one run."""
    from runtime.metrics import MetricsStream
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "metrics.jsonl")
    open(path, "w").close()
    stream = MetricsStream(path)
    stream.write("study", command=" ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
                 date=time.strftime("%Y-%m-%d"), machine=machine(), **facts)
    return stream
