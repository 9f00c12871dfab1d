"""Rank-sharded input over the TFRecords of write_tfrecords.sh (no Horovod: rank and size are arguments).

    m = Manifest.load("data/chestxray14/tfrecords")
    steps = m.steps_per_epoch("train", size=2, per_rank_batch=16)
    ds = train_batches(m, rank=0, size=2, per_rank_batch=16, seed=0, first_epoch=0, epochs=10,
                       steps=steps, parse=lambda serialized, seed: ...)      # -> (x, y) batches
    ev = eval_batches(m, "val", rank=0, size=2, batch=64, parse=lambda serialized: ...)  # (x, y, name)

Sharding by record: the split's files are taken in one order (for training,
a permutation drawn from (seed, epoch), the same on every rank), their
records form one sequence of N, and rank r reads the contiguous slice
``[r*N//size, (r+1)*N//size)`` of it (``rank_pieces``: a few (file, skip,
take) pieces, at most two of them partial files). Every record belongs to
exactly one rank, rank shares differ by at most one record, and which
records a rank holds changes from epoch to epoch.

Equal steps: every rank runs ``steps_per_epoch = (N // size) // per_rank_batch``
steps (rounded down to whole updates with --grad-accum-steps K), or Horovod's
allreduce would hang on the ranks that ran out. An epoch therefore trains on
all but fewer than one global batch (``size x per_rank_batch x K``) of the N
images, and the few left out change every epoch.
Evaluation keeps every record (the last, partial batch included).

Determinism: epoch ``e`` is built from (seed, rank, e) alone, and ``parse``
gets a per-record seed for stateless augmentation, so a run resumed at epoch
``e`` sees what an uninterrupted run would have seen.
"""
import numpy as np
import tensorflow as tf

from runtime import nvtx
from training.config import Pipeline
from training.manifest import Manifest  # noqa: F401  (re-exported: the data modules read it from here)


def parallel(pipeline):
    return pipeline.threads or tf.data.AUTOTUNE


def pipeline_options(pipeline):
    options = tf.data.Options()
    if pipeline.threads:
        # A private pool: ranks that share a node's cores cap their input threads here.
        options.threading.private_threadpool_size = pipeline.threads
    return options


def rank_pieces(counts, rank, size, order=None):
    """This rank's slice of the records of files ``order`` (default: as listed), as (file, skip, take).

    ``counts``: records per file. The files' records, in ``order``, form one
    sequence of N; the rank gets ``[rank*N//size, (rank+1)*N//size)`` of it.

    >>> rank_pieces([5, 5, 5], rank=1, size=2)
    [(1, 2, 3), (2, 0, 5)]
    """
    order = range(len(counts)) if order is None else order
    total = sum(counts)
    lo, hi = rank * total // size, (rank + 1) * total // size
    pieces, offset = [], 0
    for f in order:
        a, b = max(lo, offset), min(hi, offset + counts[f])
        if a < b:
            pieces.append((int(f), a - offset, b - a))
        offset += counts[f]
    return pieces


def rank_records(files, counts, rank, size, order=None, parallel=tf.data.AUTOTUNE):
    """This rank's serialized records: its pieces, interleaved in a fixed order."""
    pieces = rank_pieces(counts, rank, size, order)
    if not pieces:
        return tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
    paths = tf.constant([files[f] for f, _, _ in pieces])
    skips = tf.constant([s for _, s, _ in pieces], tf.int64)
    takes = tf.constant([t for _, _, t in pieces], tf.int64)
    return tf.data.Dataset.from_tensor_slices((paths, skips, takes)).interleave(
        lambda path, skip, take: tf.data.TFRecordDataset(path).skip(skip).take(take),
        cycle_length=min(4, len(pieces)), deterministic=True, num_parallel_calls=parallel)


def train_batches(manifest, rank, size, per_rank_batch, seed, first_epoch, epochs, steps, parse,
                  pipeline=Pipeline(), split="train", first_step=0):
    """Epochs ``first_epoch..epochs-1`` of this rank's training batches, ``steps`` per epoch.

    ``parse(serialized, seed)``: one record -> (x, y); ``seed`` is an int64 pair
    unique to (seed, rank, epoch, record index) for stateless augmentation.
    ``first_step``: batches of ``first_epoch`` already trained (a mid-epoch
    checkpoint); they are skipped before decoding, and the rest of the epoch
    is what an uninterrupted run would have seen. ``pipeline``: the shuffle
    buffer's memory and the input threads (``training.config.Pipeline``).
    """
    files, counts = manifest.files(split), manifest.record_counts(split)
    buffer = pipeline.records_for(manifest.record_bytes(split))
    ranged = nvtx.annotate(parse, "decode+augment")  # parse itself unless --nvtx

    def epoch_stream(epoch, skip_steps=0):
        # The same file order on every rank (their slices must tile the records),
        # a new one each epoch (so a rank's share changes).
        order = np.random.default_rng([seed, epoch]).permutation(len(files))
        epoch_seed = seed * 1_000_003 + rank * 10_007 + epoch  # distinct per rank and epoch
        ds = rank_records(files, counts, rank, size, order, parallel(pipeline))
        ds = ds.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        ds = ds.take(steps * per_rank_batch).enumerate().skip(skip_steps * per_rank_batch)
        ds = ds.map(lambda index, serialized: ranged(serialized, tf.stack([tf.constant(epoch_seed, tf.int64), index])),
                    num_parallel_calls=parallel(pipeline), deterministic=True)
        return ds.batch(per_rank_batch, drop_remainder=True)

    # One stream per epoch, concatenated: epoch e depends only on (seed, rank, e).
    stream = epoch_stream(first_epoch, first_step)
    for epoch in range(first_epoch + 1, epochs):
        stream = stream.concatenate(epoch_stream(epoch))
    return stream.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options(pipeline))


def eval_batches(manifest, split, rank, size, batch, parse, pipeline=Pipeline()):
    """This rank's records of ``split`` as ``parse(serialized)`` batches; nothing dropped."""
    ds = rank_records(manifest.files(split), manifest.record_counts(split), rank, size, parallel=parallel(pipeline))
    return ds.map(parse, num_parallel_calls=parallel(pipeline), deterministic=True).batch(batch).prefetch(
        tf.data.AUTOTUNE).with_options(pipeline_options(pipeline))


def random_batches(per_rank_batch, input_shape, target_shape, seed, positive_rate=0.1):
    """One random (x, y) batch repeated, for --benchmark --synthetic-input: no disk, no decoding.

    ``x``: uint8 images, as the datasets yield them; ``y`` is 0/1 with ``positive_rate`` ones: multi-hot
    labels or a mask, by ``target_shape``.
    """
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.integers(0, 256, size=(per_rank_batch, *input_shape), dtype=np.uint8))
    y = tf.constant((rng.random((per_rank_batch, *target_shape)) < positive_rate).astype(np.float32))
    return tf.data.Dataset.from_tensors((x, y)).repeat()
