"""The one input transform of training, evaluation and prediction (no Horovod), in two halves.

    x = preprocess(image_uint8, crop=224, training=True, seed=tf.constant([7, 42]))
    stored = crop_image(image_uint8, crop=224, training=True, seed=...)   # the input pipeline's half
    x = normalise(stored)                                                 # the device's half (batched too)

``image``: (H, W, 1) uint8 as stored (256x256 by default). Training takes a
random ``crop`` and a random horizontal flip, both stateless in ``seed`` so a
resumed run sees the same augmentations; evaluation takes the centre crop.
The crop stays uint8: the trainers' batches cross to the device at one byte a
pixel (``Workload.device_model``). ``normalise`` then scales pixels to [0, 1],
repeats the gray channel to RGB, and applies ImageNet mean/std normalisation
(what DenseNet121 was built for), in float32.

    image = read_stored("scan.png", stored_size=256)   # a file as the records hold it, for prediction

``read_stored`` is the TFRecord writers' own reader (dataprep.images: DICOM,
16-bit and non-square images by one rule): an image it rejects (too small,
multi-frame, unreadable) is rejected with its reason.
"""
import os

import tensorflow as tf

from dataprep.images import load_gray
from dataprep.shards import Rejected

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_image(image, crop, training, seed=None):
    """(crop, crop, 1) uint8: a seeded random crop and flip when ``training``, else the centre crop."""
    if training:
        image = tf.image.stateless_random_crop(image, (crop, crop, 1), seed=seed)
        return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    return tf.image.crop_to_bounding_box(image, (h - crop) // 2, (w - crop) // 2, crop, crop)


def normalise(image):
    """(..., 1) uint8 -> (..., 3) float32, ImageNet-normalised."""
    x = tf.image.grayscale_to_rgb(tf.cast(image, tf.float32) / 255.0)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def preprocess(image, crop, training, seed=None):
    return normalise(crop_image(image, crop, training, seed))


def read_stored(path, stored_size):
    """(S, S, 1) uint8, read as write_tfrecords.sh reads an X-ray (dataprep.images.load_gray); raises dataprep.shards.Rejected with the writer's reason for what it would not store."""
    if not os.path.isfile(path):  # the writer's own words for this are about extraction
        raise Rejected("missing: no such file")
    return load_gray(path, stored_size)[..., None]
