"""Segmentation input: Kvasir-SEG records through the one transform, on the shared rank sharding.

    m = training.shards.Manifest.load("data/kvasir-seg/tfrecords")
    ds = train_dataset(m, rank=0, size=2, per_rank_batch=8, seed=0, first_epoch=0, epochs=10,
                       steps=m.steps_per_epoch("train", 2, 8))           # (x uint8, mask) batches, augmented
    ev = eval_dataset(m, "val", rank=0, size=2, batch=16)                # (x, mask, name) batches

Sharding, equal steps and per-epoch determinism are ``training.shards``';
this module adds the record schema and ``segmentation.preprocess``. Images
stay uint8: the model normalises them on the device (``Workload.device_model``).
"""
import tensorflow as tf

from dataprep import records
from segmentation.preprocess import augment
from training import shards


def train_dataset(manifest, rank, size, per_rank_batch, seed, first_epoch, epochs, steps,
                  pipeline=shards.Pipeline(), first_step=0):
    def parse(serialized, aug_seed):
        image, mask, _ = records.parse_segmentation(serialized)
        return augment(image, mask, aug_seed)

    return shards.train_batches(manifest, rank, size, per_rank_batch, seed, first_epoch, epochs, steps, parse,
                                pipeline, first_step=first_step)


def eval_dataset(manifest, split, rank, size, batch, pipeline=shards.Pipeline()):
    """(images, masks, names) batches of this rank's records of ``split``; nothing dropped."""
    side = manifest.stored_size

    def parse(serialized):
        image, mask, name = records.parse_segmentation(serialized)
        # Static shapes: a rank without records must still know what an empty batch looks like.
        return (tf.ensure_shape(image, [side, side, 3]),
                tf.ensure_shape(tf.cast(mask, tf.float32), [side, side, 1]), name)

    return shards.eval_batches(manifest, split, rank, size, batch, parse, pipeline)
