"""Elastic training with real workers: ``horovodrun --min-np 2 --max-np 3`` with a host-discovery
script (Gloo), started by the local launcher, a worker killed, and the same worker's host taken in
again after its cool-down.

Horovod starts a worker without ssh when its host name resolves to an address of this machine, and
it blacklists a failed worker's host by name. So the three workers each get a name of their own that
is this machine: localhost, 127.0.0.1 and the machine's own address.
"""
import json
import math
import os
import signal
import socket
import time

import numpy as np
import psutil
import pytest

from helpers import JOB_VAR, marked_processes, started_job, tail
from runtime.metrics import read_events

BATCH, EPOCHS, EVERY = 5, 4, 2


def local_host_names():
    """Three names of this machine: Horovod treats each as a host of one slot."""
    own = sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family == socket.AF_INET and not a.address.startswith("127.")})
    if not own:
        pytest.skip("this machine has no IPv4 address besides loopback: a third local host name is needed")
    return ["localhost", "127.0.0.1", own[0]]


def _worker_of_rank(job, rank):
    for p in marked_processes(JOB_VAR, job.job_id):
        try:
            if p.environ().get("HOROVOD_RANK") == str(rank) and "segmentation.train" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            continue
    return None


def _wait_for_first_epoch(metrics, job, timeout=300):
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and read_events(str(metrics), "epoch")):
        assert job.proc.poll() is None, f"the job ended before its first epoch\n{job.output_tail()}"
        assert time.monotonic() < deadline, f"no epoch record after {timeout} s\n{job.output_tail()}"
        time.sleep(0.2)


def test_a_lost_worker_leaves_the_others_training_and_its_host_is_taken_in_again(tmp_path, small_kvasir):
    """Rank 0 (the one writing the records and checkpoints) is killed during epoch 2 of 3 workers:
    the 2 survivors go on from the last commit (a checkpoint every 2 steps), with the steps per epoch
    and the learning rate of 2 ranks; the new rank 0 writes the records. After the 3-5 s cool-down
    the killed worker's host is listed again, a new worker joins at the next commit, and the run
    ends its 4 epochs on 3 ranks, each epoch recorded once."""
    data = small_kvasir
    train_images = json.loads((data / "tfrecords" / "manifest.json").read_text())["splits"]["train"]["images"]
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{name}:1\n" for name in local_host_names()))
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(0o755)
    runs = tmp_path / "runs"
    cmd = ["bash", "job_submissions/local/launch.sh", "--np", "3", "--elastic", "2:3", "--discovery", str(discover),
           "--cooldown", "3:5", "segmentation.train", "--model", "unet",
           "--data-dir", str(data / "tfrecords"), "--runs-dir", str(runs), "--run-name", "el",
           "--epochs", str(EPOCHS), "--per-rank-batch", str(BATCH), "--checkpoint-every-steps", str(EVERY),
           "--warmup-epochs", "0", "--plateau-patience", "100", "--precision", "float32", "--no-tensorboard",
           "--throughput-warmup-steps", "1"]
    metrics = runs / "el" / "metrics.jsonl"
    # A peer that vanishes without closing its sockets is noticed after Gloo's timeout (30 s by default).
    with started_job(cmd, HOROVOD_GLOO_TIMEOUT_SECONDS="10") as job:
        _wait_for_first_epoch(metrics, job)
        rank0 = _worker_of_rank(job, 0)
        assert rank0 is not None, f"no worker of rank 0 found\n{job.output_tail()}"
        os.kill(rank0.pid, signal.SIGKILL)
        job.proc.wait(600)
        out, err = job.output()
    assert job.proc.returncode == 0, tail(out, err)

    starts = read_events(str(metrics), "elastic")
    assert [s["ranks"] for s in starts] == [3, 2, 3], tail(out, err)
    lost, back = starts[1], starts[2]
    # The survivors start from a commit: an epoch end or every EVERY steps, after epoch 1.
    assert lost["saved_ranks"] == 3 and (lost["epoch"], lost["step"]) >= (2, 0) and lost["step"] % EVERY == 0
    assert back["saved_ranks"] == 2 and (back["epoch"], back["step"]) >= (lost["epoch"], lost["step"])
    for start in starts:  # the sharding of the workers present: every rank the same whole batches
        assert start["steps_per_epoch"] == (train_images // start["ranks"]) // BATCH
    epochs = read_events(str(metrics), "epoch")
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    for e in epochs:  # the rate of the ranks that ran the epoch's last part (sqrt scaling, no warm-up)
        assert e["lr"] == pytest.approx(1e-3 * math.sqrt(e["ranks"]), rel=1e-5)
        if "throughput" in e:  # absent where a resumed part of an epoch was shorter than the warm-up steps
            assert len(e["throughput"]["images_per_s_per_rank"]) == e["ranks"]
    assert epochs[-1]["ranks"] == 3
    with np.load(runs / "el" / "last.npz") as ckpt:
        assert json.loads(ckpt["state_json"].tobytes())["epoch"] == EPOCHS


@pytest.mark.parametrize("saved_ranks, ranks, rule, warmup, saved_lr, expected", [
    (3, 3, "sqrt", 0, 7e-4, 7e-4),                                  # the same ranks: the saved rate
    (3, 2, "sqrt", 0, 1e-3 * math.sqrt(3), 1e-3 * math.sqrt(2)),    # the rule at the new size
    (2, 4, "linear", 0, 2e-4, 4e-4),                                # a plateau cut (0.1) kept
    (2, 4, "linear", 2, 1.5e-3, 2.5e-3),    # mid warm-up, half way: 1e-3 -> 2e-3 at 1.5e-3 becomes 1e-3 -> 4e-3 at 2.5e-3
])
def test_a_run_resumed_on_other_ranks_goes_on_with_the_rate_of_its_new_size(saved_ranks, ranks, rule, warmup,
                                                                             saved_lr, expected):
    from training.config import TrainConfig
    from training.engine import resumed_lr
    cfg = TrainConfig(base_lr=1e-3, lr_scaling=rule, warmup_epochs=warmup)
    state = {"epoch": 1, "step": 0, "lr": saved_lr, "ranks": saved_ranks, "steps_per_epoch": 10}
    assert resumed_lr(cfg, state, ranks) == pytest.approx(expected)
