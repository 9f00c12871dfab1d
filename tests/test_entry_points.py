"""``--help`` of every entry point: exit 0, a usage text, no traceback.

The shell stages print exactly their leading comment block, never lines of
their code. Python entry points are found, not listed: every module with a
``__main__`` block under ENTRY_POINT_FOLDERS, so a new one is covered at once.
They run in parallel, as each imports TensorFlow (5-10 s).
"""
import concurrent.futures
import glob
import os
import re
import sys

import pytest

from helpers import ROOT, run_job

SHELL_STAGES = ["download_dataset.sh", "extract_images.sh", "write_tfrecords.sh", "scripts/demo.sh",
                "job_submissions/local/launch.sh"]
ENTRY_POINT_FOLDERS = ["chexnet", "smoke", "dataprep", "benchmarks", "scripts", "segmentation"]
MAIN_BLOCK = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)


def python_entry_points():
    """{relative path: command} for each module with a ``__main__`` block."""
    found = {}
    for folder in ENTRY_POINT_FOLDERS:
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)):
            with open(path) as f:
                if not (path.endswith("__main__.py") or MAIN_BLOCK.search(f.read())):
                    continue
            rel = os.path.relpath(path, ROOT)
            if os.path.isfile(os.path.join(os.path.dirname(path), "__init__.py")):  # in a package
                module = rel[:-len(".py")].replace(os.sep, ".").removesuffix(".__main__")
                found[rel] = [sys.executable, "-m", module]
            else:
                found[rel] = [sys.executable, rel]
    return found


PYTHON_ENTRY_POINTS = python_entry_points()


def test_the_known_entry_points_are_found():
    assert {"chexnet/train.py", "chexnet/evaluate.py", "chexnet/predict.py", "smoke/train.py",
            "dataprep/chestxray14/tfrecords.py", "dataprep/extract.py",
            "scripts/check_horovod.py", "segmentation/train.py", "segmentation/evaluate.py",
            "segmentation/predict.py", "dataprep/kvasir_seg/tfrecords.py",
            "dataprep/kvasir_seg/synthetic.py"} <= set(PYTHON_ENTRY_POINTS)


@pytest.fixture(scope="module")
def python_helps():
    """{relative path: CompletedProcess of ``COMMAND --help``}, run in parallel."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {rel: pool.submit(run_job, [*cmd, "--help"], timeout=300, expect_rc=None)
                   for rel, cmd in PYTHON_ENTRY_POINTS.items()}
        return {rel: future.result() for rel, future in futures.items()}


@pytest.mark.parametrize("rel", sorted(PYTHON_ENTRY_POINTS))
def test_python_help(python_helps, rel):
    proc = python_helps[rel]
    shown = f"{' '.join(proc.args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert proc.stdout.startswith("usage: "), shown


def leading_comment_block(path):
    """Lines 2 to the first line that is not a comment, without their ``# ``."""
    with open(path) as f:
        lines = f.read().splitlines()[1:]
    block = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(re.sub(r"^# ?", "", line))
    return block


@pytest.mark.parametrize("script", SHELL_STAGES)
def test_shell_help_is_the_leading_comment_block(script):
    proc = run_job(["bash", script, "--help"], timeout=60)
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith("Usage: "), proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    code = [line for line in lines if line.startswith("set -") or "$(" in line]
    assert not code, f"{script} --help prints lines of its code: {code}"
    assert lines == leading_comment_block(os.path.join(ROOT, script))
