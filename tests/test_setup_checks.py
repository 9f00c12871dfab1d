"""The checks scripts/setup.sh uses to decide whether horovod must be rebuilt."""
import contextlib
import importlib.util
import json
import os
import pathlib
import pwd
import re
import shutil
import subprocess
import tempfile

import pytest

from helpers import ROOT, run_job

spec = importlib.util.spec_from_file_location("check_horovod", os.path.join(ROOT, "scripts", "check_horovod.py"))
check_horovod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_horovod)

GOOD = """Available Frameworks:
    [X] TensorFlow
    [ ] PyTorch
Available Controllers:
    [X] MPI
    [X] Gloo
"""


def test_check_build_parsing():
    assert check_horovod.missing_parts(GOOD) == []
    assert check_horovod.missing_parts(GOOD.replace("[X] Gloo", "[ ] Gloo")) == ["Gloo"]
    assert check_horovod.missing_parts("") == ["TensorFlow", "MPI", "Gloo"]


def test_gpu_path_requires_nccl():
    # A CPU-only horovod on a machine set up with HOROVOD_GPU_OPERATIONS=NCCL is rebuilt.
    assert check_horovod.missing_parts(GOOD, "NCCL") == ["NCCL"]
    assert check_horovod.missing_parts(GOOD + "    [X] NCCL\n", "NCCL") == []


def _site(tmp_path, built_tf):
    (tmp_path / "horovod").mkdir()
    (tmp_path / "horovod" / "metadata.json").write_text(json.dumps({"tensorflow": built_tf}))
    return str(tmp_path)


def test_build_against_other_tensorflow_is_detected(tmp_path):
    why = check_horovod.metadata_problem(_site(tmp_path, "2.15.1"), "2.18.1")
    assert why == "horovod was built against TensorFlow 2.15.1, TensorFlow 2.18.1 is installed"


def test_matching_build_passes(tmp_path):
    assert check_horovod.metadata_problem(_site(tmp_path, "2.18.1"), "2.18.1") is None


def test_missing_horovod_is_detected(tmp_path):
    assert check_horovod.metadata_problem(str(tmp_path), "2.18.1") == "horovod is not installed"


def test_installed_environment_is_good():
    # The venv running these tests was made by make setup: it must pass its own check.
    import sysconfig
    assert check_horovod.problem("0.28.1", sysconfig.get_paths()["purelib"]) is None


# --- setup.sh: the cmake the horovod build uses, as a user without root -------------------------

SETUP = os.path.join(ROOT, "scripts", "setup.sh")
# What setup.sh and its system-package check call; everything else on PATH is left out.
NEEDED_TOOLS = ("bash", "env", "dirname", "id", "sed", "head", "cat", "grep", "tr", "cut", "tail", "sha256sum",
                "mpicxx", "mpirun", "g++", "gcc", "make", "ls", "uname", "mkdir")


def _tool_farm(folder, extra=()):
    """A folder of links to the tools setup.sh needs, with no cmake among them (PATH for a user without one)."""
    folder.mkdir()
    for name in NEEDED_TOOLS:
        found = shutil.which(name)
        if found:
            os.symlink(os.path.realpath(found), folder / name)
    for name, target in extra:
        os.symlink(target, folder / name)
    return str(folder)


def _system_python():
    # An interpreter a user without root can run: pyenv's lives under /root.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK) and subprocess.run(
                [candidate, "-c", "import sys, venv, ensurepip; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 12))"]
        ).returncode == 0:
            return candidate
    return None


@contextlib.contextmanager
def _user_without_root():
    """(run-as prefix, uid): a throwaway user made with useradd when root, else the caller itself."""
    if os.geteuid() != 0:
        yield [], os.geteuid()
        return
    if not (shutil.which("useradd") and shutil.which("runuser")):
        pytest.skip("root without useradd/runuser: cannot make a user without root")
    name = f"medimg-t{os.getpid()}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        yield ["runuser", "-u", name, "--"], pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def _as_user(prefix, env, *args):
    # env -i: the user's environment is what the test gives, nothing of root's; run_job stops the tree on timeout.
    return run_job([*prefix, "env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", SETUP, *args], timeout=300)


@pytest.fixture
def shared_tmp():
    # pytest's own tmp_path sits in a folder only root may enter: the user gets one under /tmp.
    folder = tempfile.mkdtemp(prefix="medimg-nonroot-")
    os.chmod(folder, 0o755)
    try:
        yield pathlib.Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_setup_as_a_user_without_root_builds_with_a_cmake_older_than_4(shared_tmp):
    # PyPI's newest cmake is 4.x, which refuses Gloo's CMakeLists: every non-root build used to fail.
    python = _system_python()
    if python is None:
        pytest.skip("no Python 3.9-3.12 outside /root for a user without root (install python3-venv)")
    if not (shutil.which("mpicxx") and shutil.which("mpirun")):
        pytest.skip("Open MPI is not installed (make setup installs it as root)")
    with _user_without_root() as (prefix, uid):
        tmp_path = shared_tmp
        work = tmp_path / "user"
        work.mkdir()
        os.chown(work, uid, -1)
        fake4 = work / "cmake4"
        fake4.write_text("#!/bin/sh\necho 'cmake version 4.1.2'\n")
        fake4.chmod(0o755)
        env = {"HOME": str(work), "VENV": str(work / "venv"), "PYTHON": python, "SETUP_NVIDIA_DEVICE": "/nonexistent",
               "PATH": _tool_farm(tmp_path / "bin")}
        env.update({k: os.environ[k] for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "http_proxy", "https_proxy")
                    if k in os.environ})
        proc = _as_user(prefix, env, "--which-cmake")
        chosen = re.search(r"cmake for the horovod build: (\S+) (\d+)\.(\d+)", proc.stdout)
        assert chosen and chosen.group(1) == f"{work}/venv/bin/cmake" and chosen.group(2) == "3", proc.stdout
        # A cmake 4 of the user's on PATH (pip install --user cmake) is passed over for the venv's.
        env["PATH"] = _tool_farm(tmp_path / "bin4", extra=[("cmake", str(fake4))])
        proc = _as_user(prefix, env, "--which-cmake")
        assert f"cmake for the horovod build: {work}/venv/bin/cmake 3." in proc.stdout, proc.stdout + proc.stderr
    # A system cmake 3.13+ is used as it is.
    system_cmake = shutil.which("cmake")
    if system_cmake and subprocess.run([system_cmake, "--version"], capture_output=True, text=True).stdout.startswith("cmake version 3."):
        env["PATH"] = _tool_farm(tmp_path / "bin3", extra=[("cmake", os.path.realpath(system_cmake))])
        proc = _as_user([], env, "--which-cmake")  # root now: the user is gone
        assert f"cmake for the horovod build: {tmp_path}/bin3/cmake 3." in proc.stdout, proc.stdout + proc.stderr
