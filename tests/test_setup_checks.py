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


# --- setup.sh --preflight: the GPU build's needs, on stand-ins (no GPU, no CUDA needed) ----------

def _script(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


class Machine:
    """A temporary machine for setup.sh --preflight: stand-in nvidia-smi, nvcc, C++ compiler and NCCL."""

    def __init__(self, root):
        self.root, self.bin = root, root / "bin"
        self.bin.mkdir(parents=True)
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(root), "VENV": str(root / "venv"),
                    "SETUP_NVIDIA_DEVICE": str(root / "nvidia0"), "SETUP_DEFAULT_CUDA_HOME": str(root / "no-cuda")}

    def gpus(self):
        _script(self.bin / "nvidia-smi", "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
        return self

    def cuda(self, release="12.5", static_cudart=True, name="cuda"):
        home = self.root / name
        _script(home / "bin" / "nvcc", f"echo 'Cuda compilation tools, release {release}, V{release}.82'\n")
        (home / "lib64").mkdir(exist_ok=True)
        if static_cudart:
            (home / "lib64" / "libcudart_static.a").write_text("")
        self.env["HOROVOD_CUDA_HOME"] = str(home)
        return self

    def gcc(self, major):
        _script(self.bin / "c++", f'case "$1" in -dumpversion) echo {major};; *) echo "c++ (GCC) {major}.2.0";; esac\n')
        self.env["CXX"] = str(self.bin / "c++")
        return self

    def nccl(self, header=True, libs=("libnccl_static.a",)):
        home = self.root / "nccl"
        (home / "include").mkdir(parents=True)
        (home / "lib").mkdir()
        if header:
            (home / "include" / "nccl.h").write_text("#define NCCL_MAJOR 2\n")
        for lib in libs:
            (home / "lib" / lib).write_text("")
        self.env["HOROVOD_NCCL_HOME"] = str(home)
        return self

    def gpu_build(self, release="12.5", gcc=12):
        return self.gpus().cuda(release).gcc(gcc).nccl()

    def preflight(self, **env):
        proc = subprocess.run(["bash", SETUP, "--preflight"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**self.env, **env})
        return proc.returncode, proc.stdout, proc.stderr.strip()


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path)


def _refused(result, *phrases):
    rc, _, err = result
    assert rc != 0 and len(err.splitlines()) == 1, err  # one line saying what to do
    for phrase in phrases:
        assert phrase in err, err
    return err


@pytest.mark.parametrize("how", ["nvidia-smi", "device node"])
def test_a_gpu_machine_without_a_gpu_choice_is_refused_before_anything_is_installed(machine, how):
    if how == "nvidia-smi":
        machine.gpus()
    else:
        (machine.root / "nvidia0").write_text("")
    _refused(machine.preflight(), "has NVIDIA GPUs", "TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup",
             "HOROVOD_CPU_ONLY=1 make setup")


def test_a_cpu_build_on_a_gpu_machine_is_explicit_or_remembered(machine):
    machine.gpus()
    rc, out, _ = machine.preflight(HOROVOD_CPU_ONLY="1")
    assert rc == 0 and "HOROVOD_CPU_ONLY=1: building horovod for CPU" in out
    # A re-run (make test after HOROVOD_CPU_ONLY=1 make setup) keeps the last build's choice.
    (machine.root / "venv").mkdir()
    (machine.root / "venv" / ".horovod-gpu-operations").write_text("cpu\n")
    assert machine.preflight()[0] == 0
    _refused(machine.preflight(HOROVOD_CPU_ONLY="1", HOROVOD_GPU_OPERATIONS="NCCL"), "contradict")


def test_a_machine_without_gpus_needs_no_choice(machine):
    rc, out, _ = machine.preflight()
    assert rc == 0 and "CPU build: no GPU preflight needed" in out


def test_a_complete_toolkit_passes_and_and_cuda_implies_nccl(machine):
    machine.gpu_build()
    rc, out, err = machine.preflight(HOROVOD_GPU_OPERATIONS="NCCL", HOROVOD_BUILD_CUDA_CC_LIST="80,90")
    assert rc == 0, err
    assert "GPU preflight passed: CUDA 12.5" in out and "GCC 12" in out and "libnccl_static.a" in out, out
    rc, out, err = machine.preflight(TF_EXTRA="and-cuda")
    assert rc == 0 and "TF_EXTRA=and-cuda: building horovod with HOROVOD_GPU_OPERATIONS=NCCL" in out, out + err


def test_no_nvcc_says_tensorflows_cuda_wheels_cannot_build_horovod(machine):
    machine.gpus().gcc(12).nccl()
    _refused(machine.preflight(HOROVOD_GPU_OPERATIONS="NCCL"), "no nvcc", "HOROVOD_CUDA_HOME",
             "carry no nvcc and no static cudart and cannot build horovod")


def test_a_cuda_home_without_nvcc_or_static_cudart_is_refused(machine):
    machine.gpus().gcc(12).nccl()
    # What tensorflow[and-cuda] installs: site-packages/nvidia/cuda_nvcc holds ptxas, not nvcc.
    _script(machine.root / "nvidia" / "cuda_nvcc" / "bin" / "ptxas", "exit 0\n")
    _refused(machine.preflight(HOROVOD_GPU_OPERATIONS="NCCL", HOROVOD_CUDA_HOME=str(machine.root / "nvidia" / "cuda_nvcc")),
             "has no bin/nvcc", "cannot build horovod")
    machine.cuda(static_cudart=False)
    _refused(machine.preflight(HOROVOD_GPU_OPERATIONS="NCCL"), "no libcudart_static.a")


@pytest.mark.parametrize("release, gcc, accepted", [
    ("12.5", 13, True), ("12.5", 14, False), ("12.8", 14, True), ("11.8", 12, False), ("13.0", 15, True),
    ("13.0", 16, False), ("13.2", 16, True)])  # past the table: not refused, said so
def test_gcc_must_be_in_the_range_of_the_cuda_release(machine, release, gcc, accepted):
    machine.gpus().cuda(release).gcc(gcc).nccl()
    result = machine.preflight(HOROVOD_GPU_OPERATIONS="NCCL")
    if accepted:
        assert result[0] == 0, result
    else:
        _refused(result, f"nvcc {release} accepts GCC up to", f"is GCC {gcc}", "CXX=g++-")


def test_nccl_header_and_library_are_found_or_refused(machine):
    machine.gpus().cuda().gcc(12).nccl(header=False)
    _refused(machine.preflight(HOROVOD_GPU_OPERATIONS="NCCL"), "no nccl.h", "HOROVOD_NCCL_HOME")
    # NCCL's wheel: libnccl.so.2 alone, no static library and no unversioned link.
    wheel = Machine(machine.root / "wheel")
    wheel.gpus().cuda().gcc(12).nccl(libs=("libnccl.so.2",))
    _refused(wheel.preflight(HOROVOD_GPU_OPERATIONS="NCCL"), "libnccl.so.2 only", "HOROVOD_NCCL_LINK=SHARED")
    link = wheel.root / "nccl-link"
    link.mkdir()
    os.symlink(wheel.root / "nccl" / "lib" / "libnccl.so.2", link / "libnccl.so")
    rc, out, err = wheel.preflight(HOROVOD_GPU_OPERATIONS="NCCL", HOROVOD_NCCL_LINK="SHARED", HOROVOD_NCCL_LIB=str(link))
    assert rc == 0 and f"{link}/libnccl.so" in out, out + err


@pytest.mark.parametrize("env, phrase", [
    ({"HOROVOD_GPU_OPERATIONS": "CUDA"}, "is not one horovod knows"),
    ({"HOROVOD_GPU_OPERATIONS": "NCCL", "HOROVOD_BUILD_CUDA_CC_LIST": "8.0,9.0"}, "as digits, comma-separated"),
    ({"HOROVOD_GPU_OPERATIONS": "NCCL", "HOROVOD_BUILD_CUDA_CC_LIST": "70,80"}, "compute capability 75 and up")])
def test_bad_gpu_settings_are_refused_in_one_line(machine, env, phrase):
    machine.gpus().cuda("13.0").gcc(12).nccl()
    _refused(machine.preflight(**env), phrase)


# --- scripts/check_gpu_build.sh: horovod's GPU build compiles on a CPU machine ---------------------

spec = importlib.util.spec_from_file_location("check_gpu_build", os.path.join(ROOT, "scripts", "check_gpu_build.py"))
check_gpu_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_gpu_build)

BUILD_LOG = """-- The CUDA compiler identification is NVIDIA 13.0.88 with host compiler GNU 12.2.0
-- Found NCCL (include: /v/nvidia/nccl/include, library: /b/nccl-lib/libnccl.so)
-- HVD_NVCC_COMPILE_FLAGS = -O3 -gencode arch=compute_75,code=sm_75 -gencode arch=compute_90,code=\\"sm_90,compute_90\\"
"""


def test_the_build_log_must_show_cuda_nccl_and_every_compute_capability():
    assert "kernels for sm_75, sm_90" in check_gpu_build.check_build_log(BUILD_LOG, ["75", "90"])
    with pytest.raises(check_gpu_build.Failed, match="compute capability 80"):
        check_gpu_build.check_build_log(BUILD_LOG, ["75", "80", "90"])
    with pytest.raises(check_gpu_build.Failed, match="no 'Found NCCL'"):
        check_gpu_build.check_build_log(BUILD_LOG.replace("Found NCCL", "Could not find NCCL"), [])


def test_ldd_output_is_read_for_missing_libraries_and_symbols():
    out = ("\tlibnccl.so.2 => /v/nvidia/nccl/lib/libnccl.so.2 (0x1)\n\tlibcuda.so.1 => not found\n"
           "undefined symbol: _ZN10tensorflow8OpKernelD2Ev\t(/v/horovod/tensorflow/mpi_lib.so)\n")
    assert check_gpu_build.ldd_problems(out) == ({"libcuda.so.1"}, {"_ZN10tensorflow8OpKernelD2Ev"})


@pytest.mark.timeout(5400)
@pytest.mark.skipif(os.environ.get("MEDIMG_CHECK_GPU_BUILD") != "1",
                    reason="builds horovod with CUDA 13 and NCCL in a throwaway venv (tens of minutes, about 3 GB): "
                           "set MEDIMG_CHECK_GPU_BUILD=1 (MEDIMG_GPU_BUILD_DIR to reuse a folder)")
def test_horovods_gpu_build_compiles_links_and_ticks_nccl(tmp_path):
    folder = os.environ.get("MEDIMG_GPU_BUILD_DIR") or str(tmp_path / "gpu-build")
    result = run_job(["bash", os.path.join(ROOT, "scripts", "check_gpu_build.sh"), folder], timeout=5300)
    for line in ("ok: CUDA and NCCL compiled in", "hvd.cuda_built() and hvd.nccl_built() are true",
                 "ticks TensorFlow, MPI, Gloo and NCCL", "[check-gpu-build] passed"):
        assert line in result.stdout, result.stdout
