"""The layout's promises: model, data, transform and skeleton modules never load Horovod,
and the usage examples in the pure modules' docstrings run.

Checked by importing them one after another in a fresh interpreter and
looking at ``sys.modules`` after each: an indirect import (through a helper
module) counts too.
"""
import json
import subprocess
import sys

import pytest

from helpers import ROOT

HOROVOD_FREE = ["chexnet.model", "chexnet.preprocess", "chexnet.losses", "chexnet.auc", "chexnet.data",
                "chexnet.config", "chexnet.predict", "training.shards", "training.checkpoint",
                "training.report", "training.config", "training.prediction", "dataprep.records",
                "segmentation.model", "segmentation.preprocess", "segmentation.losses", "segmentation.metrics",
                "segmentation.data", "segmentation.config", "segmentation.predict"]

PROBE = """
import importlib, json, sys
import runtime
loaded = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded[name] = sorted(m for m in sys.modules if m.startswith("horovod"))
print(json.dumps(loaded))
"""


def test_model_data_and_skeleton_modules_do_not_load_horovod():
    proc = subprocess.run([sys.executable, "-c", PROBE, *HOROVOD_FREE], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(loaded) == HOROVOD_FREE
    assert {m: mods for m, mods in loaded.items() if mods} == {}


# Pure modules whose docstrings hold ``>>>`` examples: run them, so the usage shown stays true.
DOCTESTED = ["training.shards", "segmentation.metrics", "runtime.throughput", "chexnet.auc"]


@pytest.mark.parametrize("module", DOCTESTED)
def test_usage_examples_in_docstrings_hold(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
