"""The namespace cluster itself: separate hostnames, two networks, name resolution, ssh between nodes."""
import sys

import pytest

from helpers import run_job

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
