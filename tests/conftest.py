"""Shared test helpers: run real multi-rank jobs with mpirun or horovodrun.

    def test_x(run_ranks, tmp_path):
        proc = run_ranks(2, ["tests/mpi_programs/collectives.py", "--out", str(tmp_path)])
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def job_env():
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return env


def run_job(cmd, timeout=600, expect_rc=0):
    proc = subprocess.run(cmd, cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=timeout)
    if expect_rc is not None and proc.returncode != expect_rc:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect_rc}\n"
                    f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture
def run_ranks():
    """Run ``python ARGS`` on ``np`` real MPI ranks (mpirun, one host)."""
    def run(np_, args, timeout=600, expect_rc=0):
        cmd = [os.path.join(BIN, "mpirun"), "-np", str(np_), "--oversubscribe",
               sys.executable, *args]
        if not os.path.exists(cmd[0]):
            cmd[0] = "mpirun"
        return run_job(cmd, timeout, expect_rc)
    return run


@pytest.fixture
def horovodrun():
    def run(np_, args, timeout=900, expect_rc=0):
        return run_job([os.path.join(BIN, "horovodrun"), "-np", str(np_), sys.executable, *args],
                       timeout, expect_rc)
    return run
