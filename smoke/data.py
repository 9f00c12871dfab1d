"""Synthetic, learnable images: four classes of stripes (no Horovod here).

    x, y = make_stripes(n=64, size=32, seed=0)   # x: (64, 32, 32, 1) float32, y: (64,) int
    ds = train_dataset(per_rank_batch=32, size=32, seed=7)

Class k draws stripes at angle k*45 degrees with a random phase and period,
plus noise: a CNN learns it in a few hundred steps, a broken pipeline cannot.
"""
import numpy as np
import tensorflow as tf

NUM_CLASSES = 4


def make_stripes(n, size, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angles = labels * (np.pi / NUM_CLASSES)
    period = rng.uniform(4.0, 8.0, size=n).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
    proj = (np.cos(angles)[:, None, None] * xx + np.sin(angles)[:, None, None] * yy)
    images = 0.5 + 0.4 * np.sin(2 * np.pi * proj / period[:, None, None] + phase[:, None, None])
    images += rng.normal(0, 0.15, size=images.shape)
    return images[..., None].astype(np.float32), labels.astype(np.int64)


def train_dataset(per_rank_batch, size, seed, pool=4096):
    """An endless shuffled stream; ``seed`` differs per rank so ranks see different data."""
    x, y = make_stripes(pool, size, seed)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(pool, seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.batch(per_rank_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(n, per_rank_batch, size, seed, shard_index=0, num_shards=1):
    """A fixed held-out set, rows ``shard_index::num_shards`` of it."""
    x, y = make_stripes(n, size, seed)
    ds = tf.data.Dataset.from_tensor_slices((x[shard_index::num_shards], y[shard_index::num_shards]))
    return ds.batch(per_rank_batch).prefetch(tf.data.AUTOTUNE)
