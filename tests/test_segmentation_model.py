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


VGG16 = (64, 128, 256, 512, 512)


def _vgg16_encoder(channels, filters):
    total, c_in = 0, channels
    for f, convs in zip(filters, (2, 2, 3, 3, 3)):
        for _ in range(convs):
            total, c_in = total + _conv_bn(c_in, f), f
    return total


def _fcn8s_params(channels, filters, fc):
    heads = _conv(7, filters[-1], fc) + _conv(1, fc, fc) + _conv(1, fc, 1)  # fc6, fc7, class score
    skips = _conv(1, filters[3], 1) + _conv(1, filters[2], 1)             # scores from pool4 and pool3
    upsampling = 4 * 4 + 4 * 4 + 16 * 16                                    # 2x, 2x, 8x; one channel, no bias
    return _vgg16_encoder(channels, filters) + heads + skips + upsampling


def _segnet_params(channels, filters):
    decoder, widths = 0, list(zip(filters, (2, 2, 3, 3, 3)))[::-1]
    for i, (f, convs) in enumerate(widths):
        out = widths[i + 1][0] if i + 1 < len(widths) else f
        decoder += (convs - 1) * _conv_bn(f, f) + _conv_bn(f, out)
    return _vgg16_encoder(channels, filters) + decoder + _conv(1, filters[0], 1)


def test_fcn8s_and_segnet_parameter_counts_match_the_papers_at_vgg16_widths():
    """FCN-VGG16 is 134 M parameters (Long et al., table 1), SegNet 29.5 M (Badrinarayanan et al., table 6)."""
    fcn = build_model("fcn8s", 224, filters=VGG16, fc=4096)
    assert count_params(fcn) == _fcn8s_params(3, VGG16, 4096) == 134_282_595
    segnet = build_model("segnet", 224, filters=VGG16)
    assert count_params(segnet) == _segnet_params(3, VGG16) == 29_496_129
    keras.backend.clear_session()
    assert count_params(build_model("fcn8s", 256)) == _fcn8s_params(3, (32, 64, 128, 256, 256), 1024)
    assert count_params(build_model("segnet", 256)) == _segnet_params(3, (32, 64, 128, 256, 256))


def test_segnet_unpooling_puts_each_value_where_the_encoder_took_its_maximum():
    from segmentation.model import PoolSwitch
    x = np.array([[1, 5, 0, 2], [3, 4, 9, 1], [8, 0, 1, 1], [2, 7, 3, 6]], np.float32)[None, ..., None]
    switch = PoolSwitch()(x).numpy()[0, ..., 0]
    assert switch.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    # Ties (an all-zero window after ReLU; equal values): one position, the first in row-major order.
    ties = np.array([[0, 0, 2, 1], [0, 0, 2, 2], [3, 1, 5, 5], [3, 3, 5, 5]], np.float32)[None, ..., None]
    assert PoolSwitch()(np.concatenate([ties, 1 - ties], -1)).numpy()[0, ..., 0].tolist() == \
        [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_fcn_upsampling_starts_as_bilinear_interpolation():
    from segmentation.model import bilinear_upsampling
    ramp = np.arange(8, dtype=np.float32).reshape(1, 1, 8, 1).repeat(8, axis=1)  # a linear image
    up = bilinear_upsampling(2)(ramp).numpy()[0, ..., 0]
    assert up.shape == (16, 16)
    # Away from the border, upsampling a linear ramp gives the ramp at half steps.
    assert np.allclose(np.diff(up[4:12, 2:14], axis=1), 0.5)
    assert np.allclose(up[4:12], up[4])


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


def test_a_size_the_network_cannot_halve_enough_is_refused():
    with pytest.raises(ValueError, match=r"image size 100: resunetpp needs a multiple of 8, at least 32 "
                                         r"\(it halves the image 3 times\); e\.g\. 96"):
        build_model("resunetpp", 100)
    with pytest.raises(ValueError, match="unet needs a multiple of 16"):
        build_model("unet", 72)
    for name in ("fcn8s", "segnet"):
        with pytest.raises(ValueError, match=f"{name} needs a multiple of 32.*halves the image 5 times.*e.g. 64"):
            build_model(name, 80)


def test_unknown_model_name_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'segformer': choose one of fcn8s, resunetpp, segnet, unet"):
        build_model("segformer", 256)


def test_the_module_does_not_import_horovod():
    code = "import runtime, sys, segmentation.model; print(any(m.startswith('horovod') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def _train(model, steps, start, restarted=True):
    """``steps`` deterministic batches from batch ``start``; ``restarted``: in a new process, whose global
    seed is set again (as distributed.init does)."""
    import tensorflow as tf
    if restarted:
        keras.utils.set_random_seed(3)
    rng = np.random.default_rng(start)
    x = rng.random((steps * 2, 32, 32, 3)).astype("float32")
    y = (rng.random((steps * 2, 32, 32, 1)) > 0.5).astype("float32")
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(2), epochs=1, verbose=0)


TINY = {"resunetpp": {"filters": (4, 4, 8, 8, 8)}, "unet": {"filters": (4, 4, 8, 8, 8)},
        "fcn8s": {"filters": (4, 4, 8, 8, 8), "fc": 16}, "segnet": {"filters": (4, 4, 8, 8, 8)}}


def _compiled(name):
    from segmentation.model import set_dropout_streams
    keras.utils.set_random_seed(1)
    model = build_model(name, 32, **TINY[name])
    set_dropout_streams(model, seed=0, rank=0)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_resumed_from_a_checkpoint_matches_an_uninterrupted_run_bit_for_bit(name, tmp_path):
    """Every network, dropout included: 2 steps, checkpoint.save, 2 more steps equal 2 steps after
    checkpoint.restore in a model built again (and the global seed set again, as a new process would)."""
    import tensorflow as tf
    from training import checkpoint
    tf.config.experimental.enable_op_determinism()
    whole = _compiled(name)
    _train(whole, 2, 0)
    checkpoint.save(str(tmp_path / "last.npz"), whole, {"epoch": 1, "lr": 1e-3})
    _train(whole, 2, 1, restarted=False)
    resumed = _compiled(name)
    checkpoint.restore(str(tmp_path / "last.npz"), resumed)
    _train(resumed, 2, 1)
    same = [np.array_equal(a, b) for a, b in zip(whole.get_weights(), resumed.get_weights())]
    assert all(same), f"{same.count(False)} of {len(same)} weight arrays differ"


def test_each_rank_drops_its_own_units():
    import tensorflow as tf
    from segmentation.model import CountedDropout, set_dropout_streams
    x = tf.ones((1, 8, 8, 16))
    masks = []
    for rank in (0, 1, 0):
        model = keras.Sequential([keras.layers.Input((8, 8, 16)), CountedDropout(0.5)])
        set_dropout_streams(model, seed=0, rank=rank)
        masks.append(model(x, training=True).numpy() > 0)
    assert not np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2])
    assert 0.4 < masks[0].mean() < 0.6
    assert np.array_equal(model(x, training=False).numpy(), x.numpy())
