"""Stopping a run and resuming it: on a signal (every rank at one step), on Ctrl-C, after a killed
rank; the other faults that end a run (a frozen rank, a diverging loss, another model); and the
traces a stopped run leaves (Horovod timeline, profiler).

A U-Net on a small synthetic Kvasir-SEG, 2 real ranks under mpirun,
``--deterministic``: a run interrupted and resumed must end with the model of
one uninterrupted run. The trainable weights and the optimizer state are
compared bit for bit; the BatchNorm moving statistics within float rounding
(a mid-epoch checkpoint averages them over the ranks, which the epoch end
would have done, in another order of additions).
"""
import json
import os
import re
import shutil
import signal
import sys
import time

import numpy as np
import pytest

from helpers import marked_processes, JOB_VAR, run_job, run_ranks, snapshot, started_job
from runtime.metrics import read_events

FAST = ["--precision", "float32"]
EPOCHS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_kvasir):
    """The data, the flags every run shares, and one uninterrupted run ("whole")."""
    data = small_kvasir  # 72 train images: 9 steps of 2 x 4
    runs = tmp_path_factory.mktemp("stop") / "runs"
    common = ["-m", "segmentation.train", "--model", "unet", "--data-dir", str(data / "tfrecords"),
              "--runs-dir", str(runs), "--per-rank-batch", "4", "--deterministic", "--no-tensorboard",
              "--warmup-epochs", "1.5", "--throughput-warmup-steps", "1", *FAST]
    run_ranks(2, [*common, "--run-name", "whole", "--epochs", str(EPOCHS)], timeout=600)
    return runs, common


def same_model(runs, name):
    with np.load(runs / "whole" / "last.npz") as a, np.load(runs / name / "last.npz") as b:
        optimizer = sorted(k for k in a.files if k.startswith("optimizer_"))
        weights = sorted(k for k in a.files if k.startswith("weight_"))
        assert optimizer and all(np.array_equal(a[k], b[k]) for k in optimizer)
        assert weights and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in weights)
        assert json.loads(a["state_json"].tobytes())["epoch"] == json.loads(b["state_json"].tobytes())["epoch"]


def epochs(runs, name):
    return read_events(str(runs / name / "metrics.jsonl"), "epoch")


def _started_run(common, runs, name):
    """The job started; every rank has its stop handlers once config.json exists (written after start-up)."""
    return started_job(["mpirun", "-np", "2", "--oversubscribe", sys.executable, *common, "--run-name", name,
                        "--epochs", str(EPOCHS)])


def _wait_for(path, job, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert job.proc.poll() is None, f"the job ended before {path.name} appeared\n{job.output_tail()}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s\n{job.output_tail()}"
        time.sleep(0.1)


def test_a_signal_to_one_rank_stops_every_rank_at_one_step_and_the_resumed_run_matches(setup):
    """SIGUSR1 to rank 1 only, before the first step ends: both ranks stop after step 1 of epoch 1,
    rank 0 writes that checkpoint, the job exits 75, and the Horovod timeline it leaves (Horovod
    never closes the array) is valid JSON. --resume goes on at step 2 and ends where an
    uninterrupted run ends, with TensorFlow's profile of its steps 2-4 in the TensorBoard folder."""
    runs, common = setup
    traced = [a for a in common if a != "--no-tensorboard"] + ["--timeline", "--profile-steps", "2:4"]
    with _started_run(traced, runs, "signalled") as job:
        _wait_for(runs / "signalled" / "config.json", job)
        rank1 = [p for p in marked_processes(JOB_VAR, job.job_id)
                 if p.environ().get("OMPI_COMM_WORLD_RANK") == "1"]
        assert len(rank1) == 1
        rank1[0].send_signal(signal.SIGUSR1)
        job.proc.wait(300)
        stdout, stderr = job.output()
    assert job.proc.returncode == 75, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr
    stops = read_events(str(runs / "signalled" / "metrics.jsonl"), "stop")
    assert stops == [dict(stops[0], epoch=1, step=1, signal="another rank's stop signal")]
    assert "stopped at epoch 1 step 1/9 on another rank's stop signal" in stdout
    assert epochs(runs, "signalled") == []
    events = json.loads((runs / "signalled" / "horovod_timeline.json").read_text())
    assert any("ALLREDUCE" in json.dumps(e).upper() for e in events), events[:5]

    proc = run_ranks(2, [*traced, "--run-name", "signalled", "--epochs", str(EPOCHS), "--resume"], timeout=600)
    assert list((runs / "signalled" / "tensorboard").rglob("*.xplane.pb"))
    json.loads((runs / "signalled" / "horovod_timeline.json").read_text())  # closed at the end too
    assert "(from step 2 of epoch 1)" in proc.stdout
    same_model(runs, "signalled")
    resumed, whole = epochs(runs, "signalled"), epochs(runs, "whole")
    assert [e["epoch"] for e in resumed] == [1, 2, 3]
    assert resumed[0]["resumed_at_step"] == 1 and resumed[0]["train_images_seen"] == whole[0]["train_images_seen"]
    assert [e["lr"] for e in resumed] == [e["lr"] for e in whole]
    assert resumed[-1]["loss"] == pytest.approx(whole[-1]["loss"], rel=1e-6)


def test_with_accumulated_batches_a_stop_waits_for_the_update_and_the_resumed_run_matches(setup, tmp_path):
    """--grad-accum-steps 2 on one process: a signal during step 1 stops after step 2 (the update's last
    batch: the accumulated sums are in no checkpoint), and --resume ends with the model of an uninterrupted
    run, optimizer state included; Adam counted updates (9), not batches (18)."""
    runs, common = setup
    accum = [*common, "--runs-dir", str(tmp_path), "--grad-accum-steps", "2", "--epochs", "1"]
    run_job([sys.executable, *accum, "--run-name", "whole"], timeout=300)
    with started_job([sys.executable, *accum, "--run-name", "stopped"]) as job:
        _wait_for(tmp_path / "stopped" / "config.json", job)
        job.proc.send_signal(signal.SIGUSR1)
        job.proc.wait(300)
        stdout, stderr = job.output()
    assert job.proc.returncode == 75 and "Traceback" not in stderr, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    assert [(e["epoch"], e["step"]) for e in read_events(str(tmp_path / "stopped" / "metrics.jsonl"), "stop")] \
        == [(1, 2)]
    run_job([sys.executable, *accum, "--run-name", "stopped", "--resume"], timeout=300)
    same_model(tmp_path, "stopped")
    with np.load(tmp_path / "whole" / "last.npz") as whole:
        assert int(whole["optimizer_0000"]) == 9  # iterations, after 18 batches on one rank


def test_ctrl_c_on_one_process_checkpoints_and_says_how_to_go_on(setup):
    runs, common = setup
    with started_job([sys.executable, *common, "--run-name", "ctrl-c", "--epochs", str(EPOCHS)]) as job:
        _wait_for(runs / "ctrl-c" / "config.json", job)
        job.proc.send_signal(signal.SIGINT)
        job.proc.wait(300)
        stdout, stderr = job.output()
    assert job.proc.returncode == 75 and "Traceback" not in stderr, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    assert read_events(str(runs / "ctrl-c" / "metrics.jsonl"), "stop")[0]["signal"] == "SIGINT"
    assert "continue it with --resume --run-name ctrl-c" in stdout
    assert (runs / "ctrl-c" / "last.npz").exists()


def _rank(job, rank):
    """The job's process of ``rank`` (mpirun, or horovodrun over mpirun or Gloo)."""
    found = [p for p in marked_processes(JOB_VAR, job.job_id)
             if str(rank) in (p.environ().get("OMPI_COMM_WORLD_RANK"), p.environ().get("HOROVOD_RANK"))
             and "segmentation.train" in " ".join(p.cmdline())]
    assert len(found) == 1, found
    return found[0]


def _launch(launcher, args):
    if launcher == "mpirun":
        return ["mpirun", "-np", "2", "--oversubscribe", sys.executable, *args]
    return [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "-np", "2", sys.executable, *args]


KILLED_EXIT_S = 30  # the bound docs/RELIABILITY.md states for a lost rank


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_a_killed_rank_ends_the_job_quickly_naming_it_and_resume_loses_at_most_an_epoch(setup, launcher):
    """SIGKILL to rank 1 once the first epoch's checkpoint exists: the job exits non-zero within
    KILLED_EXIT_S, saying rank 1 died. Under mpirun, --resume from that epoch-end checkpoint (the
    1.5-epoch warm-up spans the break) ends where an uninterrupted run ends."""
    runs, common = setup
    name = f"killed-{launcher}"
    with started_job(_launch(launcher, [*common, "--run-name", name, "--epochs", str(EPOCHS)])) as job:
        _wait_for(runs / name / "last.npz", job)
        victim = _rank(job, 1)
        killed_at = time.monotonic()
        victim.kill()
        job.proc.wait(KILLED_EXIT_S + 30)
        elapsed = time.monotonic() - killed_at
        stdout, stderr = job.output()
    assert job.proc.returncode != 0 and elapsed < KILLED_EXIT_S, f"{elapsed:.0f} s\n{stdout[-2000:]}\n{stderr[-3000:]}"
    assert re.search(r"rank 1 .*(signal 9|Killed)", stdout + stderr), f"{stdout[-2000:]}\n{stderr[-3000:]}"
    print(f"{launcher}: the job ended {elapsed:.1f} s after rank 1 was killed")
    if launcher == "horovodrun":
        return  # resuming does not depend on the launcher: the mpirun case checks it
    proc = run_ranks(2, [*common, "--run-name", name, "--epochs", str(EPOCHS), "--resume"], timeout=600)
    assert "(from step" not in proc.stdout  # an epoch-end checkpoint: resumed at an epoch's start
    same_model(runs, name)
    resumed, whole = epochs(runs, name), epochs(runs, "whole")
    assert [e["epoch"] for e in resumed] == [1, 2, 3][-len(resumed):] and resumed[-1]["epoch"] == EPOCHS
    assert [e["lr"] for e in resumed] == [e["lr"] for e in whole][-len(resumed):]
    assert resumed[-1]["loss"] == pytest.approx(whole[-1]["loss"], rel=1e-6)


def test_a_frozen_rank_ends_the_job_through_the_watchdog(setup):
    """SIGSTOP to rank 1 at start-up: nothing dies, so mpirun sees nothing, and rank 0 waits for it in
    a collective (Horovod's stall shutdown cannot act: its negotiation waits too). Rank 0's watchdog
    ends rank 0 after --stall-timeout-s, and mpirun then the job."""
    runs, common = setup
    with started_job(_launch("mpirun", [*common, "--run-name", "frozen", "--epochs", "30",
                                        "--stall-timeout-s", "10"])) as job:
        _wait_for(runs / "frozen" / "config.json", job)
        _rank(job, 1).suspend()
        frozen_at = time.monotonic()
        job.proc.wait(120)
        elapsed = time.monotonic() - frozen_at
        stdout, stderr = job.output()
    # The watchdog counts from rank 0's last beat, which may come before the freeze (rank 0 may
    # already wait in a collective): so the message's idle time, not the time since the freeze, is
    # held to the 10 s.
    assert job.proc.returncode != 0 and elapsed < 10 + KILLED_EXIT_S, f"{elapsed:.0f} s\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"error: no training progress on this rank \(pid \d+\) for 1\d s: it waits for another rank",
                     stderr), stderr[-3000:]


def test_a_diverging_loss_stops_every_rank_naming_the_step_and_saves_nothing_broken(setup):
    """Weights gone non-finite (planted in a copy of the finished run's last.npz) make the loss NaN at the first
    resumed step: every rank stops there, naming it, and nothing is saved over the last checkpoint."""
    runs, common = setup
    shutil.copytree(runs / "whole", runs / "diverged")
    with np.load(runs / "whole" / "last.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    for key in (k for k in arrays if k.startswith("weight_") and arrays[k].ndim == 4):  # every conv kernel
        arrays[key] = np.full_like(arrays[key], np.nan)
    with open(runs / "diverged" / "last.npz", "wb") as fh:
        np.savez(fh, **arrays)
    planted = (runs / "diverged" / "last.npz").read_bytes()
    proc = run_ranks(2, [*common, "--run-name", "diverged", "--epochs", str(EPOCHS + 1), "--resume",
                         "--checkpoint-every-steps", "1"], timeout=300, expect_rc=None)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"error: the training loss is not finite \(on rank \d\) at epoch {EPOCHS + 1} step 1/9, "
                     r"learning rate [0-9.e+-]+; every rank stopped", proc.stderr), proc.stderr[-3000:]
    assert (runs / "diverged" / "last.npz").read_bytes() == planted  # nothing written after the broken step


def test_resuming_with_another_model_is_refused_on_every_rank(setup):
    """Rank 0 reads the checkpoint; the refusal reaches rank 1 too (it would wait in a broadcast)."""
    runs, common = setup
    shutil.copytree(runs / "whole", runs / "other-model")
    proc = run_ranks(2, [*common, "--run-name", "other-model", "--epochs", str(EPOCHS + 1), "--resume",
                         "--model", "resunetpp"], timeout=300, expect_rc=None)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("last.npz was trained with model 'unet', this run has 'resunetpp'") == 2


def test_resuming_a_run_with_no_epochs_left_changes_nothing(setup):
    """--epochs below the epochs trained is refused in one line; as many is a no-op that says so. Neither
    rewrites config.json, metrics.jsonl or a checkpoint."""
    runs, common = setup
    before = snapshot(runs / "whole")
    fewer = run_job([sys.executable, *common, "--run-name", "whole", "--resume", "--epochs", "2"], timeout=300,
                    expect_rc=2)
    assert fewer.stderr.strip().splitlines()[-1] == (
        f"error: {runs / 'whole'} already trained 3 epochs; --epochs 2 asks for fewer: pass --epochs above 3 to "
        f"train on (--resume continues a run, it does not cut it)")
    same = run_job([sys.executable, *common, "--run-name", "whole", "--resume", "--epochs", str(EPOCHS)], timeout=300)
    assert "already trained all 3 epochs: nothing to do" in same.stderr + same.stdout
    after = snapshot(runs / "whole")
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_a_second_trainer_on_a_run_folder_in_use_is_refused_naming_the_holder(setup):
    """A relaunch with --resume while the run still trains: refused in one line with the holder's host and pid,
    before it writes anything; the first run goes on."""
    runs, common = setup
    with started_job([sys.executable, *common, "--run-name", "busy", "--epochs", "50"]) as job:
        _wait_for(runs / "busy" / "config.json", job)
        config = (runs / "busy" / "config.json").read_bytes()
        second = run_job([sys.executable, *common, "--run-name", "busy", "--resume", "--epochs", "60"], timeout=300,
                         expect_rc=2)
        assert re.fullmatch(rf"error: {runs / 'busy'} is in use by segmentation on host {os.uname().nodename}, pid "
                            rf"\d+, since [0-9: -]+: two writers would interleave its records and checkpoints; wait "
                            rf"for that run to end, or pick another --run-name", second.stderr.strip().splitlines()[-1])
        assert job.proc.poll() is None and (runs / "busy" / "config.json").read_bytes() == config


def test_a_timeline_cut_off_mid_event_is_repaired(tmp_path):
    from runtime.trace import finalize_timeline
    path = tmp_path / "t.json"
    path.write_text('[\n{"name": "m", "ph": "M"},\n{"name": "a", "ph": "B", "ts": 1},{"ph": "E", "ts": 2},{"name": "b", "ph')
    assert finalize_timeline(str(path)) == 3
    assert [e["ph"] for e in json.loads(path.read_text())] == ["M", "B", "E"]
    assert finalize_timeline(str(path)) == 3  # a closed file stays as it is
