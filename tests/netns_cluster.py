"""Separate network hosts on one machine for the multi-node tests: network + UTS namespaces with sshd.

    with NetnsCluster(tmp_path, nodes=2) as cluster:
        cluster.ssh("node0", ["hostname"])            # "mn<id>-node0"

Each node is a network namespace (``ip netns``) whose sshd runs in a UTS namespace of its own
(``unshare --uts``), so it has its own hostname. Each node has two veth interfaces on two bridges
the cluster makes: ``data`` (10.226.0.0/24) and ``mgmt`` (10.227.0.0/24); the addresses exist only
inside the namespaces. Names resolve through ``/etc/netns/NS/hosts``, which ``ip netns exec`` binds
over /etc/hosts in that node's mount namespace (the documented iproute2 mechanism, nothing global
changes); the cluster's ssh client config (its key, no known_hosts writes) is bound over
/etc/ssh/ssh_config there too, so mpirun's and horovodrun's plain ``ssh`` use it.
Teardown kills every pid in each namespace, then deletes the exact namespaces, bridges and
/etc/netns folders it made, even when a test fails. ``unavailable()`` says why tests must skip.
"""
import os
import shutil
import subprocess
import time
import uuid

NETS = {"data": "10.226.0", "mgmt": "10.227.0"}


def _run(cmd, check=True, timeout=60):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def unavailable():
    """None when namespaces and sshd can be had here (installing openssh-server if root), else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip") or _run(["ip", "netns", "list"], check=False).returncode != 0:
        return "no 'ip netns' (iproute2)"
    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        proc = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"],
                    check=False, timeout=600)
        if proc.returncode != 0:
            return f"installing openssh-server failed: {proc.stderr.strip()[-300:]}"
    return None


class NetnsCluster:
    def __init__(self, folder, nodes=2):
        self.folder, self.tag = folder, "mn" + uuid.uuid4().hex[:6]
        self.nodes = [f"node{i}" for i in range(nodes)]
        self.namespaces, self.links, self.sshd = [], [], []
        self.made_etc_netns = not os.path.isdir("/etc/netns")

    def ns(self, node):
        return f"{self.tag}-{node}"

    def hostname(self, node):
        return f"{self.tag}-{node}"

    def address(self, node, net="data"):
        return f"{NETS[net]}.{self.nodes.index(node) + 1}"

    def __enter__(self):
        try:
            self._keys()
            for net, prefix in NETS.items():
                bridge = f"{self.tag}{net[0]}"
                _run(["ip", "link", "add", bridge, "type", "bridge"])
                self.links.append(bridge)
                _run(["ip", "link", "set", bridge, "up"])
            hosts = "127.0.0.1 localhost\n" + "".join(
                f"{self.address(n)} {self.hostname(n)} {n}\n{self.address(n, 'mgmt')} {n}-mgmt\n"
                for n in self.nodes)
            for node in self.nodes:
                self._node(node, hosts)
            for node in self.nodes:
                self._sshd(node)
            self._wait_sshd()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _keys(self):
        os.makedirs(self.folder / "ssh", exist_ok=True)
        key = self.folder / "ssh" / "id"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.folder / "ssh" / "host")])
        shutil.copy(f"{key}.pub", self.folder / "ssh" / "authorized_keys")
        (self.folder / "ssh" / "config").write_text(
            f"Host *\n  IdentityFile {key}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            f"  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 5\n")

    def _node(self, node, hosts):
        ns = self.ns(node)
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        with open(f"/etc/netns/{ns}/hosts", "w") as f:
            f.write(hosts)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for net in NETS:
            i = self.nodes.index(node)
            inner, outer = f"{net}0", f"{self.tag}{net[0]}{i}"
            _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns])
            self.links.append(outer)
            _run(["ip", "link", "set", outer, "master", f"{self.tag}{net[0]}", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(node, net)}/24", "dev", inner])
            _run(["ip", "-n", ns, "link", "set", inner, "up"])

    def _sshd(self, node):
        ssh = self.folder / "ssh"
        cfg = ssh / f"sshd_{node}"
        cfg.write_text(f"ListenAddress 0.0.0.0\nPort 22\nHostKey {ssh / 'host'}\nPermitRootLogin yes\n"
                       f"AuthorizedKeysFile {ssh / 'authorized_keys'}\nPasswordAuthentication no\n"
                       f"UsePAM no\nStrictModes no\nPidFile none\nAcceptEnv *\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.sshd.append(subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), "unshare", "--uts", "sh", "-c",
             f"hostname {self.hostname(node)} && mount --bind {ssh / 'config'} /etc/ssh/ssh_config"
             f" && exec /usr/sbin/sshd -D -e -f {cfg}"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / f"sshd_{node}.log", "w")))

    def _wait_sshd(self, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if len(self.sshd) == len(self.nodes) and all(self.ssh(self.nodes[0], ["true"], check=False, to=n).returncode == 0 for n in self.nodes):
                return
            time.sleep(0.3)
        raise RuntimeError(f"sshd did not answer in {timeout} s: {(self.folder / 'sshd_node0.log').read_text()}")

    def on(self, node, cmd):
        """``cmd`` prefixed to run on ``node`` (its network, hostname and /etc/hosts: sshd's namespaces)."""
        pid = self.sshd[self.nodes.index(node)].pid  # ip netns exec, unshare and sh all exec into sshd
        return ["nsenter", "-t", str(pid), "-n", "-u", "-m", *cmd]

    def hostfile(self, slots=1):
        path = self.folder / f"hostfile{slots}"
        path.write_text("".join(f"{n} slots={slots}\n" for n in self.nodes))
        return path

    def mpirun_env(self, iface="data0"):
        """Open MPI settings for a launch from a node: TCP on ``iface``."""
        return dict(OMPI_MCA_btl_tcp_if_include=iface, OMPI_MCA_oob_tcp_if_include=iface)

    def exec(self, node, cmd, check=True, timeout=60):
        """Run ``cmd`` on ``node``, not over ssh."""
        return _run(self.on(node, cmd), check=check, timeout=timeout)

    def ssh(self, node, cmd, check=True, to=None, timeout=60):
        """From ``node``, ssh to ``to`` (default ``node``) by its name and run ``cmd``."""
        return self.exec(node, ["ssh", "-F", str(self.folder / "ssh" / "config"), to or node, *cmd],
                         check=check, timeout=timeout)

    def __exit__(self, *exc):
        for proc in self.sshd:
            proc.kill()
        for ns in self.namespaces:  # whatever a test left running in a node goes with it
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
        for proc in self.sshd:
            proc.wait(10)
        for ns in self.namespaces:
            _run(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        for link in self.links:
            _run(["ip", "link", "del", link], check=False)
        if self.made_etc_netns and os.path.isdir("/etc/netns") and not os.listdir("/etc/netns"):
            os.rmdir("/etc/netns")
