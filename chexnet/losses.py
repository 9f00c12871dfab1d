"""Class-weighted binary cross-entropy, the weights inside the loss (no Horovod).

    w_pos, w_neg = class_weights(positives=[10, 90], images=100)
    loss = weighted_bce(w_pos, w_neg)           # a Keras loss: loss(y_true, y_prob)

As in CheXNet (Rajpurkar et al. 2017), per class c with P_c positives and N_c
negatives among the training images: w_pos = N_c / (P_c + N_c) and
w_neg = P_c / (P_c + N_c), so rare positives are not drowned by negatives.
Passing class weights to Keras ``fit`` would be silently ignored for
multi-label outputs; here they are part of the loss itself.
"""
import numpy as np
import tensorflow as tf

EPSILON = 1e-7


def class_weights(positives, images):
    positives = np.asarray(positives, dtype=np.float64)
    if images <= 0:
        raise ValueError("class weights need at least one training image")
    return (images - positives) / images, positives / images


def weighted_bce(w_pos, w_neg):
    w_pos = tf.constant(w_pos, tf.float32)
    w_neg = tf.constant(w_neg, tf.float32)

    def loss(y_true, y_prob):
        y_true = tf.cast(y_true, tf.float32)
        p = tf.clip_by_value(tf.cast(y_prob, tf.float32), EPSILON, 1.0 - EPSILON)
        per_entry = -(w_pos * y_true * tf.math.log(p) + w_neg * (1.0 - y_true) * tf.math.log(1.0 - p))
        return tf.reduce_mean(per_entry, axis=-1)

    return loss


def weighted_bce_numpy(y_true, y_prob, w_pos, w_neg):
    """The same loss on numpy arrays (validation after gathering), mean over images."""
    p = np.clip(y_prob.astype(np.float64), EPSILON, 1 - EPSILON)
    per_entry = -(w_pos * y_true * np.log(p) + w_neg * (1 - y_true) * np.log(1 - p))
    return float(per_entry.mean()) if per_entry.size else float("nan")
