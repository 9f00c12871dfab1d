"""No job outlives its test: whatever ends it, every process it started is gone.

Each job's command carries a unique marker argument; afterwards no process on
the host may have it in its command line. The jobs write one ready file per
rank before sleeping, so the ranks were surely running when the job was ended.
"""
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from helpers import ROOT, horovodrun, run_job, run_ranks, started_job, stop_processes

# A rank that never ends: python -c SLEEPER READY_DIR MARKER
SLEEPER = ("import os, sys, time; open(os.path.join(sys.argv[1], f'ready-{os.getpid()}'), 'w').close(); "
           "time.sleep(10**6)")


@pytest.fixture
def marker():
    """A unique command-line argument; the test fails if a process carrying it survives."""
    mark = f"test-processes-{uuid.uuid4().hex}"
    yield mark
    survivors = processes_with(mark)
    stop_processes(survivors)  # so that a failure here leaves nothing to the next test
    assert not survivors, f"processes survived their job: {[' '.join(p.cmdline()) for p in survivors]}"


def processes_with(mark, anywhere=False):
    """Live processes with ``mark`` as an argument (``anywhere``: within an argument)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        args = p.info["cmdline"] or []
        if p.info["status"] != psutil.STATUS_ZOMBIE and (mark in " ".join(args) if anywhere else mark in args):
            found.append(p)
    return found


def ready_ranks(folder):
    return len([f for f in os.listdir(folder) if f.startswith("ready-")])


def wait_for(condition, job, timeout, what):
    """Poll ``condition`` until true; fail with the job's output if it ends or ``timeout`` s pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if job.proc.poll() is not None:
            pytest.fail(f"{job.proc.args} exited {job.proc.returncode} before {what}\n{job.output_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}\n{job.output_tail()}")
        time.sleep(0.2)


def test_mpirun_job_past_its_timeout_is_stopped_whole(tmp_path, marker):
    with pytest.raises(pytest.fail.Exception, match=r"was stopped after 10 s \(its timeout\)"):
        run_ranks(2, ["-c", SLEEPER, str(tmp_path), marker], timeout=10)
    assert ready_ranks(tmp_path) == 2
    assert processes_with(marker) == []


def test_horovodrun_job_past_its_timeout_is_stopped_whole(tmp_path, marker):
    # horovodrun starts mpirun through a setsid'd middleman; start-up takes ~10 s.
    with pytest.raises(pytest.fail.Exception, match=r"was stopped after 25 s \(its timeout\)"):
        horovodrun(2, ["-c", SLEEPER, str(tmp_path), marker], timeout=25)
    assert ready_ranks(tmp_path) == 2
    assert processes_with(marker) == []


def test_job_with_the_wrong_exit_status_leaves_nothing_behind(tmp_path, marker):
    # The shell exits 3 once its child, in a session of its own, is running.
    script = ('setsid "$0" -c "$1" "$2" "$3" & '
              'until ls "$2"/ready-* >/dev/null 2>&1; do sleep 0.1; done; exit 3')
    with pytest.raises(pytest.fail.Exception, match="exited 3, expected 0"), \
            pytest.warns(UserWarning, match=r"exited 3 but left 1 process\(es\) running"):
        run_job(["bash", "-c", script, sys.executable, SLEEPER, str(tmp_path), marker], timeout=60)
    assert ready_ranks(tmp_path) == 1
    assert processes_with(marker) == []


def test_failing_rank_leaves_nothing_behind(tmp_path, marker):
    code = "import os, sys\nif os.environ['OMPI_COMM_WORLD_RANK'] == '0': sys.exit(4)\n" + SLEEPER
    with pytest.raises(pytest.fail.Exception, match="expected 0"):
        run_ranks(2, ["-c", code, str(tmp_path), marker], timeout=120)
    assert processes_with(marker) == []


INNER_TEST = """
import sys
sys.path.insert(0, {tests!r})
import pytest
from helpers import run_ranks

@pytest.mark.timeout({timeout})
def test_never_ends():
    run_ranks(2, ["-c", {sleeper!r}, {ready!r}, {marker!r}], timeout=600)
"""


def _inner_pytest(tmp_path, marker, timeout):
    """A pytest run (without tests/conftest.py, so not a subreaper) whose test never ends."""
    ready = tmp_path / "ready"
    ready.mkdir()
    test = tmp_path / "test_inner.py"
    test.write_text(INNER_TEST.format(tests=os.path.join(ROOT, "tests"), timeout=timeout, sleeper=SLEEPER,
                                      ready=str(ready), marker=marker))
    args = ["-c", os.path.join(ROOT, "pytest.ini"), "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q",
            "-n", "0", str(test)]  # in its own process, as a user's one test runs
    # Ctrl-C must reach it as KeyboardInterrupt even where this suite runs with
    # SIGINT ignored (a background job of a non-interactive shell), which Python
    # would otherwise inherit: restore the handler first.
    start = ("import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
             f"sys.exit(pytest.main({args!r}))")
    return [sys.executable, "-c", start], ready


def test_pytest_timeout_inside_the_helper_stops_the_job(tmp_path, marker):
    cmd, ready = _inner_pytest(tmp_path, marker, timeout=8)
    proc = run_job(cmd, timeout=120, expect_rc=1)
    assert "Timeout" in proc.stdout, proc.stdout[-3000:]
    assert ready_ranks(ready) == 2
    assert processes_with(marker) == []


def test_ctrl_c_during_the_helper_stops_the_job(tmp_path, marker):
    cmd, ready = _inner_pytest(tmp_path, marker, timeout=600)
    with started_job(cmd) as job:
        wait_for(lambda: ready_ranks(ready) == 2, job, 60, "2 ranks were ready")
        job.proc.send_signal(signal.SIGINT)
        job.proc.wait(30)
        assert "KeyboardInterrupt" in job.output()[0], job.output_tail()
    assert processes_with(marker) == []


def test_sigterm_to_demo_stops_its_whole_tree(tmp_path):
    """`kill DEMO_PID` mid-training: demo.sh exits 143 and everything it started is gone."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    env = dict(DEMO_IMAGES="200", DEMO_IMAGE_SIZE="40", DEMO_CROP="32", DEMO_EPOCHS="50", VENV=sys.prefix)
    with started_job(["bash", "scripts/demo.sh", "--runs-dir", str(runs), "--data", str(data)], **env) as job:
        wait_for(lambda: list(runs.glob("*/metrics.jsonl")), job, 120, "training started")
        tree = job.processes()
        ranks = [p for p in tree if p.name().startswith("python") and p.cmdline()[1:3] == ["-m", "chexnet.train"]]
        assert len(ranks) == 2, [p.cmdline() for p in tree]
        assert "mpirun" in [p.name() for p in tree], [p.cmdline() for p in tree]
        os.kill(job.proc.pid, signal.SIGTERM)  # demo.sh alone, as a scheduler or `kill PID` does
        try:
            assert job.proc.wait(30) == 143, job.output_tail()
        except subprocess.TimeoutExpired:
            pytest.fail(f"demo.sh still running 30 s after SIGTERM\n{job.output_tail()}")
        survivors = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not survivors, [p.cmdline() for p in survivors]
        assert job.processes() == []
        assert processes_with(str(tmp_path), anywhere=True) == []
