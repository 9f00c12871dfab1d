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


@pytest.mark.parametrize("name", workload.names())
def test_the_device_model_takes_uint8_batches_and_is_the_network_behind_normalise(name, tmp_path):
    """Workload.device_model: a batch as the datasets yield it (uint8, the workload's stored channels) gives
    what the network gives on the normalised float32 batch, through the network's own weights in their order,
    so a checkpoint of the model that trained is the network's (and --init-from still goes layer by layer)."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from training import checkpoint
    wl = workload.get(name)
    network = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv"),
                                keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(1, name="head")])
    model = wl.device_model(network)
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, wl.stored_channels), dtype=np.uint8)
    assert model.input.dtype == tf.uint8 and tuple(model.input.shape) == (None, 8, 8, wl.stored_channels)
    assert np.array_equal(model(x).numpy(), network(wl.normalise(tf.constant(x))).numpy())
    assert wl.normalise(tf.constant(x)).dtype == tf.float32
    assert [id(v) for v in model.weights] == [id(v) for v in network.weights]
    model.compile(keras.optimizers.Adam(), "mse")
    model.optimizer.build(model.trainable_variables)
    checkpoint.save(str(tmp_path / "c.npz"), model, {"epochs_done": 0})
    fresh = keras.models.clone_model(network)
    report = checkpoint.init_from(str(tmp_path / "c.npz"), wl.device_model(fresh))
    assert report == {"loaded": ["conv", "bn", "head"], "fresh": []}
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), network.get_weights()))
