"""The per-epoch validation of CheXNet: whole-split loss, per-pathology and mean AUC.

    cb = WholeSplitAUC(eval_ds, expected=m.images("val"), class_names=m.classes, w_pos=w_pos, w_neg=w_neg)
    # at each epoch end: logs["val_loss"], logs["val_mean_auc"], logs["val_auc_<class>"]

Collective: every rank runs it. The predictions of the whole split are
gathered from every rank (``training.gather``: each image exactly once), so
every rank computes the same figures and the callbacks that act on them
(plateau LR, checkpoints) agree. The model outputs logits: AUCs and the loss
are computed from them, probabilities (``losses.sigmoid``) only where shown.
"""
import numpy as np
import tf_keras as keras

from chexnet import auc
from chexnet.losses import weighted_bce_numpy
from training.gather import Predictor, gather_exactly_once


def gather_logits(predictor, dataset, expected):
    """(logits, labels, names, patients) of the whole split, from every rank; patients is None for a
    dataset without patient ids."""
    rows, names = gather_exactly_once(*predictor.local(dataset), expected)
    return rows["outputs"].astype(np.float32), rows["targets"].astype(np.float32), names, rows.get("patient")


class WholeSplitAUC(keras.callbacks.Callback):
    """At each epoch end: ``<prefix>_loss``, ``<prefix>_mean_auc`` and one AUC per class in the logs."""

    def __init__(self, dataset, expected, class_names, w_pos, w_neg, prefix="val"):
        super().__init__()
        self.dataset, self.expected, self.class_names = dataset, expected, class_names
        self.w_pos, self.w_neg, self.prefix = np.asarray(w_pos), np.asarray(w_neg), prefix
        self.predictor = None

    def on_epoch_end(self, epoch, logs=None):
        self.predictor = self.predictor or Predictor(self.model)
        logits, labels, *_ = gather_logits(self.predictor, self.dataset, self.expected)
        aucs = auc.per_class_auc(labels, logits)
        logs = logs if logs is not None else {}
        logs[f"{self.prefix}_loss"] = weighted_bce_numpy(labels, logits, self.w_pos, self.w_neg)
        logs[f"{self.prefix}_mean_auc"] = auc.mean_auc(aucs)
        for name, value in zip(self.class_names, aucs):
            logs[f"{self.prefix}_auc_{name}"] = float(value)
