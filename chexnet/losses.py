"""Class-weighted binary cross-entropy, the weights inside the loss (no Horovod).

    w_pos, w_neg = class_weights(positives=[10, 90], images=100)
    loss = weighted_bce(w_pos, w_neg)           # a Keras loss: loss(y_true, logits)

As in CheXNet (Rajpurkar et al. 2017), per class c with P_c positives and N_c
negatives among the training images: w_pos = N_c / (P_c + N_c) and
w_neg = P_c / (P_c + N_c), so rare positives are not drowned by negatives.
Passing class weights to Keras ``fit`` would be silently ignored for
multi-label outputs; here they are part of the loss itself. A label below 0
(``--uncertain ignore`` of the CSV writer) is masked out: it adds no loss.

The loss takes logits z: -log sigmoid(z) = softplus(-z) and
-log(1 - sigmoid(z)) = softplus(z) are exact and finite for any z, so a
confidently wrong prediction keeps its gradient (clipping probabilities
would zero it).
"""
import numpy as np
import tensorflow as tf


def class_weights(positives, images):
    positives = np.asarray(positives, dtype=np.float64)
    images = np.asarray(images, dtype=np.float64)  # one count, or one a class (its known labels)
    if np.any(images <= 0):
        raise ValueError("class weights need at least one training image")
    return (images - positives) / images, positives / images


def uniform_weights(n_classes):
    """Equal weights for positives and negatives (no training split to count, e.g. random inputs)."""
    return np.full(n_classes, 0.5), np.full(n_classes, 0.5)


def weighted_bce(w_pos, w_neg):
    w_pos = tf.constant(w_pos, tf.float32)
    w_neg = tf.constant(w_neg, tf.float32)

    def loss(y_true, logits):
        y_true = tf.cast(y_true, tf.float32)
        z = tf.cast(logits, tf.float32)
        known = tf.cast(y_true >= 0, tf.float32)  # an ignored label (-1: --uncertain ignore) adds nothing
        per_entry = w_pos * y_true * tf.math.softplus(-z) + w_neg * (1.0 - y_true) * tf.math.softplus(z)
        return tf.reduce_mean(known * per_entry, axis=-1)

    return loss


def weighted_bce_numpy(y_true, logits, w_pos, w_neg):
    """The same loss on numpy arrays (validation after gathering), mean over images."""
    z = logits.astype(np.float64)
    per_entry = (y_true >= 0) * (w_pos * y_true * np.logaddexp(0.0, -z) + w_neg * (1 - y_true) * np.logaddexp(0.0, z))
    return float(per_entry.mean()) if per_entry.size else float("nan")


def sigmoid(logits):
    """Probabilities of numpy logits, computed in float64 (no overflow warning for large |z|)."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))
