"""The per-epoch validation of segmentation: whole-split Dice, IoU, precision, recall and loss.

    cb = WholeSplitDice(eval_ds, expected=m.images("val"), loss=build_loss("dice_bce"))
    # at each epoch end: logs["val_loss"], logs["val_dice"], logs["val_iou"], logs["val_precision"], ...

Collective: every rank runs it. Each rank reduces its own batches to
per-image confusion counts and losses (``segmentation.metrics``), so only N x 5
numbers cross the network, not N masks; ``training.gather`` collects them
from every rank, each image exactly once, and every rank computes the same
figures, so the plateau schedule and the checkpoints agree across ranks.
"""
import numpy as np
import tf_keras as keras

from segmentation import metrics
from training.gather import Predictor, gather_exactly_once


def per_image_rows(loss):
    """The per-batch reduction: confusion counts and the loss of each image."""
    def rows(logits, masks):
        return {"counts": metrics.confusion_counts(masks, logits),
                "loss": np.asarray(loss(masks, logits), np.float64).reshape(-1)}
    return rows


def gather_counts(predictor, dataset, expected, loss):
    """(counts (N, 4), losses (N,), names) of the whole split, from every rank."""
    rows, names = gather_exactly_once(*predictor.local(dataset, per_image_rows(loss)), expected)
    return rows["counts"], rows["loss"], names


class WholeSplitDice(keras.callbacks.Callback):
    """At each epoch end: ``<prefix>_loss`` and ``<prefix>_<figure>`` for Dice, IoU, precision, recall."""

    def __init__(self, dataset, expected, loss, prefix="val"):
        super().__init__()
        self.dataset, self.expected, self.loss, self.prefix = dataset, expected, loss, prefix
        self.predictor = None

    def on_epoch_end(self, epoch, logs=None):
        self.predictor = self.predictor or Predictor(self.model)
        counts, losses, _ = gather_counts(self.predictor, self.dataset, self.expected, self.loss)
        logs = logs if logs is not None else {}
        logs[f"{self.prefix}_loss"] = float(losses.mean())
        for name, value in metrics.summary(counts).items():
            logs[f"{self.prefix}_{name}"] = value
