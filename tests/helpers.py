"""Run real multi-rank jobs from tests, with mpirun or horovodrun, and leave no process behind.

    from helpers import run_ranks
    run_ranks(2, ["tests/mpi_programs/collectives.py", "--out", str(tmp_path)])

A job that exits with another status than expected fails the test with the
tail of its stdout and stderr; so does a job still running after ``timeout``
seconds, which is stopped first.

Whatever ends the wait (the job's exit, its timeout, pytest-timeout, a failed
assertion, Ctrl-C), every process the job started is gone before the helper
returns or raises. A tree walk from the launcher is not enough: horovodrun's
middleman calls setsid, and a rank whose mpirun died is re-parented away from
the tree. So each job carries a mark in its environment (``JOB_VAR``), which
every process it starts inherits, and stopping a job ends its tree *and* every
process on the host with its mark. conftest.py also makes pytest a child
subreaper, so such orphans become pytest's children and can be reaped.
"""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings

import psutil  # a horovod dependency
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
JOB_VAR = "TESTS_JOB_ID"
GRACE_S = 5  # between SIGTERM and SIGKILL: time for mpirun to take its ranks down


def job_env(**extra):
    env = dict(os.environ)
    # Open MPI refuses root without these; CI runs as root.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_job(cmd, timeout=600, expect_rc=0, **env):
    """Run ``cmd`` in ROOT; returns a CompletedProcess with text stdout and stderr."""
    with started_job(cmd, **env) as job:
        try:
            job.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            job.stop()
            pytest.fail(f"{' '.join(cmd)} was stopped after {timeout} s (its timeout), still running\n"
                        f"{tail(*job.output())}")
        job.settle(2.0)
        left = job.stop()
        if left:  # none after a clean mpirun or horovodrun: a leak worth knowing of
            warnings.warn(f"{' '.join(cmd)} exited {job.proc.returncode} but left {len(left)} process(es) running;"
                          f" stopped them")
        result = subprocess.CompletedProcess(cmd, job.proc.returncode, *job.output())
    if expect_rc is not None and result.returncode != expect_rc:
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}, expected {expect_rc}\n"
                    f"{tail(result.stdout, result.stderr)}")
    return result


def make_kvasir(root, pairs, largest, stored, seed=0, per_shard=40, split="official"):
    """A synthetic Kvasir-SEG made by the three shell stages: frames up to ``largest`` px, records at
    ``stored`` px, split as write_tfrecords.sh --split (random: with a test split); returns ``root/kvasir-seg``."""
    for script, extra in (("download_dataset.sh", ["--synthetic", str(pairs), "--image-size", str(largest),
                                                   "--seed", str(seed)]),
                          ("extract_images.sh", []),
                          ("write_tfrecords.sh", ["--image-size", str(stored), "--images-per-shard", str(per_shard),
                                                  "--split", split])):
        run_job(["bash", script, "--dataset", "kvasir-seg", "--out", str(root), *extra], timeout=600)
    return root / "kvasir-seg"


def make_chestxray14(root, images, stored, seed=0, per_shard=0):
    """A synthetic ChestX-ray14 made by the three shell stages, records at ``stored`` px; returns
    ``root/chestxray14``."""
    write = ["--image-size", str(stored)] + (["--images-per-shard", str(per_shard)] if per_shard else [])
    for script, extra in (("download_dataset.sh", ["--synthetic", str(images), "--image-size", str(stored),
                                                   "--seed", str(seed)]),
                          ("extract_images.sh", []), ("write_tfrecords.sh", write)):
        run_job(["bash", script, "--out", str(root), *extra], timeout=600)
    return root / "chestxray14"


def tail(stdout, stderr, chars=6000):
    return f"--- stdout ---\n{stdout[-chars:]}\n--- stderr ---\n{stderr[-chars:]}"


def run_ranks(np_, args, timeout=600, expect_rc=0, **env):
    """``mpirun -np NP python ARGS`` on this host."""
    mpirun = shutil.which("mpirun") or "mpirun"
    return run_job([mpirun, "-np", str(np_), "--oversubscribe", sys.executable, *args],
                   timeout, expect_rc, **env)


def horovodrun(np_, args, timeout=900, expect_rc=0, **env):
    """``horovodrun -np NP python ARGS`` with the venv's horovodrun."""
    return run_job([os.path.join(BIN, "horovodrun"), "-np", str(np_), sys.executable, *args],
                   timeout, expect_rc, **env)


@contextlib.contextmanager
def started_job(cmd, **env):
    """Start ``cmd`` in ROOT in the background; on leaving the block, stop all it started.

        with started_job(["bash", "scripts/demo.sh"]) as job:
            os.kill(job.proc.pid, signal.SIGTERM)
            job.proc.wait(30)
            stdout, stderr = job.output()
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        job_id = uuid.uuid4().hex
        # A session of its own: Ctrl-C reaches pytest alone, which then stops the job here.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(**env, **{JOB_VAR: job_id}),
                                stdout=out, stderr=err, start_new_session=True)
        job = Job(proc, job_id, out, err)
        try:
            yield job
        finally:
            job.stop()


class Job:
    """A started command, its output files, and the means to stop all its processes."""

    def __init__(self, proc, job_id, out, err):
        self.proc, self.job_id, self._out, self._err = proc, job_id, out, err

    def processes(self):
        """The job's live processes other than its root: the root's tree, and every marked one."""
        found = marked_processes(JOB_VAR, self.job_id)
        if self.proc.poll() is None:  # once reaped, its pid may belong to someone else
            with contextlib.suppress(psutil.Error):
                found += psutil.Process(self.proc.pid).children(recursive=True)
        return list({p.pid: p for p in found if p.pid != self.proc.pid}.values())

    def settle(self, seconds):
        """Wait up to ``seconds`` for the job's processes to end on their own: multiprocessing's resource
        tracker, for one, exits only once it reads the end of its pipe, just after the root."""
        deadline = time.monotonic() + seconds
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self):
        """End the root and every process of the job (SIGTERM, GRACE_S, SIGKILL) and reap them.

        Returns the processes other than the root that were still running.

        SIGALRM (pytest-timeout) and SIGINT wait until this is done, so neither
        can leave the job half-stopped; they take effect right after.
        """
        deferred = {signal.SIGALRM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
        stopped = []
        try:
            for _ in range(3):  # again, in case a process forked while being stopped
                procs = self.processes()
                if self.proc.poll() is not None and not procs:
                    break
                if self.proc.poll() is None:
                    self.proc.terminate()
                stopped += stop_processes(procs, on_root_exit=self._stop_root)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, deferred)
        return stopped

    def _stop_root(self, deadline):
        # The root is reaped by Popen itself (psutil would take its exit status).
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def output(self):
        """(stdout, stderr) so far, as text."""
        return _read(self._out), _read(self._err)

    def output_tail(self):
        return tail(*self.output())


def _read(file):
    file.flush()
    file.seek(0)
    return file.read().decode(errors="replace")


def marked_processes(var, value):
    """Live processes on this host whose environment has ``var=value`` (this process excepted)."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid != os.getpid() and p.environ().get(var) == value:
                found.append(p)
    return found


def stop_processes(procs, grace=GRACE_S, on_root_exit=None):
    """SIGTERM ``procs``, SIGKILL those alive after ``grace`` s; returns those that were alive.

    Waiting on a process that is our child (an orphan re-parented to the
    subreaper pytest) reaps it, so none is left a zombie. ``on_root_exit(deadline)``
    waits for the job's root, which the caller signalled and reaps itself.
    """
    alive = [p for p in procs if _alive(p)]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    deadline = time.monotonic() + grace
    if on_root_exit:
        on_root_exit(deadline)
    _, stubborn = psutil.wait_procs(alive, timeout=max(0.1, deadline - time.monotonic()))
    for p in stubborn:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(stubborn, timeout=5)
    return alive


def _alive(p):
    try:
        if p.status() != psutil.STATUS_ZOMBIE:
            return p.is_running()
        if p.ppid() == os.getpid():  # a zombie of ours: reap it
            p.wait(0)
    except (psutil.Error, ChildProcessError):
        pass
    return False


@contextlib.contextmanager
def small_disk(path, kilobytes):
    """A tmpfs of ``kilobytes`` mounted at ``path`` (a full disk on demand); skips the test where this
    process may not mount (not root, or a container without CAP_SYS_ADMIN), saying so."""
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({proc.stderr.strip() or 'mount failed'}): "
                    f"run the tests as root with mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def snapshot(folder):
    """{relative path: SHA-256} of every file under ``folder``."""
    found = {}
    for top, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def one_line_refusal(proc, *expected):
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def without_project(python=sys.executable, extra_path=()):
    """(argv prefix, env) for ``python`` with its third-party packages but not this project, even where the
    project is installed editable (make setup): the editable install's finder is put in place by a .pth file,
    and -S runs none; PYTHONPATH gives back the folders site would have added, less the checkout, then
    ``extra_path``. Also -s (no user site) and no TF_USE_LEGACY_KERAS (with it, TensorFlow imports tf-keras)."""
    probe = subprocess.run([python, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                           cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=60, check=True)
    folders = [f for f in json.loads(probe.stdout) if f and os.path.realpath(f) != os.path.realpath(ROOT)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.pathsep.join([*folders, *extra_path])
    return [python, "-S", "-s"], env
