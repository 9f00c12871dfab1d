"""The Workload interface (training.workload): every registered workload supplies every part, the registry
refuses an unknown name, and the shared code asks the workload instead of branching on its name."""
import ast
import inspect
from pathlib import Path

import pytest

from helpers import ROOT
from training import workload
from training.config import TrainConfig
from training.evaluation import EvalConfig
from training.workload import Workload

REQUIRED = [name for name, fn in inspect.getmembers(Workload, inspect.isfunction)
            if "raise NotImplementedError" in inspect.getsource(fn)]


@pytest.mark.parametrize("name", workload.names())
def test_each_workload_supplies_every_required_part(name):
    wl = workload.get(name)
    assert wl.name == name and wl.trainer == f"{name}.train"
    assert issubclass(wl.config, TrainConfig) and issubclass(wl.eval_config, EvalConfig)
    assert wl.datasets and wl.monitor and wl.mode in ("max", "min") and wl.columns
    assert wl.monitor in {key for _, key, _ in wl.columns}, "the figure that picks best.npz is in the table"
    missing = [part for part in REQUIRED if getattr(type(wl), part) is getattr(Workload, part)]
    assert REQUIRED and not missing, f"{name} lacks {missing}"
    parts = wl.export_parts()
    assert callable(parts.read_image) and callable(parts.describe)


def test_an_unknown_workload_is_named_with_the_registered_ones():
    with pytest.raises(KeyError, match="no workload 'unet'.*chexnet, segmentation"):
        workload.get("unet")


# The shared code: what is not a workload's own package.
SHARED = ["training", "runtime", "dataprep"]


def _name_branches(path):
    """(line, text) of each comparison or membership test against a registered workload's name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in workload.names() for o in operands):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_shared_code_does_not_branch_on_a_workload_name():
    branches = {f"{path.relative_to(ROOT)}:{line}": text
                for folder in SHARED for path in sorted((Path(ROOT) / folder).rglob("*.py"))
                for line, text in _name_branches(path)}
    assert branches == {}


def test_the_branch_finder_sees_a_branch_on_a_name(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('if args.workload == "chexnet":\n    pass\nx = "segmentation" in names\n')
    assert [line for line, _ in _name_branches(probe)] == [1, 3]
