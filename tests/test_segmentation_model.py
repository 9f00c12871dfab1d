"""Segmentation models: parameter counts at 256x256x3, output shape and dtype on tiny inputs, errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

from segmentation.model import MODELS, build_model, count_params

REPO = Path(__file__).resolve().parents[1]

# The authors' Keras ResUNet++ (github.com/DebeshJha/ResUNetPlusPlus, m_resunet.py,
# filters 16..256), rebuilt layer by layer at 256x256x3 and counted by formula,
# has exactly this many parameters; the paper (arXiv:1911.07067) rounds it to 4.07 M.
RESUNETPP_PARAMS = 4_070_385
# BatchNorm channels, each with 2 non-trainable moving statistics. Residual unit
# in->out: BN(in) BN(out) + shortcut BN(out); attention (skip g, decoder x): BN(g) BN(x) BN(x).
RESUNETPP_BN_CHANNELS = sum([
    16 + 16,                                              # stem: conv-BN, shortcut BN
    16 + 32 + 32, 32 + 64 + 64, 64 + 128 + 128,           # encoder residual units
    4 * 256,                                              # ASPP bridge: 4 branches
    64 + 256 + 256, 320 + 128 + 128,                      # decoder 1: attention, residual unit
    32 + 128 + 128, 160 + 64 + 64,                        # decoder 2
    16 + 64 + 64, 80 + 32 + 32,                           # decoder 3
    4 * 16,                                               # final ASPP
])


def test_resunetpp_has_the_reference_parameter_count():
    model = build_model("resunetpp", 256)
    assert count_params(model) == RESUNETPP_PARAMS
    non_trainable = sum(w.shape.num_elements() for w in model.non_trainable_weights)
    assert non_trainable == 2 * RESUNETPP_BN_CHANNELS


def _conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out  # kernel + bias


def _conv_bn(c_in, c_out):
    return _conv(3, c_in, c_out) + 4 * c_out  # BN: gamma, beta, moving mean, moving variance


def _double_conv(c_in, c_out):
    return _conv_bn(c_in, c_out) + _conv_bn(c_out, c_out)


def _unet_params(channels, filters):
    down, c_in = 0, channels
    for f in filters:  # the last width is the bottleneck
        down, c_in = down + _double_conv(c_in, f), f
    up, below = 0, filters[-1]
    for f in reversed(filters[:-1]):
        up += _conv(2, below, f)          # 2x2 transposed conv, stride 2
        up += _double_conv(2 * f, f)      # on [skip, upsampled]
        below = f
    return down + up + _conv(1, filters[0], 1)  # 1x1 conv to the logit


def test_unet_parameter_count_matches_a_hand_derivation():
    model = build_model("unet", 256)
    assert count_params(model) == _unet_params(3, (32, 64, 128, 256, 512)) == 7_771_873


@pytest.fixture(params=["float32", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_map_images_to_float32_logits_of_the_same_size(name, policy):
    model = build_model(name, 64)
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first_conv.compute_dtype == ("bfloat16" if policy == "mixed_bfloat16" else "float32")
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    out = model(images, training=False)
    assert out.shape == (2, 64, 64, 1)
    assert out.dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    assert np.isfinite(out.numpy()).all()


def test_size_not_divisible_by_16_is_refused():
    with pytest.raises(ValueError, match=r"image size 100 is not a multiple of 16.*use e\.g\. 96"):
        build_model("resunetpp", 100)
    with pytest.raises(ValueError, match="not a multiple of 16"):
        build_model("unet", 72)


def test_unknown_model_name_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'segformer': choose one of resunetpp, unet"):
        build_model("segformer", 256)


def test_the_module_does_not_import_horovod():
    code = "import runtime, sys, segmentation.model; print(any(m.startswith('horovod') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
