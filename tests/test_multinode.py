"""The namespace cluster itself: separate hostnames, two networks, name resolution, ssh between nodes."""
import pytest

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
