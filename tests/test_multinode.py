"""The namespace cluster itself: separate hostnames, two networks, name resolution, ssh between nodes."""
import os
import sys
import time

import pytest

from helpers import ROOT, run_job

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
    out = run_job(cmd, timeout=120, HOROVOD_GLOO_IFACE="data0", **c.mpirun_env()).stdout
    ranks = sorted(line.split()[1:] for line in out.splitlines() if line.startswith("RANK "))
    assert ranks == [["0", "2", "0", "1", "2", c.hostname("node0")], ["1", "2", "0", "1", "2", c.hostname("node1")]]


def test_horovodrun_hosts_with_gloo_on_the_data_interface(netns_cluster):
    c = netns_cluster
    hosts = ",".join(f"{n}:1" for n in c.nodes)
    cmd = c.on("node0", [f"{sys.prefix}/bin/horovodrun", "--gloo", "--network-interface", "data0", "-np", "2",
                         "-H", hosts, sys.executable, "-c", RANKS])
    out = run_job(cmd, timeout=120).stdout
    ranks = sorted(line.split("RANK ")[1].split() for line in out.splitlines() if "RANK " in line)
    assert ranks == [["0", "2", "0", "1", "2", c.hostname("node0")], ["1", "2", "0", "1", "2", c.hostname("node1")]]


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
