"""Segmentation pieces on tiny inputs: per-image metrics, losses, augmentation that keeps image and mask aligned."""
import numpy as np
import pytest
import tensorflow as tf

from segmentation import losses, metrics
from segmentation.preprocess import augment, normalize


def _mask(rows):
    return np.array(rows, np.float32)[None, ..., None]


def _logits(rows):
    return np.where(np.array(rows, bool), 5.0, -5.0)[None, ..., None]


# ------------------------------------------------------------------ metrics
def test_metrics_equal_a_hand_computation_including_empty_masks():
    truth = np.concatenate([_mask([[1, 1, 0], [1, 0, 0], [0, 0, 0]]),    # 3 polyp pixels
                            _mask([[0, 0, 0], [0, 0, 0], [0, 0, 0]]),    # empty, predicted empty
                            _mask([[0, 0, 0], [0, 0, 0], [0, 0, 0]]),    # empty, 2 false positives
                            _mask([[1, 0, 0], [0, 0, 0], [0, 0, 0]])])   # 1 pixel, missed
    logits = np.concatenate([_logits([[1, 0, 0], [1, 1, 0], [0, 0, 0]]),  # tp 2, fp 1, fn 1
                             _logits([[0, 0, 0], [0, 0, 0], [0, 0, 0]]),
                             _logits([[0, 1, 1], [0, 0, 0], [0, 0, 0]]),
                             _logits([[0, 0, 0], [0, 0, 0], [0, 0, 0]])])
    counts = metrics.confusion_counts(truth, logits)
    assert counts.tolist() == [[2, 1, 1, 5], [0, 0, 0, 9], [0, 2, 0, 7], [0, 0, 1, 8]]
    got = metrics.per_image(counts)
    assert got["dice"] == pytest.approx([4 / 6, 1.0, 0.0, 0.0])        # 2TP / (2TP + FP + FN)
    assert got["iou"] == pytest.approx([2 / 4, 1.0, 0.0, 0.0])         # TP / (TP + FP + FN)
    assert got["precision"] == pytest.approx([2 / 3, 1.0, 0.0, 0.0])   # nothing predicted + empty truth: 1
    assert got["recall"] == pytest.approx([2 / 3, 1.0, 0.0, 0.0])      # empty truth: 1 only if nothing predicted
    assert metrics.summary(counts)["dice"] == pytest.approx((4 / 6 + 1) / 4)  # a mean over images, not pooled


def test_threshold_is_probability_one_half():
    truth = _mask([[1, 1]])
    z = np.array([1e-3, -1e-3], np.float32).reshape(1, 1, 2, 1)
    assert metrics.confusion_counts(truth, z).tolist() == [[1, 0, 1, 0]]


def test_bootstrap_interval_brackets_the_mean():
    rng = np.random.default_rng(0)
    counts = np.stack([rng.integers(0, 50, 200), rng.integers(0, 10, 200), rng.integers(0, 10, 200),
                       np.full(200, 100)], 1)
    for row in metrics.table(counts, n_boot=300, seed=1):
        assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["ci_high"] - row["ci_low"] < 0.2


# ------------------------------------------------------------------ losses
def test_dice_loss_is_per_image_and_zero_for_two_empty_masks():
    y = np.concatenate([_mask([[1, 1], [0, 0]]), _mask([[0, 0], [0, 0]])])
    z = np.concatenate([_logits([[1, 0], [0, 0]]), _logits([[0, 0], [0, 0]])]) * 4  # p ~ 1 or ~ 0
    got = losses.dice_loss(tf.constant(y), tf.constant(z)).numpy()
    assert got[0] == pytest.approx(1 - (2 * 1 + 1) / (1 + 2 + 1), abs=1e-6)  # smooth 1: (2*1 + 1) / (1 + 2 + 1)
    assert got[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("logit", [20.0, 100.0, 1000.0])
def test_bce_is_finite_and_keeps_its_gradient_on_confident_mistakes(logit):
    y = tf.constant(np.zeros((1, 1, 1, 1), np.float32))
    z = tf.Variable(np.full((1, 1, 1, 1), logit, np.float32))
    with tf.GradientTape() as tape:
        loss = losses.dice_bce_loss(y, z)
    grad = tape.gradient(loss, z).numpy().item()
    assert np.isfinite(loss.numpy()).all() and grad > 0.9  # d softplus(z)/dz -> 1


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="choose one of dice_bce, dice, bce"):
        losses.build_loss("focal")


# ------------------------------------------------------------------ augmentation
def _marker(size=64):
    """A red asymmetric marker on black; the mask is the marker."""
    mask = np.zeros((size, size), np.uint8)
    mask[8:20, 10:40] = 1          # a bar near the top
    mask[20:50, 10:18] = 1         # and a leg on the left: no symmetry maps it onto itself
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = mask * 255
    return tf.constant(image), tf.constant(mask[..., None])


def test_augmentation_moves_image_and_mask_together():
    image, mask = _marker()
    moved = 0
    for k in range(12):
        x, y = augment(image, mask, tf.constant([k, 7], tf.int64))
        y = y.numpy()[..., 0]
        assert set(np.unique(y)) <= {0.0, 1.0}  # nearest: the mask stays binary
        assert x.dtype == tf.uint8  # rounded back: a byte a pixel to the device
        red = x.numpy()[..., 0] > 127
        inner = y == 1
        assert (red == inner).mean() > 0.97, k  # only the bilinear edge pixels may differ
        moved += not np.array_equal(y, mask.numpy()[..., 0].astype(np.float32))
    assert moved >= 8  # the flips, rotations and zooms did change the geometry


def test_augmentation_is_seeded_and_evaluation_only_scales():
    image, mask = _marker()
    a = augment(image, mask, tf.constant([3, 4], tf.int64))
    b = augment(image, mask, tf.constant([3, 4], tf.int64))
    c = augment(image, mask, tf.constant([3, 5], tf.int64))
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and not np.array_equal(a[0].numpy(), c[0].numpy())
    assert normalize(image).numpy().max() == pytest.approx(1.0)


def test_a_rank_without_images_yields_empty_rows_of_the_right_shape():
    """The gather of a rank with no records still has the keys and shapes of the others."""
    none = np.zeros((0, 8, 8, 1), np.float32)
    assert metrics.confusion_counts(none, none).shape == (0, 4)
    assert losses.dice_bce_loss(tf.constant(none), tf.constant(none)).numpy().shape == (0,)


def test_a_size_the_chosen_network_cannot_take_is_a_one_line_error():
    from runtime.config import parse_args
    from runtime.errors import UserError
    from segmentation.config import SegmentationConfig
    parse_args(SegmentationConfig, ["--model", "unet", "--synthetic-size", "48"])
    with pytest.raises(UserError, match=r"^--synthetic-size 48: segnet needs a multiple of 32, at least 32 \(it "
                                        r"halves the image 5 times\); e\.g\. 32; rewrite the records"):
        parse_args(SegmentationConfig, ["--model", "segnet", "--synthetic-size", "48"])


def test_the_catalog_names_every_network_and_loss_and_which_cannot_train_deterministically_on_gpu():
    from segmentation import catalog, losses, model
    assert set(catalog.DOWNSAMPLING) == set(model.MODELS) and list(catalog.LOSS_NAMES) == list(losses.LOSSES)
    import tf_keras as keras
    for name in model.MODELS:
        assert catalog.determinism_problem(name, "CPU") is None
        net = model.build_model(name, 32)
        nearest = any(isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"
                      for layer in net.layers)
        assert (catalog.determinism_problem(name, "GPU:0") is not None) == nearest, name
    assert "ResizeNearestNeighborGrad" in catalog.determinism_problem("resunetpp", "GPU:1")
