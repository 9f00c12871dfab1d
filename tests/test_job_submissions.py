"""job_submissions/: the Slurm jobs against a real one-node Slurm, and the local launcher.

The module's Slurm (tests/slurm_cluster.py) is installed with apt when missing
and the tests run as root; elsewhere the Slurm tests skip, saying why. The
jobs run the project's own entry points on a small synthetic Kvasir-SEG.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT, job_env, run_job
from runtime.metrics import read_events
from slurm_cluster import SlurmCluster, unavailable

JOBS = os.path.join(ROOT, "job_submissions", "slurm")
FAST = ["--precision", "float32"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = unavailable()
    if why:
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Where the jobs put data and runs: env for sbatch (exported to the job)."""
    folder = tmp_path_factory.mktemp("jobs")
    env = job_env(MEDIMG_ROOT=ROOT, MEDIMG_VENV=os.path.dirname(os.path.dirname(sys.executable)),
                  DATA_DIR=str(folder / "data"), RUNS_DIR=str(folder / "runs"))
    return folder, env


def submit(slurm, script, args, env, tmp_path, ntasks=2, extra=()):
    out = tmp_path / "job-%j.out"
    job = slurm.sbatch([f"--ntasks={ntasks}", "--cpus-per-task=1", f"--output={out}", *extra,
                        os.path.join(JOBS, script), *args], env=env, cwd=ROOT)
    return job, str(out).replace("%j", job)


def finished(slurm, job, log, timeout=900):
    return slurm.completed(job, log, timeout)


@pytest.fixture(scope="module")
def data_job(slurm, work, tmp_path_factory):
    folder, env = work
    job, log = submit(slurm, "data.sbatch", ["kvasir-seg", "--synthetic", "80", "--image-size", "96", "--",
                                              "--image-size", "32", "--images-per-shard", "20"],
                      env, tmp_path_factory.mktemp("data-log"))
    return job, finished(slurm, job, log), folder / "data" / "kvasir-seg" / "tfrecords"


TRAIN_EPOCHS = 4


@pytest.fixture(scope="module")
def train_job(slurm, work, data_job, tmp_path_factory):
    """A 2-task training job stopped as its time limit stops it (train.sbatch has --signal=B:USR1@300:
    ``scancel --signal=USR1 --batch`` sends that SIGUSR1 to the batch shell now) once epoch 1 is recorded;
    the ranks checkpoint, the job requeues itself and the requeued job resumes to the last epoch."""
    folder, env = work
    job, log = submit(slurm, "train.sbatch", ["segmentation", "--data-dir", str(data_job[2]), "--model", "unet",
                                               "--epochs", str(TRAIN_EPOCHS), "--per-rank-batch", "4",
                                               "--no-tensorboard", "--progress", "none", *FAST],
                      dict(env, MEDIMG_STOP_GRACE_S="2"), tmp_path_factory.mktemp("train-log"))
    run = folder / "runs" / f"medimg-train-{job}"
    slurm.wait_for_epoch(job, run / "metrics.jsonl", timeout=300)
    slurm.scancel(job, "--signal=USR1", "--batch")
    return job, finished(slurm, job, log, timeout=600), run


def test_data_stage_job_writes_the_records_on_every_task(data_job):
    _, log, tf_dir = data_job
    manifest = json.loads((tf_dir / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 80 and manifest["counts"]["rejected"] == 0
    assert "2 rank(s)" in log, log[-2000:]
    writers = {json.loads(p.read_text())["rank"] for p in (tf_dir / ".shards").glob("*.json")}
    assert writers == {0, 1}  # the second task wrote its own shards


def test_training_job_runs_two_ranks_and_names_its_run_by_the_job(train_job):
    _, log, run = train_job
    config = json.loads((run / "config.json").read_text())
    assert config["ranks"] == 2 and config["config"]["threads_per_rank"] == 1  # from --cpus-per-task
    epochs = read_events(str(run / "metrics.jsonl"), "epoch")
    # A resumed epoch's last few steps may be fewer than the throughput warm-up: it has no figure.
    timed = [e for e in epochs if "throughput" in e]
    assert len(timed) >= TRAIN_EPOCHS - 1 and all(e["throughput"]["ranks"] == 2 for e in timed)
    assert (run / "last.npz").exists() and f"tables in {run}/training.md" in log


def test_a_job_signalled_as_at_its_time_limit_checkpoints_requeues_itself_and_finishes_every_epoch(slurm, train_job):
    job, text, run = train_job
    assert slurm.state(job)[1]["Restarts"] == "1", text[-3000:]
    assert "stopped before the time limit (status 75)" in text and "holds a checkpoint: resuming it" in text
    stops = read_events(str(run / "metrics.jsonl"), "stop")
    assert [s["signal"] for s in stops] in (["SIGUSR1"], ["another rank's stop signal"])
    assert [e["epoch"] for e in read_events(str(run / "metrics.jsonl"), "epoch")] == list(range(1, TRAIN_EPOCHS + 1))


def test_evaluate_job_counts_every_image_once(slurm, work, data_job, train_job, tmp_path):
    _, env = work
    _, _, run = train_job
    job, log = submit(slurm, "evaluate.sbatch", ["segmentation", str(run), "--split", "val", "--bootstrap", "50"],
                      env, tmp_path)
    finished(slurm, job, log)
    record = [r for r in read_events(str(run / "metrics.jsonl"), "eval") if r["split"] == "val"][-1]
    manifest = json.loads((data_job[2] / "manifest.json").read_text())
    assert record["images"] == manifest["splits"]["val"]["images"] and record["ranks"] == 2


def test_benchmark_job_at_the_allocations_size(slurm, work, tmp_path):
    folder, env = work
    job, log = submit(slurm, "benchmark.sbatch", ["segmentation", "--synthetic-input", "--synthetic-size", "32",
                                                   "--model", "unet", "--per-rank-batch", "2", "--benchmark-steps",
                                                   "3", "--throughput-warmup-steps", "1", *FAST], env, tmp_path)
    finished(slurm, job, log)
    rec = read_events(str(folder / "runs" / f"medimg-benchmark-{job}" / "metrics.jsonl"), "benchmark")[0]
    assert rec["ranks"] == 2 and rec["timed_steps"] == 3 and rec["input"] == "synthetic"


def test_a_wrong_trainer_fails_the_job_with_one_line(slurm, work, tmp_path):
    _, env = work
    job, log = submit(slurm, "train.sbatch", ["densenet"], env, tmp_path, ntasks=1)
    assert slurm.wait(job, 120) == "FAILED"
    assert "first argument must be the trainer, chexnet or segmentation; got 'densenet'" in open(log).read()


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(JOBS) if f.endswith(".sbatch")))
def test_job_script_has_its_sbatch_header_first_and_a_usage_line(script):
    """Slurm reads #SBATCH lines only before the first command: they must all come first."""
    with open(os.path.join(JOBS, script)) as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    sbatch = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert sbatch and max(sbatch) < first_command and lines[first_command] == "set -euo pipefail"
    assert any(line.startswith("# Usage: sbatch") for line in lines[:first_command])


OWN_SOURCE_LINE = ["train.sbatch", "evaluate.sbatch", "benchmark.sbatch", "data.sbatch"]  # find common.sh beside them


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(JOBS) if f.endswith(".sbatch")))
def test_a_job_script_run_with_bash_says_to_submit_it_with_sbatch(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MEDIMG_"))}
    places = [ROOT] + ([str(tmp_path)] if script in OWN_SOURCE_LINE else [])
    for cwd in places:
        proc = subprocess.run(["bash", os.path.join(JOBS, script), "segmentation"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and proc.stdout == "", (cwd, proc.stdout, proc.stderr)
        assert proc.stderr == (f"{script}: error: not inside a Slurm job (no SLURM_JOB_ID): submit with sbatch, "
                               f"or use job_submissions/local/launch.sh\n"), cwd


LAUNCHERS = sorted(os.path.relpath(os.path.join(top, f), ROOT)
                   for top, _, files in os.walk(os.path.join(ROOT, "job_submissions"))
                   for f in files if f.endswith((".sh", ".sbatch"))) + ["download_dataset.sh", "extract_images.sh",
                                                                        "write_tfrecords.sh", "scripts/demo.sh"]
SUBSHELL = re.compile(r"\$\([^()]*\)")  # innermost $(...): a cd there moves only the subshell
BARE_CD = re.compile(r"(^|[;&|({]|\bthen|\bdo|\belse)\s*(cd|pushd)\s")


@pytest.mark.parametrize("script", LAUNCHERS)
def test_no_launcher_changes_folder(script):
    """Relative paths stay the user's: a launcher finds the project by its path, never by a cd."""
    with open(os.path.join(ROOT, script)) as fh:
        for number, line in enumerate(fh, 1):
            code = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
            while SUBSHELL.search(code):
                code = SUBSHELL.sub("", code)
            assert not BARE_CD.search(code), f"{script}:{number}: {line.strip()}"


def test_local_launcher_runs_an_entry_point_on_two_ranks_taking_paths_from_the_users_folder(tmp_path):
    (tmp_path / "fast.json").write_text('{"per_rank_batch": 2, "precision": "float32"}')
    (tmp_path / "training").mkdir()  # a user's package named like the project's must not shadow it
    (tmp_path / "training" / "__init__.py").write_text("raise ImportError('the user folder shadowed training/')\n")
    in_tmp = ["bash", "-c", 'cd "$1" && shift && exec bash "$@"', "-", str(tmp_path)]
    proc = run_job([*in_tmp, os.path.join(ROOT, "job_submissions", "local", "launch.sh"), "--np", "2",
                    "segmentation.train", "--benchmark", "--synthetic-input", "--synthetic-size", "32", "--model",
                    "unet", "--benchmark-steps", "2", "--throughput-warmup-steps", "1", "--preset", "fast.json",
                    "--runs-dir", "runs", "--run-name", "b"], timeout=300)
    record = read_events(str(tmp_path / "runs" / "b" / "metrics.jsonl"), "benchmark")[0]
    assert record["ranks"] == 2 and record["per_rank_batch"] == 2 and record["precision"] == "float32", record
    assert "benchmark: " in proc.stdout


def test_local_launcher_refuses_an_unknown_entry_point():
    proc = run_job(["bash", "job_submissions/local/launch.sh", "chexnet.trian"], expect_rc=2, timeout=60)
    assert "no entry point chexnet.trian" in proc.stderr
