"""CheXNet pieces on tiny inputs: loss weighting, AUC, preprocessing, sharding arithmetic."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import ndtr
from sklearn.metrics import roc_auc_score

from chexnet import auc, losses
from chexnet.data import train_dataset
from training.config import Pipeline
from training.shards import Manifest, rank_pieces, rank_records
from chexnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess, read_stored


# ------------------------------------------------------------------ loss
def test_class_weights_follow_chexnet():
    w_pos, w_neg = losses.class_weights(positives=[10, 90, 0], images=100)
    assert w_pos == pytest.approx([0.9, 0.1, 1.0])   # N / (P + N)
    assert w_neg == pytest.approx([0.1, 0.9, 0.0])   # P / (P + N)


def _logit(p):
    return math.log(p / (1 - p))


def test_weighted_bce_matches_a_hand_computation():
    w_pos, w_neg = np.array([0.9, 0.2]), np.array([0.1, 0.8])
    y = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    p = np.array([[0.8, 0.3], [0.4, 0.6]])
    z = np.vectorize(_logit)(p).astype(np.float32)  # the model outputs logits
    # image 1: -(0.9 ln 0.8) and -(0.8 ln 0.7); image 2: -(0.1 ln 0.6) and -(0.2 ln 0.6)
    by_hand = [(-0.9 * math.log(0.8) - 0.8 * math.log(0.7)) / 2,
               (-0.1 * math.log(0.6) - 0.2 * math.log(0.6)) / 2]
    got = losses.weighted_bce(w_pos, w_neg)(tf.constant(y), tf.constant(z)).numpy()
    assert got == pytest.approx(by_hand, rel=1e-5)
    assert losses.weighted_bce_numpy(y, z, w_pos, w_neg) == pytest.approx(np.mean(by_hand), rel=1e-5)
    assert losses.sigmoid(z) == pytest.approx(p, rel=1e-6)


@pytest.mark.parametrize("logit", [16.0, 17.0, 20.0, 40.0, 100.0])
def test_confident_mistakes_keep_their_gradient(logit):
    # Label 0 predicted with a large logit: the loss grows without bound and its
    # gradient tends to w_neg (a clipped probability would give exactly 0 here).
    w_neg = 0.3
    z = tf.Variable([[logit]])
    with tf.GradientTape() as tape:
        value = losses.weighted_bce(np.array([0.7]), np.array([w_neg]))(tf.constant([[0.0]]), z)
    grad = tape.gradient(value, z).numpy()[0, 0]
    assert value.numpy()[0] == pytest.approx(w_neg * logit, rel=1e-3)
    assert grad == pytest.approx(w_neg, rel=1e-3)
    numpy_value = losses.weighted_bce_numpy(np.array([[0.0]]), np.array([[logit]]), 0.7, w_neg)
    assert np.isfinite(numpy_value) and numpy_value == pytest.approx(w_neg * logit, rel=1e-3)


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
        assert r["delong_low"] <= r["auc"] <= r["delong_high"]
    table, _, note = auc.markdown(rows).partition("\n\n")
    assert table.count("\n") == 4 and "95% CI (image bootstrap)" in table
    assert "resamples of the 300 images: no patient ids were known" in note
    assert auc.csv_text(rows).splitlines()[0].startswith("pathology,positives,auc,ci_low,ci_high,delong_low,")
    assert auc.csv_text(rows).splitlines()[1].startswith("A,")


def _kernel_components(y, s):
    """V10, V01 straight from the Mann-Whitney kernel over every (positive, negative) pair: O(m n)."""
    pos, neg = s[y == 1], s[y == 0]
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return kernel.mean(axis=1), kernel.mean(axis=0)


def test_delong_components_and_covariance_equal_the_brute_force_definitions():
    rng = np.random.default_rng(3)
    y = (rng.random(70) < 0.4).astype(float)
    scores = np.round(rng.normal(size=(70, 2)) + y[:, None] * [0.8, 1.5], 1)  # rounded: ties across classes
    labels = np.stack([y, y], axis=1)  # two scores of one label set: Sun & Xu's setting
    v10, v01 = zip(*(_kernel_components(y, scores[:, k]) for k in range(2)))
    for k in range(2):
        fast10, fast01, value = auc.structural_components(y, scores[:, k])
        assert np.abs(fast10 - v10[k]).max() < 1e-12 and np.abs(fast01 - v01[k]).max() < 1e-12
        assert value == pytest.approx(roc_auc_score(y, scores[:, k]), abs=1e-12)
    m, n = len(v10[0]), len(v01[0])
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))  # (m-1) and (n-1) denominators
    cov, defined = auc.delong_cov(labels, scores)
    assert defined == [0, 1] and np.abs(cov - (s10 / m + s01 / n)).max() < 1e-12
    # DeLong's variance is also the two-sample jackknife's: leave out each image, AUC by scikit-learn.
    for k in range(2):
        jack = []
        for group, size in ((y == 1, m), (y == 0, n)):
            left_out = [roc_auc_score(np.delete(y, i), np.delete(scores[:, k], i)) for i in np.flatnonzero(group)]
            jack.append((size - 1) / size * np.sum((np.array(left_out) - np.mean(left_out)) ** 2))
        assert cov[k, k] == pytest.approx(sum(jack), rel=1e-10)


def test_delong_reproduces_hanley_and_mcneils_published_example():
    # Hanley & McNeil (Radiology 1982), table 1: 5-point CT ratings of 58 normal and 51 abnormal patients;
    # published AUC 0.893, SE 0.032 by their approximation (DeLong's estimator differs from it slightly).
    neg = np.repeat([1.0, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    pos = np.repeat([1.0, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    labels, scores = np.r_[np.ones(51), np.zeros(58)][:, None], np.r_[pos, neg][:, None]
    (value,), (low,), (high,) = auc.per_class_auc(labels, scores), *auc.delong_ci(labels, scores)[:2]
    assert round(value, 3) == 0.893
    assert (high - low) / (2 * 1.959964) == pytest.approx(0.032, rel=0.1)


def _binormal(rng, patients, per_patient, shift, shared):
    """Labels and scores of ``patients`` with ``per_patient`` images that share the label; a patient
    effect carries the share ``shared`` of the score's unit variance. Image-level AUC: Phi(shift / sqrt 2)."""
    y = np.repeat(rng.random(patients) < 0.4, per_patient).astype(float)
    effect = np.repeat(rng.normal(size=patients), per_patient)
    scores = shift * y + np.sqrt(shared) * effect + np.sqrt(1 - shared) * rng.normal(size=len(y))
    return y[:, None], scores[:, None], np.repeat(np.arange(patients), per_patient).astype(str)


def _coverage(rng, runs, patients, per_patient, shared, clustered):
    shift = 1.2
    truth = float(ndtr(shift / np.sqrt(2)))
    hits = 0
    for _ in range(runs):
        labels, scores, ids = _binormal(rng, patients, per_patient, shift, shared)
        (low,), (high,), _ = auc.delong_ci(labels, scores, ids if clustered else None)
        hits += low <= truth <= high
    return hits / runs


def test_delong_intervals_cover_the_true_auc_and_only_the_clustered_one_survives_follow_ups():
    rng = np.random.default_rng(7)
    assert 0.92 <= _coverage(rng, 400, patients=150, per_patient=1, shared=0.0, clustered=False) <= 0.98
    # Four follow-ups a patient, most of the score shared: images are not independent evidence.
    assert _coverage(rng, 400, patients=100, per_patient=4, shared=0.8, clustered=False) < 0.85
    assert 0.92 <= _coverage(rng, 400, patients=100, per_patient=4, shared=0.8, clustered=True) <= 0.98


def _width(row):
    return row["ci_high"] - row["ci_low"]


def test_patient_bootstrap_is_wider_on_follow_ups_and_agrees_with_one_image_each():
    rng = np.random.default_rng(5)
    labels, scores, ids = _binormal(rng, patients=40, per_patient=8, shift=1.0, shared=0.95)
    by_image = auc.auc_table(labels, scores, ["A"], n_boot=200, seed=0)
    by_patient = auc.auc_table(labels, scores, ["A"], n_boot=200, seed=0, patients=ids)
    assert _width(by_patient[0]) > 1.8 * _width(by_image[0])
    assert by_patient[-1]["patients"] == 40 and by_image[-1]["patients"] == 0
    assert "resamples of the 40 patients, each with all its images (320 images)" in auc.markdown(by_patient)
    labels, scores, _ = _binormal(rng, patients=320, per_patient=1, shift=1.0, shared=0.0)
    ids = rng.permutation(320).astype(str)  # one image each, in another order than the images
    one_each = auc.auc_table(labels, scores, ["A"], n_boot=200, seed=0, patients=ids)[0]
    images = auc.auc_table(labels, scores, ["A"], n_boot=200, seed=1)[0]
    assert _width(one_each) == pytest.approx(_width(images), rel=0.2)
    assert _width(one_each) == pytest.approx(one_each["delong_high"] - one_each["delong_low"], rel=0.2)


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


def test_prediction_input_is_the_stored_form_of_gray_rgb_or_rgba(tmp_path):
    import cv2
    gray = np.random.default_rng(0).integers(0, 255, (60, 60), dtype=np.uint8)
    expected = cv2.resize(gray, (20, 20), interpolation=cv2.INTER_AREA)[..., None]  # as the records store it
    for name, img in (("g.png", gray), ("c.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)),
                      ("a.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))):
        cv2.imwrite(str(tmp_path / name), img)
        stored = read_stored(str(tmp_path / name), 20)
        assert stored.dtype == np.uint8 and np.array_equal(stored, expected), name


# ------------------------------------------------------------------ sharding arithmetic
def _manifest(shard_records):
    shards = [{"file": f"train-{i:05d}-of-{len(shard_records):05d}.tfrecord", "records": n}
              for i, n in enumerate(shard_records)]
    return Manifest("x", {"class_order": ["A"], "options": {"image_size": 64},
                          "splits": {"train": {"images": sum(shard_records), "shards": shards,
                                               "positives": {"A": 1}}}})


@pytest.mark.parametrize("counts", [[100, 100, 90, 80], [101], [49, 49, 49, 49, 49, 49, 49, 48, 48], [3, 0, 5]])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 8])
def test_every_record_belongs_to_exactly_one_rank_and_shares_differ_by_at_most_one(counts, size):
    order = np.random.default_rng(size).permutation(len(counts))
    owned = []
    for rank in range(size):
        pieces = rank_pieces(counts, rank, size, order)
        owned.append([(f, i) for f, skip, take in pieces for i in range(skip, skip + take)])
        assert all(0 <= skip and skip + take <= counts[f] for f, skip, take in pieces)
        assert sum(1 for _, skip, take in pieces if skip > 0 or take < counts[_]) <= 2  # partial files
    flat = [r for rank in owned for r in rank]
    assert sorted(flat) == sorted((f, i) for f in range(len(counts)) for i in range(counts[f]))
    sizes = [len(o) for o in owned]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("size,batch", [(2, 16), (4, 16), (6, 8), (12, 4), (3, 7)])
def test_an_epoch_leaves_out_less_than_one_global_batch(size, batch):
    m = _manifest([4000] * 9 + [2917])  # like the real default: uneven shard files
    steps = m.steps_per_epoch("train", size, batch)
    assert 0 <= 38917 - steps * size * batch < size * batch


def _write_shards(tmp_path, counts):
    """Uneven raw 8x8 shard files, record j of file i named i_j.png; their Manifest (no bytes listed)."""
    from dataprep import records
    shards = []
    for i, n in enumerate(counts):
        path = tmp_path / f"train-{i:05d}-of-{len(counts):05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for j in range(n):
                img = np.full((8, 8), 10 * i + j, np.uint8)
                writer.write(records.serialize(img.tobytes(), [j % 2], f"{i}_{j}.png", str(i), "raw", 8))
        shards.append({"file": path.name, "records": n})
    return Manifest(str(tmp_path), {"class_order": ["A"], "options": {"image_size": 8},
                                    "splits": {"train": {"images": sum(counts), "shards": shards,
                                                         "positives": {"A": 9}}}})


def test_ranks_read_every_record_once_from_real_files(tmp_path):
    """Write uneven shard files, read each rank's train stream: together they hold every record once."""
    from dataprep import records
    counts = [7, 5, 5, 2]
    m = _write_shards(tmp_path, counts)
    for epoch in range(2):
        order = np.random.default_rng([0, epoch]).permutation(len(counts))
        seen = []
        for rank in range(3):
            ds = rank_records(m.files("train"), counts, rank, 3, order)
            seen += [records.parse(r, 1)[2].numpy().decode() for r in ds]
        assert sorted(seen) == sorted(f"{i}_{j}.png" for i, n in enumerate(counts) for j in range(n))
    steps = m.steps_per_epoch("train", 3, 2)
    batches = [list(train_dataset(m, r, 3, 2, 8, seed=0, first_epoch=0, epochs=1, steps=steps)) for r in range(3)]
    assert [len(b) for b in batches] == [steps] * 3 and steps * 3 * 2 > sum(counts) - 3 * 2
    x = batches[0][0][0]  # the crop as stored, a byte a pixel: the model normalises it on the device
    assert x.dtype == tf.uint8 and tuple(x.shape) == (2, 8, 8, 1)

    # A run resumed at step 2 of epoch 1 sees the rest of that epoch, augmentation included, then epoch 2.
    whole = list(train_dataset(m, 1, 3, 2, 8, seed=0, first_epoch=0, epochs=2, steps=steps))
    resumed = list(train_dataset(m, 1, 3, 2, 8, seed=0, first_epoch=0, epochs=2, steps=steps, first_step=2))
    assert len(resumed) == len(whole) - 2
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(whole[2:], resumed))


def test_the_shuffle_buffer_is_sized_in_bytes_of_the_records():
    assert Pipeline(shuffle_mb=256).records_for(64 * 1024) == 4096
    assert Pipeline(shuffle_mb=256).records_for(256 * 1024) == 1024  # colour frames: fewer records, same memory
    assert Pipeline(shuffle_mb=0.001).records_for(64 * 1024) == 1   # never an empty buffer


def test_record_bytes_and_capped_threads_leave_the_batches_unchanged(tmp_path):
    counts = [7, 5, 5, 2]
    m = _write_shards(tmp_path, counts)
    on_disk = sum(os.path.getsize(p) for p in m.files("train"))
    assert m.record_bytes("train") == pytest.approx(on_disk / sum(counts))  # from the files: no bytes listed
    steps = m.steps_per_epoch("train", 1, 2)
    batches = {threads: list(train_dataset(m, 0, 1, 2, 8, seed=0, first_epoch=0, epochs=2, steps=steps,
                                           pipeline=Pipeline(threads=threads))) for threads in (0, 1, 3)}
    for threads in (1, 3):  # deterministic parallel maps: the threads change the speed, not the data
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                   for a, b in zip(batches[0], batches[threads]))
    # A one-record buffer keeps the rank's record order; a larger one reorders it.
    names = {}
    for mb in (1e-6, 1.0):
        ds = train_dataset(m, 0, 1, 1, 8, seed=0, first_epoch=0, epochs=1, steps=sum(counts),
                           pipeline=Pipeline(shuffle_mb=mb))
        names[mb] = [float(x[0, 0, 0, 0]) for x, _ in ds]
    assert names[1e-6] != names[1.0] and sorted(names[1e-6]) == sorted(names[1.0])


def test_too_few_images_for_the_batch_is_a_clear_error():
    from runtime.errors import UserError
    with pytest.raises(UserError, match="too few for 2 ranks x --per-rank-batch 64"):
        _manifest([50]).steps_per_epoch("train", 2, 64)


def test_with_accumulated_batches_an_epoch_is_whole_updates():
    from runtime.errors import UserError
    assert _manifest([50]).steps_per_epoch("train", 2, 4) == 6             # 25 // 4
    assert _manifest([50]).steps_per_epoch("train", 2, 4, 4) == 4          # the last update's 2 batches left out
    with pytest.raises(UserError, match="too few for 2 ranks x --per-rank-batch 4 x --grad-accum-steps 8"):
        _manifest([50]).steps_per_epoch("train", 2, 4, 8)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    from chexnet.model import build_model
    from runtime.errors import UserError
    with pytest.raises(UserError, match="no such file; use none, imagenet or a .h5 path"):
        build_model(32, 14, str(tmp_path / "absent.h5"))


def test_checkpoints_from_another_model_or_data_are_refused():
    from chexnet.model import OUTPUT_KIND, check_checkpoint
    from runtime.errors import UserError
    state = {"output": OUTPUT_KIND, "classes": ["A", "B"], "stored_size": 64, "crop": 56}
    check_checkpoint(state, "ok.npz", ["A", "B"], 64)
    with pytest.raises(UserError, match="older chexnet whose model ended in a sigmoid"):
        check_checkpoint({"classes": ["A", "B"], "stored_size": 64, "crop": 56}, "old.npz")
    with pytest.raises(UserError, match="seg.npz is not a checkpoint of chexnet.train"):
        check_checkpoint({"output": OUTPUT_KIND, "model": "unet", "stored_size": 64}, "seg.npz")
    with pytest.raises(UserError, match=r"trained on classes \['A', 'B'\], the data has \['B', 'A'\]"):
        check_checkpoint(state, "x.npz", ["B", "A"], 64)
    with pytest.raises(UserError, match="trained on 64px records, the data holds 256px"):
        check_checkpoint(state, "x.npz", ["A", "B"], 256)


def test_a_truncated_or_missing_shard_is_refused_before_training(tmp_path):
    from runtime.errors import UserError
    (tmp_path / "train-00000-of-00002.tfrecord").write_bytes(b"x" * 90)
    shards = [{"file": "train-00000-of-00002.tfrecord", "records": 3, "bytes": 100},
              {"file": "train-00001-of-00002.tfrecord", "records": 3, "bytes": 100}]
    m = Manifest(str(tmp_path), {"class_order": ["A"], "options": {"image_size": 8},
                                 "splits": {"train": {"images": 6, "shards": shards, "positives": {"A": 1}}}})
    with pytest.raises(UserError, match=r"train-00000-of-00002.tfrecord holds 90 bytes, manifest.json says 100: "
                                        r"truncated"):
        m.files("train")
    (tmp_path / "train-00000-of-00002.tfrecord").write_bytes(b"x" * 100)
    with pytest.raises(UserError, match=r"train-00001-of-00002.tfrecord is missing"):
        m.files("train")


def test_records_of_another_size_than_the_manifest_says_are_refused(tmp_path):
    from dataprep import records
    from runtime.errors import UserError
    path = tmp_path / "train-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(records.serialize(np.zeros((8, 8), np.uint8).tobytes(), [0], "a.png", "1", "raw", 8))
    shards = [{"file": path.name, "records": 1, "bytes": path.stat().st_size}]
    for size, ok in ((8, True), (16, False)):
        m = Manifest(str(tmp_path), {"class_order": ["A"], "options": {"image_size": size},
                                     "splits": {"train": {"images": 1, "shards": shards, "positives": {"A": 0}}}})
        if ok:
            m.check_records("train")
        else:
            with pytest.raises(UserError, match="holds 8x8 images, .*manifest.json says image_size 16"):
                m.check_records("train")


def test_predictions_carry_each_images_patient_and_an_empty_rank_keeps_the_key():
    import tf_keras as keras
    from training.gather import Predictor
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    x, y = np.arange(10, dtype=np.float32).reshape(5, 2), np.zeros((5, 3), np.float32)
    names, patients = [f"{i}.png" for i in range(5)], ["p1", "p1", "p2", "p3", "p3"]
    ds = tf.data.Dataset.from_tensor_slices((x, y, names, patients)).batch(2)
    rows, got = Predictor(model).local(ds)
    assert got == names and rows["patient"].tolist() == patients and rows["outputs"].shape == (5, 3)
    rows, got = Predictor(model).local(ds.unbatch().take(0).batch(2))
    assert got == [] and rows["patient"].shape == (0,) and rows["outputs"].shape == (0, 3)
    rows, _ = Predictor(model).local(tf.data.Dataset.from_tensor_slices((x, y, names)).batch(2))
    assert "patient" not in rows  # no patient ids: evaluate falls back to image resampling
