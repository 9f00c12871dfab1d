"""CheXNet pieces on tiny inputs: loss weighting, AUC, preprocessing, sharding arithmetic."""
import math

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from chexnet import auc, losses
from chexnet.data import Manifest
from chexnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess, to_stored_form


# ------------------------------------------------------------------ loss
def test_class_weights_follow_chexnet():
    w_pos, w_neg = losses.class_weights(positives=[10, 90, 0], images=100)
    assert w_pos == pytest.approx([0.9, 0.1, 1.0])   # N / (P + N)
    assert w_neg == pytest.approx([0.1, 0.9, 0.0])   # P / (P + N)


def test_weighted_bce_matches_a_hand_computation():
    w_pos, w_neg = np.array([0.9, 0.2]), np.array([0.1, 0.8])
    y = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    p = np.array([[0.8, 0.3], [0.4, 0.6]], np.float32)
    # image 1: -(0.9 ln 0.8) and -(0.8 ln 0.7); image 2: -(0.1 ln 0.6) and -(0.2 ln 0.6)
    by_hand = [(-0.9 * math.log(0.8) - 0.8 * math.log(0.7)) / 2,
               (-0.1 * math.log(0.6) - 0.2 * math.log(0.6)) / 2]
    got = losses.weighted_bce(w_pos, w_neg)(tf.constant(y), tf.constant(p)).numpy()
    assert got == pytest.approx(by_hand, rel=1e-5)
    assert losses.weighted_bce_numpy(y, p, w_pos, w_neg) == pytest.approx(np.mean(by_hand), rel=1e-5)


def test_weighted_bce_is_finite_at_saturated_probabilities():
    loss = losses.weighted_bce(np.ones(2), np.ones(2))
    value = loss(tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 1.0]])).numpy()
    assert np.isfinite(value).all() and value[0] > 10


# ------------------------------------------------------------------ AUC
def test_per_class_auc_equals_sklearn_and_skips_undefined_classes():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < [0.3, 0.05, 0.0]).astype(float)
    probs = rng.random((200, 3)) + labels * 0.5
    aucs = auc.per_class_auc(labels, probs)
    assert aucs[0] == pytest.approx(roc_auc_score(labels[:, 0], probs[:, 0]))
    assert aucs[1] == pytest.approx(roc_auc_score(labels[:, 1], probs[:, 1]))
    assert math.isnan(aucs[2])                         # no positives: undefined, not 0.5
    assert auc.mean_auc(aucs) == pytest.approx(np.mean(aucs[:2]))


def test_auc_table_has_intervals_around_the_estimate():
    rng = np.random.default_rng(1)
    labels = (rng.random((300, 2)) < 0.3).astype(float)
    probs = rng.random((300, 2)) + labels * 0.4
    rows = auc.auc_table(labels, probs, ["A", "B"], n_boot=200, seed=0)
    assert [r["pathology"] for r in rows] == ["A", "B", "Mean (2 classes)"]
    for r in rows:
        assert r["ci_low"] <= r["auc"] <= r["ci_high"]
    assert auc.markdown(rows).count("\n") == 4
    assert auc.csv_text(rows).splitlines()[1].startswith("A,")


# ------------------------------------------------------------------ preprocessing
def _image(size=8):
    return tf.constant(np.arange(size * size, dtype=np.uint8).reshape(size, size, 1) * 3)


def test_eval_is_the_normalised_centre_crop():
    img = _image()
    x = preprocess(img, crop=4, training=False).numpy()
    centre = img.numpy()[2:6, 2:6, 0].astype(np.float32) / 255.0
    assert x.shape == (4, 4, 3)
    for c in range(3):  # gray repeated to RGB, ImageNet mean/std per channel, /255 once
        assert x[..., c] == pytest.approx((centre - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-6)


def test_training_augmentation_is_seeded():
    img = _image()
    a = preprocess(img, 4, True, seed=tf.constant([1, 2], tf.int64)).numpy()
    b = preprocess(img, 4, True, seed=tf.constant([1, 2], tf.int64)).numpy()
    others = [preprocess(img, 4, True, seed=tf.constant([s, 2], tf.int64)).numpy() for s in range(3, 13)]
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, o) for o in others)


def test_prediction_input_takes_any_mode_and_shape():
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[:, 10:40, :3] = 200  # a bright centre square, dark side bands
    stored = to_stored_form(rgba, 20)
    assert stored.shape == (20, 20, 1) and stored.dtype == np.uint8
    assert stored.min() > 150  # the centre square was kept, the side bands cut off


# ------------------------------------------------------------------ sharding arithmetic
def _manifest(shard_records):
    shards = [{"file": f"train-{i:05d}-of-{len(shard_records):05d}.tfrecord", "records": n}
              for i, n in enumerate(shard_records)]
    return Manifest("x", {"class_order": ["A"], "options": {"image_size": 64},
                          "splits": {"train": {"images": sum(shard_records), "shards": shards,
                                               "positives": {"A": 1}}}})


def test_ranks_read_whole_files_when_there_are_enough():
    m = _manifest([100, 100, 90, 80])
    assert m.rank_record_counts("train", 2) == [190, 180]
    assert m.steps_per_epoch("train", 2, 16) == 180 // 16  # the smallest rank decides


def test_ranks_split_records_when_files_are_fewer_than_ranks():
    m = _manifest([101])
    assert m.rank_record_counts("train", 2) == [51, 50]
    assert sum(m.rank_record_counts("train", 4)) == 101


def test_too_few_images_for_the_batch_is_a_clear_error():
    from runtime.errors import UserError
    with pytest.raises(UserError, match="too few for 2 ranks x --per-rank-batch 64"):
        _manifest([50]).steps_per_epoch("train", 2, 64)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    from chexnet.model import build_model
    from runtime.errors import UserError
    with pytest.raises(UserError, match="no such file; use none, imagenet or a .h5 path"):
        build_model(32, 14, str(tmp_path / "absent.h5"))
