"""A real Slurm for the tests: munged, slurmctld and slurmd started in a temporary folder.

    with SlurmCluster(tmp_path) as slurm:          # installs slurm-wlm and munge with apt if root and missing
        job = slurm.sbatch(["job_submissions/slurm/train.sbatch", "segmentation", ...], env)
        state = slurm.wait(job, timeout=600)        # "COMPLETED", "FAILED", ...
    with SlurmCluster(tmp_path, netns=cluster):    # one Slurm node per node of a tests/netns_cluster.py cluster
        ...

One node by default: this machine. Across nodes (``netns``): slurmctld runs in the
first node, one ``slurmd -N <hostname>`` in each node (its network, hostname and
mount namespace, so its tasks see that node's interfaces and /etc/hosts), the
Slurm nodes named by the nodes' hostnames, each with its own spool folder and log;
every Slurm command the class runs is run from the first node. munged stays
outside: its socket is a file, which every node reaches.

The configuration is the one known to work on this machine kind (REFERENCE):
``SlurmUser=root``, ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``SelectType=select/cons_tres``, one node with this machine's CPUs and memory.
Everything lives in the folder given (config, state, spool, logs, munge socket
and a fresh munge key); free ports are picked, so it does not clash with a system
Slurm. Every daemon is started in the foreground as a child and stopped by
its own process id when the block ends (or when its start fails). ``unavailable()`` says why the tests
must skip (not root, no apt, install failed), or None.
"""
import os
import shutil
import socket
import subprocess
import time

PACKAGES = ["slurm-wlm", "munge"]
DAEMONS = ("munged", "slurmctld", "slurmd")


def _run(cmd, timeout=600):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def unavailable():
    """None when slurmctld, slurmd, sbatch and munged are here (installing them if root with apt), else why not."""
    needed = ["slurmctld", "slurmd", "sbatch", "sacct", "munged"]
    if all(shutil.which(c) for c in needed):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "Slurm is not installed and cannot be (needs root and apt-get to install slurm-wlm and munge)"
    proc = _run(["apt-get", "install", "-y", "-q", *PACKAGES])
    if proc.returncode != 0:  # a fresh machine may need its package lists first
        _run(["apt-get", "update", "-q"])
        proc = _run(["apt-get", "install", "-y", "-q", *PACKAGES])
    if proc.returncode != 0 or not all(shutil.which(c) for c in needed):
        return f"installing {' '.join(PACKAGES)} with apt-get failed: {proc.stderr.strip()[-300:]}"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_facts():
    """(CPUs, RealMemory in MB) as slurmd -C reports them."""
    out = _run(["slurmd", "-C"]).stdout
    facts = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return int(facts.get("CPUs", os.cpu_count() or 1)), int(facts.get("RealMemory", 1024))


class SlurmCluster:
    def __init__(self, folder, netns=None):
        self.folder = str(folder)
        self.conf = os.path.join(self.folder, "slurm.conf")
        self.netns = netns
        # {Slurm node name: netns node, or None for this machine}
        self.nodes = ({netns.hostname(n): n for n in netns.nodes} if netns
                      else {socket.gethostname().split(".")[0]: None})
        self.host = next(iter(self.nodes))  # slurmctld's
        self.procs = []

    def on(self, name, cmd):
        """``cmd`` prefixed to run on Slurm node ``name``."""
        node = self.nodes[name]
        return self.netns.on(node, cmd) if node else cmd

    def client(self, cmd):
        """``cmd`` prefixed to run where slurmctld is reached by its name: the first node."""
        return self.on(self.host, cmd)

    # ---------------------------------------------------------------- set-up
    def _write_config(self):
        cpus, memory = _node_facts()
        for sub in ("state", "log", "munge", *(os.path.join("spool", name) for name in self.nodes)):
            os.makedirs(os.path.join(self.folder, sub), exist_ok=True)
        f = self.folder
        lines = [
            "ClusterName=medimg-test", f"SlurmctldHost={self.host}", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            # %n: the node's name, so that every slurmd has a spool, pid and log of its own
            f"StateSaveLocation={f}/state", f"SlurmdSpoolDir={f}/spool/%n",
            f"SlurmctldPidFile={f}/slurmctld.pid", f"SlurmdPidFile={f}/slurmd-%n.pid",
            f"SlurmctldLogFile={f}/log/slurmctld.log", f"SlurmdLogFile={f}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
            # Look at pending jobs every 2 s, not 60: a requeued job made eligible starts at once.
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "JobRequeue=1", "KillWait=5", "InactiveLimit=0", "MinJobAge=600",
            "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
            f"AuthInfo=socket={f}/munge/munge.socket",
            *(f"NodeName={name} CPUs={cpus} RealMemory={memory} State=UNKNOWN" for name in self.nodes),
            f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")

    def _start_munge(self):
        key = os.path.join(self.folder, "munge", "munge.key")
        with open(key, "wb") as fh:  # a key of its own: no dependence on /etc/munge
            fh.write(os.urandom(1024))
        os.chmod(key, 0o600)
        m = os.path.join(self.folder, "munge")
        self.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={m}/munge.socket", f"--key-file={key}",
             f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait_for(lambda: os.path.exists(f"{m}/munge.socket"), 20, "munged's socket")

    def _start_slurm(self):
        self._daemon(self.client(["slurmctld", "-D", "-f", self.conf]))
        for name in self.nodes:
            self._cgroups(name)
            self._daemon(self.on(name, ["slurmd", "-D", "-N", name, "-f", self.conf]))
        self._wait_for(self._nodes_idle, 60, f"node(s) {', '.join(self.nodes)} idle in sinfo")

    def _cgroups(self, name):
        """slurmd needs the cgroup file systems, which a node's own /sys lacks: they are mounted there as
        this machine has them, in the node's mount namespace alone (it goes with the node)."""
        if self.nodes[name] is None:
            return
        script = ["mountpoint -q /sys/fs/cgroup && exit 0"]  # a Slurm before this one mounted them
        with open("/proc/self/mounts") as fh:
            for source, target, kind, options, *_ in (line.split() for line in fh):
                if target == "/sys/fs/cgroup" or target.startswith("/sys/fs/cgroup/"):
                    script.append(f"mkdir -p {target} && mount -t {kind} -o {options} {source} {target}")
        subprocess.run(self.on(name, ["sh", "-ec", "\n".join(script)]), check=True, capture_output=True,
                       timeout=30)

    def _daemon(self, cmd):
        # nsenter execs the daemon: the pid kept is the daemon's own
        self.procs.append(subprocess.Popen(cmd, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _nodes_idle(self):
        out = subprocess.run(self.client(["sinfo", "-h", "-N", "-o", "%T"]), capture_output=True, text=True,
                             env=self.env(), timeout=30)
        states = out.stdout.split()
        return out.returncode == 0 and len(states) == len(self.nodes) and all(s.startswith("idle") for s in states)

    def _wait_for(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [next(a for a in p.args if a in DAEMONS) for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = self.logs()
                self.stop()
                raise RuntimeError(f"Slurm test cluster: no {what} within {timeout} s"
                                   f"{' (' + ', '.join(dead) + ' exited)' if dead else ''}\n{logs}")
            time.sleep(0.3)

    def __enter__(self):
        try:
            self._write_config()
            self._start_munge()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """SIGTERM every daemon by its pid, SIGKILL what is left after 10 s."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    # ---------------------------------------------------------------- use
    def env(self, **extra):
        return dict(os.environ, SLURM_CONF=self.conf, **extra)

    def sbatch(self, args, env=None, cwd=None):
        """Job id of ``sbatch --parsable ARGS``."""
        proc = subprocess.run(self.client(["sbatch", "--parsable", *args]), capture_output=True, text=True, cwd=cwd,
                              env=dict(env or os.environ, SLURM_CONF=self.conf), timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def state(self, job):
        out = subprocess.run(self.client(["scontrol", "show", "job", job, "-o"]), capture_output=True, text=True,
                             env=self.env()).stdout
        fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
        return fields.get("JobState", "UNKNOWN"), fields

    def wait(self, job, timeout):
        """The job's final state (COMPLETED, FAILED, TIMEOUT, ...); scancel and fail after ``timeout`` s.

        A requeued job is started again at once (``start_now``).
        """
        deadline = time.monotonic() + timeout
        while True:
            state, fields = self.state(job)
            if state == "PENDING" and fields.get("Reason") == "BeginTime" and fields.get("Restarts", "0") != "0":
                self.start_now(job)
            if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                         "DEADLINE", "PREEMPTED"):
                return state
            if time.monotonic() > deadline:
                self.scancel(job)
                raise TimeoutError(f"job {job} still {state} after {timeout} s; cancelled")
            time.sleep(1)

    def completed(self, job, log, timeout):
        """The text of ``log`` once ``job`` has COMPLETED (``wait``); AssertionError with its tail and the
        daemons' logs when it ended otherwise."""
        state = self.wait(job, timeout)
        text = open(log, errors="replace").read() if os.path.exists(log) else "(no log)"
        assert state == "COMPLETED", f"job {job}: {state}\n{text[-4000:]}\n{self.logs()}"
        return text

    def wait_for_epoch(self, job, metrics, timeout):
        """Until ``metrics`` (a run's metrics.jsonl) records an epoch; scancel and fail if ``job`` ends or
        ``timeout`` s pass first."""
        from runtime.metrics import read_events
        deadline = time.monotonic() + timeout
        while not (os.path.exists(metrics) and read_events(str(metrics), "epoch")):
            state = self.state(job)[0]
            if state not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
                self.scancel(job)
                raise AssertionError(f"job {job} {state} with no epoch recorded in {metrics} ({timeout} s at most)\n"
                                     f"{self.logs()}")
            time.sleep(0.5)

    def update(self, job, *settings):
        """``scontrol update JobId=JOB SETTINGS`` (root may do anything, e.g. TimeLimit=10)."""
        subprocess.run(self.client(["scontrol", "update", f"JobId={job}", *settings]), env=self.env(), check=True,
                       capture_output=True, timeout=60)

    def scancel(self, job, *options):
        """``scancel OPTIONS JOB`` (e.g. ``--signal=USR1 --batch``: the signal a time limit brings)."""
        subprocess.run(self.client(["scancel", *options, job]), env=self.env(), check=True, capture_output=True,
                       timeout=60)

    def start_now(self, job):
        """Let a requeued job start at once (Slurm holds it back for two minutes otherwise)."""
        # slurmd refuses a credential dated in the same second as the job's revoked
        # one ("Job credential revoked"): let a second pass first.
        time.sleep(2)
        self.update(job, "StartTime=now")

    def logs(self):
        out = []
        for name in ("log/slurmctld.log", *(f"log/slurmd-{n}.log" for n in self.nodes), "munge/munged.log"):
            path = os.path.join(self.folder, name)
            if os.path.exists(path):
                with open(path, errors="replace") as fh:
                    out.append(f"--- {name} ---\n" + "".join(fh.readlines()[-15:]))
        return "\n".join(out)
