"""NVTX ranges for Nsight Systems (``nsys profile``), off unless a trainer runs with ``--nvtx``.

    nvtx.enable(True)                         # loop.start, from --nvtx (before any dataset is built)
    parse = nvtx.annotate(parse, "decode")    # training.shards: a range around each record's parse
    callbacks.append(nvtx.StepRanges())       # "train step <epoch>:<step>" around each batch

    nsys profile -t cuda,nvtx,cudnn,cublas -o run horovodrun -np 2 python -m chexnet.train --nvtx ...

Three kinds of range show up on the timeline, domain "medimg":
- ``train step E:S``: each batch of ``fit``, pushed and popped on the Python thread;
- ``decode+augment``: each training record's parse in the tf.data pipeline,
  started and ended as process-wide ranges (records are parsed on several
  threads at once); a record still in flight when the pipeline is torn down
  (the end of a benchmark, a stop) keeps its range open;
- Horovod's own per-collective ranges (horovod 0.28.1 carries them), left on
  with --nvtx and switched off otherwise (``HOROVOD_DISABLE_NVTX_RANGES``,
  runtime.distributed), as the flag's "off by default" promises.
Without a profiler attached, the ``nvtx`` package's calls do nothing; the
record ranges still cost a Python call per record, hence off by default.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from runtime.errors import UserError

DOMAIN = "medimg"
_domain = None  # set by enable(True): the nvtx domain (or a test's recorder)


def enable(on, domain=None):
    """Turn the ranges on or off for this process; ``domain``: an object with the nvtx Domain methods."""
    global _domain
    if not on:
        _domain = None
        return
    if domain is None:
        try:
            import nvtx
        except ImportError:
            raise UserError("--nvtx needs the nvtx package: pip install nvtx (requirements.txt pins it)") from None
        domain = nvtx.get_domain(DOMAIN)
    _domain = domain


def enabled():
    return _domain is not None


def annotate(parse, name):
    """``parse`` unchanged when off; else the same function inside a process-wide range ``name``."""
    if _domain is None:
        return parse
    domain = _domain

    def start():
        return np.uint64(domain.start_range(message=name) or 0)

    def end(range_id):
        domain.end_range(int(range_id))
        return np.int8(0)

    def ranged(*args):
        range_id = tf.numpy_function(start, [], tf.uint64, stateful=True)
        with tf.control_dependencies([range_id]):  # the parse starts after the range does
            args = tf.nest.map_structure(tf.identity, args)
        out = parse(*args)
        with tf.control_dependencies(tf.nest.flatten(out)):  # and ends before it
            done = tf.numpy_function(end, [range_id], tf.int8, stateful=True)
        with tf.control_dependencies([done]):
            return tf.nest.map_structure(tf.identity, out)

    return ranged


class StepRanges(keras.callbacks.Callback):
    """A range around each training batch, named by epoch and step (1-based).

    Put it first among the callbacks: its range then closes before the others'
    batch-end work (the stop-flag allreduce, checkpoints), which may raise.
    ``initial_step``: batches of the first epoch already trained (a mid-epoch resume).
    """

    def __init__(self, initial_step=0):
        super().__init__()
        self._supports_tf_logs = True  # names the ranges, reads no figure: no host sync per batch
        self.epoch, self.offset, self.pending_offset = 0, 0, initial_step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.offset, self.pending_offset = epoch + 1, self.pending_offset, 0

    def on_train_batch_begin(self, batch, logs=None):
        if _domain is not None:
            _domain.push_range(message=f"train step {self.epoch}:{self.offset + batch + 1}")

    def on_train_batch_end(self, batch, logs=None):
        if _domain is not None:
            _domain.pop_range()
