"""The input transforms of segmentation: augmentation that moves image and mask together (no Horovod).

    x, y = augment(image_uint8, mask_uint8, seed=tf.constant([7, 42]))   # training: x uint8 again
    x = normalize(image_uint8)                                              # on the device; prediction
    stored = to_stored_form(cv2.imread("frame.jpg"), 256)                  # any frame -> the record's form

``image``: (S, S, 3) RGB uint8 as stored; ``mask``: (S, S, 1) 0/1 uint8.
Augmentation is stateless in ``seed`` (a resumed run sees the same one) and
applies every geometric change to image and mask stacked as one tensor, so
they cannot drift apart: random horizontal and vertical flips, a rotation by
a multiple of 90 degrees, and a zoom (a random square crop of 75-100% of the
side, resized back: bilinear for the image, nearest for the mask, which stays
0/1). Brightness and contrast then change the image only. The augmented image
is rounded back to uint8 (half a gray level at most): the trainers' batches
cross to the device at one byte a pixel, where ``normalize`` scales pixels to
[0, 1] (``Workload.device_model``).
"""
import cv2
import tensorflow as tf

ZOOM = (0.75, 1.0)


def normalize(image):
    return tf.cast(image, tf.float32) / 255.0


def _geometric(both, seed):
    """Flips, a quarter-turn rotation and a zoom crop of the stacked (S, S, 4) image+mask."""
    size = tf.shape(both)[0]
    both = tf.image.stateless_random_flip_left_right(both, seed)
    both = tf.image.stateless_random_flip_up_down(both, seed + 1)
    both = tf.image.rot90(both, tf.random.stateless_uniform([], seed + 2, 0, 4, tf.int32))
    scale = tf.random.stateless_uniform([], seed + 3, *ZOOM)
    side = tf.cast(tf.round(scale * tf.cast(size, tf.float32)), tf.int32)
    return tf.image.stateless_random_crop(both, tf.stack([side, side, 4]), seed + 4), size


def augment(image, mask, seed):
    """(x uint8 (S, S, 3), y float32 (S, S, 1) of 0/1), seeded by the int64 pair ``seed``."""
    both = tf.concat([normalize(image), tf.cast(mask, tf.float32)], axis=-1)
    both, size = _geometric(both, seed)
    x = tf.image.resize(both[..., :3], [size, size], method="bilinear")
    y = tf.image.resize(both[..., 3:], [size, size], method="nearest")
    x = tf.image.stateless_random_brightness(x, 0.1, seed + 5)
    x = tf.image.stateless_random_contrast(x, 0.8, 1.2, seed + 6)
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8), y


def to_stored_form(img_bgr, size):
    """A frame as ``cv2.imread(path, cv2.IMREAD_COLOR)`` gives it (8-bit BGR, any size) -> (size, size, 3)
    RGB uint8 as in the records."""
    # Area interpolation, as the TFRecord writer resizes: the model sees the same pixels.
    return cv2.cvtColor(cv2.resize(img_bgr, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
