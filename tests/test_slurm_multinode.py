"""Slurm across nodes: the job scripts on a real Slurm whose nodes are the namespace cluster's hosts.

One cluster for the module (tests/netns_cluster.py, two nodes with a data0 and an mgmt0 interface) and
one Slurm on it (tests/slurm_cluster.py, multi-node mode: slurmctld in node0, a slurmd in each node).
Every job runs with one task a node and MEDIMG_IFACE=data0, on a small synthetic Kvasir-SEG.
"""
import json
import os
import sys

import pytest

from helpers import ROOT, job_env, run_job, snapshot
from netns_cluster import NetnsCluster, unavailable as netns_unavailable
from runtime.metrics import read_events
from slurm_cluster import SlurmCluster, unavailable as slurm_unavailable

JOBS = os.path.join(ROOT, "job_submissions", "slurm")
PAIRS, STORED, PER_SHARD = 48, 32, 8
EPOCHS = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = netns_unavailable() or slurm_unavailable()
    if why:
        pytest.skip(why)
    with NetnsCluster(tmp_path_factory.mktemp("slurm-netns"), nodes=2) as nodes, \
            SlurmCluster(tmp_path_factory.mktemp("slurm-nodes"), netns=nodes) as slurm:
        yield nodes, slurm


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Where the jobs put data, runs and logs; env for sbatch (exported to the job)."""
    folder = tmp_path_factory.mktemp("jobs-across")
    env = job_env(MEDIMG_ROOT=ROOT, MEDIMG_VENV=os.path.dirname(os.path.dirname(sys.executable)),
                  DATA_DIR=str(folder / "data"), RUNS_DIR=str(folder / "runs"), MEDIMG_IFACE="data0")
    return folder, env


def submit(slurm, script, args, env, folder):
    """Two nodes, one task and one CPU each: (job id, its log)."""
    out = folder / "job-%j.out"
    job = slurm.sbatch(["-N", "2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--output={out}",
                        os.path.join(JOBS, script), *args], env=env, cwd=ROOT)
    return job, str(out).replace("%j", job)


def tx_bytes(nodes, node):
    """{interface: bytes sent} of ``node``'s data0 and mgmt0."""
    read = nodes.exec(node, ["cat", "/sys/class/net/data0/statistics/tx_bytes",
                             "/sys/class/net/mgmt0/statistics/tx_bytes"]).stdout.split()
    return dict(zip(("data0", "mgmt0"), map(int, read)))


@pytest.fixture(scope="module")
def data_job(cluster, work):
    _, slurm = cluster
    folder, env = work
    job, log = submit(slurm, "data.sbatch", ["kvasir-seg", "--synthetic", str(PAIRS), "--image-size", "64", "--",
                                             "--image-size", str(STORED), "--images-per-shard", str(PER_SHARD)],
                      env, folder)
    return slurm.completed(job, log, timeout=240), folder / "data" / "kvasir-seg"


def test_the_data_job_on_two_nodes_writes_what_one_process_writes(cluster, data_job, tmp_path):
    nodes, _ = cluster
    log, data = data_job
    sides = [json.loads(p.read_text()) for p in (data / "tfrecords" / ".shards").glob("*.json")]
    assert {(s["rank"], s["host"]) for s in sides} == {(0, nodes.hostname("node0")), (1, nodes.hostname("node1"))}
    assert "2 rank(s)" in log, log[-2000:]
    run_job([sys.executable, "-m", "dataprep.kvasir_seg.tfrecords", "--data-dir", str(data), "--image-size",
             str(STORED), "--images-per-shard", str(PER_SHARD), "--processes", "1", "--out-dir", str(tmp_path)],
            timeout=120)
    shards = {k: v for k, v in snapshot(data / "tfrecords").items() if k.endswith(".tfrecord")}
    assert shards and shards == {k: v for k, v in snapshot(tmp_path).items() if k.endswith(".tfrecord")}
    across, one = (json.loads((d / "manifest.json").read_text()) for d in (data / "tfrecords", tmp_path))
    assert across["splits"] == one["splits"] and across["rejected"] == one["rejected"] == []


@pytest.fixture(scope="module")
def train_job(cluster, work, data_job):
    """A training job stopped by the time limit's signal (train.sbatch has --signal=B:USR1@300: scancel
    sends that SIGUSR1 to the batch shell now) once epoch 1 is recorded; it checkpoints, requeues itself
    and the requeued job resumes to the last epoch. Bytes sent by node1's interfaces are counted around it."""
    nodes, slurm = cluster
    folder, env = work
    before = tx_bytes(nodes, "node1")
    job, log = submit(slurm, "train.sbatch", ["segmentation", "--data-dir", str(data_job[1] / "tfrecords"),
                                              "--model", "unet", "--epochs", str(EPOCHS), "--per-rank-batch", "4",
                                              "--no-tensorboard", "--progress", "none", "--precision", "float32"],
                      dict(env, MEDIMG_STOP_GRACE_S="2"), folder)
    run = folder / "runs" / f"medimg-train-{job}"
    slurm.wait_for_epoch(job, run / "metrics.jsonl", timeout=180)
    slurm.scancel(job, "--signal=USR1", "--batch")
    text = slurm.completed(job, log, timeout=240)
    sent = {k: v - before[k] for k, v in tx_bytes(nodes, "node1").items()}
    return job, text, run, sent


def test_the_training_job_on_two_nodes_requeues_at_its_time_limit_and_resumes_across_them(cluster, train_job):
    _, slurm = cluster
    job, text, run, _ = train_job
    assert slurm.state(job)[1]["Restarts"] == "1", text[-3000:]
    assert text.count("on 2 rank(s) of 2 host(s)") == 2, text[-3000:]  # both attempts: one rank on each node
    assert "stopped before the time limit (status 75)" in text and "holds a checkpoint: resuming it" in text
    metrics = str(run / "metrics.jsonl")
    assert [s["signal"] for s in read_events(metrics, "stop")] in (["SIGUSR1"], ["another rank's stop signal"])
    assert [e["epoch"] for e in read_events(metrics, "epoch")] == list(range(1, EPOCHS + 1))
    assert (run / "last.npz").exists() and "tables in" in text


def test_medimg_iface_keeps_the_ranks_traffic_on_the_data_network(train_job):
    """Open MPI's TCP would stripe across data0 and mgmt0, both reachable; with MEDIMG_IFACE=data0 the
    gradients node1 sends go over data0 alone (mgmt0 sends only the kernel's own few packets)."""
    *_, sent = train_job
    assert sent["data0"] > 1_000_000 and sent["mgmt0"] < 20_000, sent


def test_a_node_without_medimg_iface_fails_the_job_in_one_line_naming_it(cluster, work):
    nodes, slurm = cluster
    folder, env = work
    nodes.exec("node0", ["ip", "link", "add", "only0", "type", "veth", "peer", "name", "only0p"])
    try:
        job, log = submit(slurm, "train.sbatch", ["segmentation"], dict(env, MEDIMG_IFACE="only0"), folder)
        state = slurm.wait(job, 60)
    finally:
        nodes.exec("node0", ["ip", "link", "del", "only0"])
    text = open(log).read()
    assert state == "FAILED" and text.strip().splitlines()[-1] == (
        f"train.sbatch: error: MEDIMG_IFACE=only0: host {nodes.hostname('node1')} has no interface only0 "
        f"('ip -br addr' there lists its interfaces)"), text[-2000:]
