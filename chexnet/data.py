"""Input pipelines over the TFRecords of write_tfrecords.sh (no Horovod: rank/size are arguments).

    m = Manifest.load("data/chestxray14/tfrecords")
    steps = m.steps_per_epoch("train", rank_count=2, per_rank_batch=16)
    ds = train_dataset(m, rank=0, size=2, per_rank_batch=16, crop=224, seed=0,
                       first_epoch=0, epochs=10, steps=steps)
    ev = eval_dataset(m, "val", rank=0, size=2, batch=64, crop=224)

Sharding: with at least as many shard files as ranks, each rank reads its own
files (``files[rank::size]``); with fewer files (small sets), every rank reads
all files in the same order and keeps every ``size``-th record. Either way each
record belongs to exactly one rank.

Equal steps: every rank runs ``steps_per_epoch`` = the smallest rank's
``records // per_rank_batch``, or Horovod's allreduce would hang on the ranks
that ran out. Each epoch every rank reshuffles its own records and takes the
first ``steps x per_rank_batch``: the few left over differ from epoch to epoch,
so no image is excluded for good. Evaluation keeps every record (the last,
partial batch included).

Determinism: epoch ``e`` is built from (seed, rank, e) alone, with stateless
augmentation, so a run resumed at epoch ``e`` sees what an uninterrupted run
would have seen.
"""
import json
import os

import numpy as np
import tensorflow as tf

from chexnet.preprocess import preprocess
from dataprep import records
from runtime.errors import UserError


class Manifest:
    def __init__(self, folder, data):
        self.folder, self.data = folder, data
        self.classes = data["class_order"]
        self.stored_size = data["options"]["image_size"]

    @classmethod
    def load(cls, folder):
        path = os.path.join(folder, "manifest.json")
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: run write_tfrecords.sh first (or pass --data-dir)")
        with open(path, encoding="utf-8") as fh:
            return cls(folder, json.load(fh))

    def check_crop(self, crop, log):
        """The crop must fit the stored images and should cover most of them (224 of 256 does)."""
        if crop > self.stored_size:
            raise UserError(f"--crop {crop} is larger than the stored {self.stored_size}x{self.stored_size} "
                            f"images of {self.folder}: lower --crop or rewrite with a larger --image-size")
        if crop < 0.6 * self.stored_size:
            log.warning("--crop %d sees only the central %.0f%% of each %dx%d image: findings near the "
                        "edges are cut off; rewrite the TFRecords with --image-size near %d",
                        crop, 100 * (crop / self.stored_size) ** 2, self.stored_size, self.stored_size,
                        round(crop * 256 / 224))

    def split(self, name):
        info = self.data["splits"].get(name)
        if not info or not info["images"]:
            raise UserError(f"{self.folder}/manifest.json has no {name} images: rewrite the TFRecords")
        return info

    def files(self, name):
        return [os.path.join(self.folder, s["file"]) for s in self.split(name)["shards"]]

    def rank_record_counts(self, name, size):
        """Records each rank reads of split ``name`` (see the module docstring)."""
        counts = [s["records"] for s in self.split(name)["shards"]]
        if len(counts) >= size:
            return [sum(counts[r::size]) for r in range(size)]
        total = sum(counts)
        return [len(range(r, total, size)) for r in range(size)]

    def steps_per_epoch(self, name, size, per_rank_batch):
        steps = min(self.rank_record_counts(name, size)) // per_rank_batch
        if steps < 1:
            raise UserError(f"the {name} split has {self.split(name)['images']} images: too few for "
                            f"{size} ranks x --per-rank-batch {per_rank_batch}; lower the batch")
        return steps

    def class_positives(self, name):
        positives = self.split(name)["positives"]
        return [positives[c] for c in self.classes]


def _rank_records(files, rank, size, file_order_seed=None):
    """This rank's serialized records (deterministic order; optionally shuffled files)."""
    if len(files) >= size:
        mine = files[rank::size]
        if file_order_seed is not None:
            mine = [mine[i] for i in np.random.default_rng(file_order_seed).permutation(len(mine))]
        return tf.data.Dataset.from_tensor_slices(mine).interleave(
            tf.data.TFRecordDataset, cycle_length=min(4, len(mine)), deterministic=True,
            num_parallel_calls=tf.data.AUTOTUNE)
    return tf.data.TFRecordDataset(files).shard(size, rank)


def train_dataset(manifest, rank, size, per_rank_batch, crop, seed, first_epoch, epochs, steps,
                  shuffle_buffer=10000):
    files = manifest.files("train")
    n_classes = len(manifest.classes)

    def epoch_stream(epoch):
        epoch_seed = seed * 1_000_003 + rank * 10_007 + epoch  # distinct per rank and epoch
        ds = _rank_records(files, rank, size, file_order_seed=epoch_seed)
        ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        ds = ds.take(steps * per_rank_batch).enumerate()

        def parse(index, serialized):
            image, labels, _, _ = records.parse(serialized, n_classes)
            aug_seed = tf.stack([tf.constant(epoch_seed, tf.int64), index])
            return preprocess(image, crop, training=True, seed=aug_seed), labels

        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(per_rank_batch, drop_remainder=True)

    # One stream per epoch, concatenated: epoch e depends only on (seed, rank, e).
    stream = epoch_stream(first_epoch)
    for epoch in range(first_epoch + 1, epochs):
        stream = stream.concatenate(epoch_stream(epoch))
    return stream.prefetch(tf.data.AUTOTUNE)


def eval_dataset(manifest, split, rank, size, batch, crop):
    """(images, labels, names) batches of this rank's records of ``split``; nothing dropped."""
    n_classes = len(manifest.classes)

    def parse(serialized):
        image, labels, name, _ = records.parse(serialized, n_classes)
        return preprocess(image, crop, training=False), labels, name

    ds = _rank_records(manifest.files(split), rank, size)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch).prefetch(
        tf.data.AUTOTUNE)


def synthetic_dataset(per_rank_batch, crop, n_classes, seed):
    """Random inputs for --benchmark --synthetic-input: no disk, no decoding."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(per_rank_batch, crop, crop, 3)).astype(np.float32))
    y = tf.constant((rng.random((per_rank_batch, n_classes)) < 0.1).astype(np.float32))
    return tf.data.Dataset.from_tensors((x, y)).repeat()
