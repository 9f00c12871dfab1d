"""The GPU acceptance check on a CPU machine: its arguments, its refusal without a GPU, and a failed build check
reported in its table (a fake nvidia-smi lists GPUs that TensorFlow cannot see)."""
import os
import subprocess

import pytest

from helpers import ROOT, job_env

SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")
FAKE_SMI = "#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 550.54.15'\necho 'NVIDIA H100 80GB HBM3, 550.54.15'\n"


def check(*args, path_dir=None, timeout=120):
    env = job_env()
    env["PATH"] = f"{path_dir}:{env['PATH']}" if path_dir else ":".join(
        p for p in env["PATH"].split(":") if not os.path.exists(os.path.join(p, "nvidia-smi")))
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def fake_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("args, message", [
    (["--gpus", "65"], "--gpus must be between 1 and 64, got 65"),
    (["--steps", "2"], "--steps must be between 5 and 1000, got 2"),
    ([], "no NVIDIA GPU on this node (nvidia-smi not found): run the check on a GPU node"),
])
def test_bad_arguments_and_a_node_without_gpus_are_one_line(args, message):
    proc = check(*args)
    assert proc.returncode == 2 and proc.stderr.strip() == f"gpu_check: error: {message}" or (
        proc.stderr.strip().startswith(f"gpu_check: error: {message}")), proc.stderr


def test_more_gpus_than_listed_and_an_existing_out_are_refused(tmp_path):
    bin_dir = fake_smi(tmp_path)
    proc = check("--gpus", "3", "--out", str(tmp_path / "new"), path_dir=bin_dir)
    assert proc.returncode == 2 and "--gpus 3: nvidia-smi lists 2 GPU(s) on this node" in proc.stderr
    proc = check("--out", str(bin_dir), path_dir=bin_dir)
    assert proc.returncode == 2 and "exists: the check writes a folder of its own" in proc.stderr


@pytest.mark.slow
def test_gpus_tensorflow_cannot_see_fail_the_build_check_and_the_table_says_so(tmp_path):
    out = tmp_path / "check"
    proc = check("--out", str(out), path_dir=fake_smi(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    table = (out / "gpu_check.md").read_text()
    assert "2 x NVIDIA H100 80GB HBM3, driver 550.54.15" in table
    assert "| TensorFlow sees 2 GPU(s) | FAIL | 0 seen |" in table and "| horovod built with NCCL | FAIL |" in table
    assert "benchmark mode" not in table  # nothing runs on a build that failed its check
    assert "1 of 3 checks passed" in proc.stdout  # TensorFlow's Linux wheel is built with CUDA
