"""Gradient accumulation: one optimizer update from ``batches`` local batches, with one allreduce.

    opt = accumulating(keras.optimizers.Adam(lr), batches=4, allreduce=average_over_ranks)

Each ``apply_gradients`` call (one per batch) adds the gradients to local
sums; every ``batches``-th call averages them, hands the mean to
``allreduce`` (the mean over ranks) and applies it: ``size`` ranks x
``batches`` batches make the update that ``size x batches`` ranks x one batch
would. The optimizer's ``iterations`` counts updates, not batches, so Adam's
bias correction and anything keyed on it see updates.

The sums are not optimizer variables: the trainers write checkpoints, and an
epoch ends, only at update boundaries (``training.interrupt``,
``Manifest.steps_per_epoch``), where the sums are zero; a resumed run starts
from zero sums, as the uninterrupted one stood there.
"""
import tensorflow as tf


def accumulating(optimizer, batches, allreduce):
    """A copy of the Keras ``optimizer`` (same class name and config) that updates every ``batches`` batches.

    ``allreduce(grads)``: the list of per-variable means over ranks (the identity on one rank)."""
    base = type(optimizer)

    class Accumulating(base):
        def build(self, var_list):
            super(Accumulating, self).build(var_list)
            if getattr(self, "_sums", None) is not None:
                return
            with tf.init_scope():
                self._sums = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"accumulated_{i}")
                              for i, v in enumerate(var_list)]
                self._batches_in = tf.Variable(0, dtype=tf.int64, trainable=False, name="accumulated_batches")

        def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
            pairs = [(g, v) for g, v in grads_and_vars if g is not None]
            with tf.init_scope():  # the sums exist before the first batch adds to them
                self.build([v for _, v in pairs])
            sums = [self._sums[self._index_dict[self._var_key(v)]] for _, v in pairs]
            for total, (grad, _) in zip(sums, pairs):
                total.assign_add(tf.convert_to_tensor(grad))
            seen = self._batches_in.assign_add(1)

            def update():
                means = allreduce([total / batches for total in sums])
                super(Accumulating, self).apply_gradients(
                    zip(means, [v for _, v in pairs]), name=name,
                    skip_gradients_aggregation=skip_gradients_aggregation, **kwargs)
                for total in sums:
                    total.assign(tf.zeros_like(total))
                self._batches_in.assign(0)
                return tf.constant(True)

            tf.cond(seen >= batches, update, lambda: tf.constant(False))
            return self.iterations

    Accumulating.__name__ = Accumulating.__qualname__ = base.__name__  # saved models name the real optimizer
    return Accumulating.from_config(optimizer.get_config())
