"""The layout's promises: model, data, transform and skeleton modules never load Horovod,
and the usage examples in the pure modules' docstrings run.

Checked by importing them one after another in a fresh interpreter and
looking at ``sys.modules`` after each: an indirect import (through a helper
module) counts too.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

HOROVOD_FREE = ["chexnet.model", "chexnet.preprocess", "chexnet.losses", "chexnet.auc", "chexnet.data",
                "chexnet.config", "chexnet.predict", "training.shards", "training.checkpoint",
                "training.report", "training.config", "training.prediction", "dataprep.records",
                "segmentation.model", "segmentation.preprocess", "segmentation.losses", "segmentation.metrics",
                "segmentation.data", "segmentation.config", "segmentation.predict", "training.paths",
                "training.manifest", "training.preflight", "segmentation.catalog", "chexnet.weights",
                "training.export", "training.card", "training.serving", "training.image_graph", "chexnet.export",
                "segmentation.export", "training.workload", "chexnet.workload", "segmentation.workload",
                "chexnet.grading", "segmentation.grading", "training.evaluation", "training.trainer"]

# What the entry points read before TensorFlow loads (the flags, the manifest, the output folders, the device
# rules): a bad input is refused without TensorFlow's start-up.
TENSORFLOW_FREE = ["runtime.config", "runtime.devices", "runtime.files", "runtime.precision", "training.config",
                   "training.manifest", "training.preflight", "training.paths", "chexnet.config", "chexnet.weights",
                   "segmentation.catalog", "segmentation.config", "dataprep.flags", "training.export", "training.card",
                   "chexnet.export", "segmentation.export", "training.workload", "chexnet.workload",
                   "segmentation.workload", "training.trainer", "training.evaluation", "chexnet.grading",
                   "segmentation.grading"]

PROBE = """
import importlib, json, sys
import runtime
prefix = sys.argv[1]
loaded = {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    loaded[name] = sorted(m for m in sys.modules if m.startswith(prefix))
print(json.dumps(loaded))
"""


def loads(prefix, modules):
    proc = subprocess.run([sys.executable, "-c", PROBE, prefix, *modules], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(loaded) == modules
    return {m: mods for m, mods in loaded.items() if mods}


def test_model_data_and_skeleton_modules_do_not_load_horovod():
    assert loads("horovod", HOROVOD_FREE) == {}


def test_what_is_checked_before_tensorflow_loads_does_not_load_it():
    assert loads("tensorflow", TENSORFLOW_FREE) == {}


# Pure modules whose docstrings hold ``>>>`` examples: run them, so the usage shown stays true.
DOCTESTED = ["training.shards", "segmentation.metrics", "runtime.throughput", "chexnet.auc"]


@pytest.mark.parametrize("module", DOCTESTED)
def test_usage_examples_in_docstrings_hold(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


PACKAGES = ("runtime", "training", "chexnet", "segmentation", "dataprep", "smoke")


def _project_imports():
    """{module: the project modules it imports anywhere in its file (lazy imports in functions too)}."""
    import ast
    graph = {}
    for package in PACKAGES:
        for path in sorted((Path(ROOT) / package).rglob("*.py")):
            module = ".".join(path.relative_to(Path(ROOT)).with_suffix("").parts).removesuffix(".__init__")
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.update(f"{node.module}.{a.name}" for a in node.names)
                    found.add(node.module)
            graph[module] = found
    return {m: {d for d in deps if d in graph and d != m and not m.startswith(d + ".") and d not in PACKAGES}
            for m, deps in graph.items()}


def test_no_import_circle_between_the_projects_modules():
    """An import circle, lazy or not, means two modules that cannot be read (or changed) one without the other."""
    graph = _project_imports()
    assert graph["training.loop"] >= {"training.elastic", "training.engine"}  # the walk sees real edges
    state, circles = {}, []

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep):] + [dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, circles
