"""Whole-split predictions from every rank, each record counted exactly once.

    predictor = Predictor(model)
    local, names = predictor.local(eval_ds)                    # {"outputs": ..., "targets": ...}, names
    rows, names = gather_exactly_once(local, names, expected=manifest.images("val"))

    # or reduce each batch first (per-image figures instead of whole masks):
    local, names = predictor.local(eval_ds, per_batch=lambda out, y: {"dice": dice_per_image(out, y)})

    # batches of (x, y, name, patient): local["patient"] holds each image's patient id, gathered alike

Collective: every rank must call ``gather_exactly_once``. Each rank predicts
its own records (the last partial batch included); the rows of all ranks are
gathered in rank order, and a record missing or counted twice fails loudly,
so every rank computes the same figures from the same rows.
"""
import numpy as np
import tensorflow as tf

from runtime import distributed, watchdog


def _outputs_and_targets(outputs, targets):
    return {"outputs": outputs, "targets": targets}


class Predictor:
    """One compiled inference function per model, reused for every batch and every epoch."""

    def __init__(self, model):
        self.model = model
        self._infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def warm_up(self, dataset):
        """Trace the inference function on the first batch, so that timing leaves tracing out."""
        for x, *_ in dataset.take(1):
            self._infer(x)

    def local(self, dataset, per_batch=_outputs_and_targets):
        """({key: rows}, names) of this rank's records of ``dataset`` of (x, y, name) batches.

        ``per_batch(outputs, targets)`` (numpy arrays) -> {key: array with one row per image}. Batches
        of (x, y, name, patient) add the key ``patient``: each image's patient id (text).
        """
        parts, names = {}, []
        for x, y, name, *patient in dataset:
            for key, rows in per_batch(self._infer(x).numpy(), y.numpy()).items():
                parts.setdefault(key, []).append(np.asarray(rows))
            if patient:
                parts.setdefault("patient", []).append(np.array([p.decode() for p in patient[0].numpy()], str))
            names += [n.decode() for n in name.numpy()]
            watchdog.beat()  # a long validation pass is progress too
        if not names:
            # A rank without records still takes part in the gather, with the
            # same keys and zero rows of the right shape (or the collectives mismatch).
            target_shape = dataset.element_spec[1].shape[1:]
            empty = per_batch(np.zeros((0, *self.model.output_shape[1:]), np.float32),
                              np.zeros((0, *target_shape), np.float32))
            if len(dataset.element_spec) == 4:
                empty["patient"] = np.array([], str)
            return {k: np.asarray(v) for k, v in empty.items()}, names
        return {k: np.concatenate(v) for k, v in parts.items()}, names


def _allgather_rows(rows):
    # Horovod gathers numeric tensors only: text rows (patient ids) travel as objects, as the names do.
    if rows.dtype.kind in "US":
        return np.array([v for part in distributed.allgather_object(rows.tolist()) for v in part], str)
    return distributed.allgather(rows)


def gather_exactly_once(local, names, expected):
    """Collective: every rank's rows in rank order; fails unless each of ``expected`` records came once."""
    gathered = {k: _allgather_rows(np.asarray(v)) for k, v in sorted(local.items())}
    names = [n for part in distributed.allgather_object(names) for n in part]
    if len(names) != expected or len(set(names)) != expected:
        raise RuntimeError(f"gathered {len(names)} predictions ({len(set(names))} distinct images) "
                           f"but the split has {expected}: the rank sharding is broken")
    return gathered, names
