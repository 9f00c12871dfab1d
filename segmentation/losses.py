"""Segmentation losses on logits (no Horovod): Dice, binary cross-entropy, and their sum.

    loss = build_loss("dice_bce")          # a Keras loss: loss(mask (B, H, W, 1), logits (B, H, W, 1)) -> (B,)
    loss = build_loss("dice")              # or "bce"

Every loss is per image, then Keras averages over the batch. The soft Dice of
an image is ``1 - (2 sum(p y) + eps) / (sum(p) + sum(y) + eps)`` with
``p = sigmoid(logits)``: computed per image (not pooled over the batch, which
would let large polyps drown small ones), and ``eps`` makes an image with an
empty mask and an empty prediction score a loss of 0. BCE is computed from
logits (softplus form): finite for any logit, and a confident mistake keeps
its gradient. Dice + BCE (the default) pairs Dice's balance between polyp and
background with BCE's well-behaved gradients early in training.
"""
import tensorflow as tf

SMOOTH = 1.0  # eps above, in pixels


def _flat(y_true, logits):
    # The pixel count is explicit: a -1 cannot be inferred for a batch of zero images.
    shape = tf.shape(logits)
    flat = tf.stack([shape[0], tf.reduce_prod(shape[1:])])
    return tf.cast(tf.reshape(y_true, flat), tf.float32), tf.cast(tf.reshape(logits, flat), tf.float32)


def dice_loss(y_true, logits):
    y, z = _flat(y_true, logits)
    p = tf.sigmoid(z)
    overlap = tf.reduce_sum(p * y, axis=1)
    return 1.0 - (2.0 * overlap + SMOOTH) / (tf.reduce_sum(p, axis=1) + tf.reduce_sum(y, axis=1) + SMOOTH)


def bce_loss(y_true, logits):
    y, z = _flat(y_true, logits)
    return tf.reduce_mean(y * tf.math.softplus(-z) + (1.0 - y) * tf.math.softplus(z), axis=1)


def dice_bce_loss(y_true, logits):
    return dice_loss(y_true, logits) + bce_loss(y_true, logits)


LOSSES = {"dice_bce": dice_bce_loss, "dice": dice_loss, "bce": bce_loss}


def build_loss(name):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
