"""What the benchmark studies share: running the project's commands, MPI launch, the machine's facts,
synthetic data through the project's own stages, and a study's records file and the outputs built from it.

    from benchmarks.common import ROOT, sh, ranks_command, start_records, synthetic_data, study_records
    data = synthetic_data("kvasir-seg", "/tmp/w/data", 200, stored=64)   # the three stages, once
    stream = start_records("benchmarks/results/x", repeats=3)   # fresh x/metrics.jsonl, its study record
    sh(["bash", "write_tfrecords.sh", ...], log="/tmp/w.log")     # exits naming the log on failure
    sh(ranks_command(2, ["-m", "segmentation.train", ...]), log, env=mpi_env())
    path = study_records("benchmarks/results/x")                  # its metrics.jsonl, or a one-line exit
    write_outputs("benchmarks/results/x", {".md": text, ".csv": csv})
"""
import json
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


def synthetic_data(dataset, out, count, source=None, stored=None, write=()):
    """``out/<dataset>``: a synthetic ``dataset`` ("chestxray14", "kvasir-seg") of ``count`` images at ``source``
    px (the stage's default sizes if None), extracted, and unless ``stored`` is None written to its tfrecords/ at
    ``stored`` px with ``write``'s extra flags. Made by the project's own stages, each logged beside ``out``;
    records already there are reused."""
    folder = os.path.join(out, dataset)
    if stored and os.path.isfile(os.path.join(folder, "tfrecords", "manifest.json")):
        return folder
    stages = [("download_dataset.sh", ["--synthetic", str(count), *(["--image-size", str(source)] if source else [])]),
              ("extract_images.sh", [])]
    if stored:
        stages.append(("write_tfrecords.sh", ["--image-size", str(stored), *write]))
    os.makedirs(out, exist_ok=True)
    for stage, extra in stages:
        sh(["bash", stage, "--dataset", dataset, "--out", out, *extra], f"{out}.{stage}.log")
    return folder


def run_note(run):
    """What ``<run>.study.json`` says (the study that made run folder ``run``, and for what), or None."""
    try:
        with open(run + ".study.json", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def refuse_unless_noted(path, note):
    """A one-line exit where ``path`` exists without ``note`` beside it: a folder the study did not make."""
    if os.path.lexists(path) and run_note(path) != note:
        sys.exit(f"{path} exists but this study did not make it (no {path}.study.json): it is left as it is; "
                 f"pass another --workdir, or move it away")


def write_run_note(run, note):
    """``<run>.study.json``: ``note`` beside run folder ``run``, written before the study starts the run."""
    from runtime.files import write_json
    write_json(run + ".study.json", note)


def output_flags(parser, study, built=".md"):
    """``--out`` (default benchmarks/results/<study>) and ``--tables-only``, the flags every study shares."""
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", study),
                        help=f"<out>/metrics.jsonl and <out>{built} built from it (default benchmarks/results/{study})")
    parser.add_argument("--tables-only", action="store_true", help="rebuild the outputs from <out>/metrics.jsonl")


def study_records(out):
    """``<out>/metrics.jsonl``, or a one-line exit saying how to make it."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: run the study first (without --tables-only), or pass its --out")
    return path


def write_outputs(out, texts):
    """``<out><suffix>`` for each of ``texts`` ({".md": ..., ".csv": ...}); prints the Markdown."""
    for suffix, text in texts.items():
        with open(out + suffix, "w", encoding="utf-8") as fh:
            fh.write(text)
    if ".md" in texts:
        print(texts[".md"], flush=True)
