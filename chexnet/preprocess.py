"""The one input transform of training, evaluation and prediction (no Horovod).

    x = preprocess(image_uint8, crop=224, training=True, seed=tf.constant([7, 42]))

``image``: (H, W, 1) uint8 as stored (256x256 by default). Training takes a
random ``crop`` and a random horizontal flip, both stateless in ``seed`` so a
resumed run sees the same augmentations; evaluation takes the centre crop.
Then pixels are scaled to [0, 1] once, the gray channel is repeated to RGB, and
ImageNet mean/std normalisation is applied (what DenseNet121 was built for).
``load_for_prediction`` turns any image file into the stored form first.
"""
import cv2
import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(image, crop, training, seed=None):
    if training:
        image = tf.image.stateless_random_crop(image, (crop, crop, 1), seed=seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    else:
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        image = tf.image.crop_to_bounding_box(image, (h - crop) // 2, (w - crop) // 2, crop, crop)
    x = tf.cast(image, tf.float32) / 255.0
    x = tf.image.grayscale_to_rgb(x)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def to_stored_form(img, stored_size):
    """Any decoded image (gray, RGB or RGBA; any size) -> (S, S, 1) uint8 as in the records."""
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    h, w = img.shape
    side = min(h, w)  # centre square: resizing a non-square image would distort anatomy
    img = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    img = cv2.resize(img, (stored_size, stored_size), interpolation=cv2.INTER_AREA)
    return img[..., None]
