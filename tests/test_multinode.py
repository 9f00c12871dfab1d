"""The namespace cluster itself: separate hostnames, two networks, name resolution, ssh between nodes."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, make_kvasir, run_job, started_job
from runtime.metrics import read_events

from netns_cluster import NetnsCluster, unavailable


@pytest.fixture(scope="session")
def netns_cluster(tmp_path_factory):
    why = unavailable()
    if why:
        pytest.skip(why)
    with NetnsCluster(tmp_path_factory.mktemp("netns"), nodes=2) as cluster:
        yield cluster


def test_nodes_have_own_hostnames_and_reach_each_other_by_name(netns_cluster):
    c = netns_cluster
    names = {c.ssh(n, ["hostname"]).stdout.strip() for n in c.nodes}
    assert names == {c.hostname(n) for n in c.nodes}
    out = c.ssh("node0", ["hostname"], to="node1").stdout.strip()
    assert out == c.hostname("node1")


def test_each_node_has_a_data_and_a_management_interface(netns_cluster):
    c = netns_cluster
    for node in c.nodes:
        addrs = c.exec(node, ["ip", "-o", "-4", "addr", "show"]).stdout.split("\n")
        have = {(line.split()[1], line.split()[3]) for line in addrs if line.strip()}
        assert have == {("lo", "127.0.0.1/8"), ("data0", f"{c.address(node)}/24"),
                        ("mgmt0", f"{c.address(node, 'mgmt')}/24")}
    # the management network carries ssh too, by its own name
    assert c.ssh("node0", ["hostname"], to="node1-mgmt").stdout.strip() == c.hostname("node1")


RANKS = ("import socket, horovod.tensorflow as hvd; hvd.init(); "
         "print('RANK', hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd.cross_size(),"
         " socket.gethostname(), flush=True)")


def test_mpirun_hostfile_places_one_rank_per_node(netns_cluster):
    c = netns_cluster
    cmd = c.on("node0", ["mpirun", "--hostfile", str(c.hostfile()), "-x", "PYTHONPATH", "-x", "HOROVOD_GLOO_IFACE",
                         sys.executable, "-c", RANKS])
    proc = run_job(cmd, timeout=120, HOROVOD_GLOO_IFACE="data0", **c.mpirun_env())
    assert _ranks(proc.stdout) == _one_rank_per_node(c), proc.stdout + proc.stderr[-3000:]


def _one_rank_per_node(c):
    """rank, size, local rank, local size, cross size and host of each rank: one rank on each of 2 nodes."""
    return [["0", "2", "0", "1", "2", c.hostname("node0")], ["1", "2", "0", "1", "2", c.hostname("node1")]]


def _ranks(stdout):
    """The RANK lines' fields, wherever in a line the two ranks' interleaved output puts them."""
    return sorted(m.split() for m in re.findall(r"RANK ((?:\S+ ){5}\S+)", stdout))


def test_horovodrun_hosts_with_gloo_on_the_data_interface(netns_cluster):
    c = netns_cluster
    hosts = ",".join(f"{n}:1" for n in c.nodes)
    cmd = c.on("node0", [f"{sys.prefix}/bin/horovodrun", "--gloo", "--network-interface", "data0", "-np", "2",
                         "-H", hosts, sys.executable, "-c", RANKS])
    proc = run_job(cmd, timeout=120)
    assert _ranks(proc.stdout) == _one_rank_per_node(c), proc.stdout + proc.stderr[-3000:]


LAUNCH = os.path.join(ROOT, "job_submissions", "local", "launch.sh")
SMOKE = ["smoke.train", "--epochs", "1", "--steps-per-epoch", "3", "--per-rank-batch", "4", "--eval-images", "16",
         "--precision", "float32", "--progress", "none"]


def test_the_launcher_trains_across_nodes_on_the_interface_medimg_iface_names(netns_cluster, tmp_path):
    """MEDIMG_IFACE=data0 with a hostfile: the launcher's horovodrun puts one rank on each node and
    the run trains to the end (every collective over the data network)."""
    c = netns_cluster
    cmd = c.on("node0", ["bash", LAUNCH, "--np", "2", "--hostfile", str(c.hostfile()), *SMOKE,
                         "--runs-dir", str(tmp_path), "--run-name", "across"])
    proc = run_job(cmd, timeout=240, MEDIMG_IFACE="data0")
    assert "on 2 rank(s) of 2 host(s)" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "across" / "metrics.jsonl").exists()


def test_an_interface_one_node_lacks_is_named_in_one_line_before_any_rank_starts(netns_cluster):
    """node0 has an interface node1 lacks: the launcher checks every host over ssh first and names node1,
    within seconds, where horovodrun would end in a traceback (and Open MPI could wait on the wrong network)."""
    c = netns_cluster
    c.exec("node0", ["ip", "link", "add", "only0", "type", "veth", "peer", "name", "only0p"])
    try:
        started = time.monotonic()
        proc = run_job(c.on("node0", ["bash", LAUNCH, "--np", "2", "--hostfile", str(c.hostfile()), *SMOKE]),
                       timeout=60, expect_rc=2, MEDIMG_IFACE="only0")
        elapsed = time.monotonic() - started
    finally:
        c.exec("node0", ["ip", "link", "del", "only0"])
    lines = proc.stderr.strip().splitlines()
    assert lines == ["launch.sh: error: MEDIMG_IFACE=only0: host node1 has no interface only0 ('ip -br addr' "
                     "there lists its interfaces)"], proc.stderr[-2000:]
    assert elapsed < 20 and "Traceback" not in proc.stderr


def _node_pids(c, node):
    """Every process in ``node``'s network namespace but its sshd (the node's 'operating system')."""
    keep = c.sshd[c.nodes.index(node)].pid
    pids = subprocess.run(["ip", "netns", "pids", c.ns(node)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in pids if int(p) != keep]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    """A tiny synthetic Kvasir-SEG at 32x32 for the runs across nodes: read only."""
    return make_kvasir(tmp_path_factory.mktemp("netns-data"), pairs=50, largest=64, stored=32)


def _training(c, data, runs, name, epochs, *extra):
    """mpirun from node0 over the hostfile (one rank per node), U-Net on ``data``, collectives on data0."""
    return c.on("node0", ["mpirun", "--hostfile", str(c.hostfile()), "-x", "PYTHONPATH", "--bind-to", "none",
                          sys.executable, "-m", "segmentation.train", "--model", "unet",
                          "--data-dir", str(data / "tfrecords"), "--runs-dir", str(runs), "--run-name", name,
                          "--per-rank-batch", "4", "--epochs", str(epochs), "--precision", "float32",
                          "--no-tensorboard", "--progress", "none", *extra])


def _wait_for_an_epoch(job, metrics, timeout=240):
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and read_events(str(metrics), "epoch")):
        assert job.proc.poll() is None and time.monotonic() < deadline, job.output_tail()
        time.sleep(0.2)


def test_a_node_lost_mid_run_ends_the_job_quickly_naming_it_and_resume_goes_on(netns_cluster, seg_data, tmp_path):
    """Every process of node1 (its rank and Open MPI's daemon) killed at once after epoch 1: mpirun on
    node0 ends the job within the bound docs/RELIABILITY.md states, naming node1 as the peer lost, and --resume
    on both nodes goes on from epoch 1's checkpoint to the end."""
    c = netns_cluster
    metrics = tmp_path / "lost" / "metrics.jsonl"
    with started_job(_training(c, seg_data, tmp_path, "lost", 3), **c.mpirun_env()) as job:
        _wait_for_an_epoch(job, metrics)
        for pid in _node_pids(c, "node1"):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        job.proc.wait(120)
        ended = time.monotonic() - killed
        stdout, stderr = job.output()
    assert job.proc.returncode != 0 and ended < NODE_LOST_S, f"{ended:.1f} s\n{stderr[-3000:]}"
    # Open MPI names the host as the hostfile does: the peer process, its daemon, or the daemon's ssh link,
    # whichever it notices first.
    assert re.search(r"(Peer host:|Remote daemon: .* on node|Connection to)\s+node1\b", stderr), stderr[-3000:]
    done = len(read_events(str(metrics), "epoch"))
    assert done < 3
    proc = run_job(_training(c, seg_data, tmp_path, "lost", 3, "--resume"), timeout=300, **c.mpirun_env())
    epochs = [e["epoch"] for e in read_events(str(metrics), "epoch")]
    assert epochs[-1] == 3 and "Traceback" not in proc.stderr
    print(f"node lost: the job ended {ended:.1f} s after the kill, after {done} epochs")


NODE_LOST_S = 30  # the bound docs/RELIABILITY.md states for a lost node (as for a killed rank)


def test_a_cut_link_ends_every_rank_within_the_stall_timeout_and_resume_goes_on(netns_cluster, seg_data, tmp_path):
    """node1's data interface brought down after epoch 1, its processes alive: the collectives stop
    answering. Open MPI's keepalive, as the launchers set it (KEEPALIVE, shortened here), loses node1's
    daemon, or a rank's watchdog ends it after --stall-timeout-s: the job ends, no rank waits forever
    (with Open MPI's default keepalive mpirun waited over 200 s); with the link back, --resume finishes."""
    c = netns_cluster
    metrics = tmp_path / "cut" / "metrics.jsonl"
    stall = ["--stall-timeout-s", str(STALL_S)]
    with started_job(_training(c, seg_data, tmp_path, "cut", 3, *stall), **c.mpirun_env(), **KEEPALIVE) as job:
        _wait_for_an_epoch(job, metrics)
        try:
            c.exec("node1", ["ip", "link", "set", "data0", "down"])
            cut = time.monotonic()
            try:
                job.proc.wait(STALL_S + LINK_CUT_EXTRA_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the job did not end {STALL_S + LINK_CUT_EXTRA_S} s after the cut\n{job.output_tail()}")
            ended = time.monotonic() - cut
        finally:
            c.exec("node1", ["ip", "link", "set", "data0", "up"])
        stdout, stderr = job.output()
    assert job.proc.returncode != 0 and ended < STALL_S + LINK_CUT_EXTRA_S, stderr[-3000:]
    # Whichever comes first: a rank's watchdog, or Open MPI's keepalive losing node1's daemon.
    assert re.search(r"no training progress on this rank \(pid \d+\) for \d+ s|ORTE has lost communication with a "
                     r"remote daemon", stderr), stderr[-3000:]
    print(f"link cut: the job ended {ended:.1f} s after the cut (stall timeout {STALL_S} s)")
    run_job(_training(c, seg_data, tmp_path, "cut", 3, *stall, "--resume"), timeout=300, **c.mpirun_env())
    assert [e["epoch"] for e in read_events(str(metrics), "epoch")][-1] == 3


STALL_S, LINK_CUT_EXTRA_S = 15, 45
KEEPALIVE = dict(OMPI_MCA_oob_tcp_keepalive_time="5", OMPI_MCA_oob_tcp_keepalive_intvl="2",
                 OMPI_MCA_oob_tcp_keepalive_probes="3")  # the watchdog's bound, and what mpirun may add to end the job
