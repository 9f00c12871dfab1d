"""Run real multi-rank jobs from tests, with mpirun or horovodrun.

    from helpers import run_ranks
    run_ranks(2, ["tests/mpi_programs/collectives.py", "--out", str(tmp_path)])

A job that exits with another status than expected fails the test with the
tail of its stdout and stderr.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def job_env(**extra):
    env = dict(os.environ)
    # Open MPI refuses root without these; CI runs as root.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_job(cmd, timeout=600, expect_rc=0, **env):
    proc = subprocess.run(cmd, cwd=ROOT, env=job_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    if expect_rc is not None and proc.returncode != expect_rc:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect_rc}\n"
                    f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def run_ranks(np_, args, timeout=600, expect_rc=0, **env):
    """``mpirun -np NP python ARGS`` on this host."""
    mpirun = shutil.which("mpirun") or "mpirun"
    return run_job([mpirun, "-np", str(np_), "--oversubscribe", sys.executable, *args],
                   timeout, expect_rc, **env)


def horovodrun(np_, args, timeout=900, expect_rc=0, **env):
    """``horovodrun -np NP python ARGS`` with the venv's horovodrun."""
    return run_job([os.path.join(BIN, "horovodrun"), "-np", str(np_), sys.executable, *args],
                   timeout, expect_rc, **env)
