"""Whole-split predictions gathered from every rank, and the per-epoch AUC callback.

    predictor = Predictor(model)
    logits, labels, names = gather_predictions(predictor, eval_ds, expected=m.split("val")["images"])
    cb = WholeSplitAUC(eval_ds, expected, classes, w_pos, w_neg)   # adds val_mean_auc etc. to logs

Collective: every rank must call it. Each rank predicts its own records (the
last partial batch included); the rows of all ranks are gathered, and every
rank computes the same figures, so callbacks that act on them (plateau LR,
checkpoints) agree across ranks. An image counted twice or missing fails
loudly. The model outputs logits: AUCs and the loss are computed from them,
probabilities (``losses.sigmoid``) only where they are shown.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from chexnet import auc
from chexnet.losses import weighted_bce_numpy
from runtime import distributed


class Predictor:
    """One compiled inference function per model, reused for every batch and every epoch."""

    def __init__(self, model):
        self.model = model
        self.n_classes = model.output_shape[-1]
        self._infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def local(self, dataset):
        """(logits, labels, names) of this rank's records of ``dataset``."""
        logits, labels, names = [], [], []
        for x, y, name in dataset:
            logits.append(self._infer(x).numpy())
            labels.append(y.numpy())
            names += [n.decode() for n in name.numpy()]
        empty = np.zeros((0, self.n_classes), np.float32)
        return (np.concatenate(logits) if logits else empty,
                np.concatenate(labels) if labels else empty, names)


def gather_predictions(predictor, dataset, expected):
    logits, labels, names = predictor.local(dataset)
    logits = distributed.allgather(logits.astype(np.float32))
    labels = distributed.allgather(labels.astype(np.float32))
    names = [n for part in distributed.allgather_object(names) for n in part]
    if len(names) != expected or len(set(names)) != expected:
        raise RuntimeError(f"gathered {len(names)} predictions ({len(set(names))} distinct images) "
                           f"but the split has {expected}: the rank sharding is broken")
    return logits, labels, names


class WholeSplitAUC(keras.callbacks.Callback):
    """At each epoch end: ``<prefix>_loss``, ``<prefix>_mean_auc`` and one AUC per class in the logs."""

    def __init__(self, dataset, expected, class_names, w_pos, w_neg, prefix="val"):
        super().__init__()
        self.dataset, self.expected, self.class_names = dataset, expected, class_names
        self.w_pos, self.w_neg, self.prefix = np.asarray(w_pos), np.asarray(w_neg), prefix
        self.predictor = None

    def on_epoch_end(self, epoch, logs=None):
        self.predictor = self.predictor or Predictor(self.model)
        logits, labels, _ = gather_predictions(self.predictor, self.dataset, self.expected)
        aucs = auc.per_class_auc(labels, logits)
        logs = logs if logs is not None else {}
        logs[f"{self.prefix}_loss"] = weighted_bce_numpy(labels, logits, self.w_pos, self.w_neg)
        logs[f"{self.prefix}_mean_auc"] = auc.mean_auc(aucs)
        for name, value in zip(self.class_names, aucs):
            logs[f"{self.prefix}_auc_{name}"] = float(value)
