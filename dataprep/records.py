"""The TFRecord formats: encode, serialize, parse (no Horovod).

Classification (ChestX-ray14: one gray image, multi-hot labels, patient id):

    payload = encode_image(gray_uint8, "png")
    blob = serialize(payload, labels=[0, 1, ...], name="00000013_005.png", patient="00000013",
                     encoding="png", size=256)
    image, labels, name, patient = parse(blob, num_classes=14)   # inside tf.data

Segmentation (Kvasir-SEG: a colour image and its binary mask):

    blob = serialize_segmentation(encode_image(bgr_uint8, "raw"), encode_image(mask01, "png"),
                                  name="cju0qkwl35piu0993l0dewei2", encoding="raw", mask_encoding="png", size=256)
    image, mask, name = parse_segmentation(blob)                 # (S, S, 3) RGB uint8, (S, S, 1) 0/1 uint8

Images go in as OpenCV gives them (gray, or BGR for colour) and come out of
``parse*`` as gray or RGB, whatever the encoding (png, jpeg or raw), so readers
need not know it. Each record holds the encoded bytes, their encoding,
``height``/``width``/``channels``, and the name of the source file.
"""
import cv2
import numpy as np

ENCODINGS = ("png", "jpeg", "raw")


def encode_image(img, encoding, jpeg_quality=95):
    """Gray (H, W) or BGR (H, W, 3) uint8 array -> bytes in ``encoding`` (colour is stored as RGB)."""
    if encoding == "raw":
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img
        return np.ascontiguousarray(rgb).tobytes()
    if encoding == "png":
        # Level 1: a third faster to write than the default 3, a few % larger.
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} image as {encoding}")
    return buf.tobytes()


def _bytes(v):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _ints(v):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))


def _example(features):
    import tensorflow as tf
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def serialize(payload, labels, name, patient, encoding, size):
    features = {
        "image": _bytes(payload), "encoding": _bytes(encoding.encode()),
        "height": _ints([size]), "width": _ints([size]), "channels": _ints([1]),
        "label": _ints(int(x) for x in labels), "name": _bytes(name.encode()), "patient": _bytes(patient.encode()),
    }
    return _example(features)


def serialize_segmentation(image_payload, mask_payload, name, encoding, mask_encoding, size):
    if mask_encoding == "jpeg":
        raise ValueError("masks must be stored losslessly (png or raw): JPEG would blur their edges")
    features = {
        "image": _bytes(image_payload), "encoding": _bytes(encoding.encode()),
        "height": _ints([size]), "width": _ints([size]), "channels": _ints([3]),
        "mask": _bytes(mask_payload), "mask_encoding": _bytes(mask_encoding.encode()),
        "name": _bytes(name.encode()),
    }
    return _example(features)


def _image_spec():
    import tensorflow as tf
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "encoding": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "name": tf.io.FixedLenFeature([], tf.string),
    }


def feature_spec(num_classes):
    import tensorflow as tf
    return dict(_image_spec(), label=tf.io.FixedLenFeature([num_classes], tf.int64),
                patient=tf.io.FixedLenFeature([], tf.string))


def segmentation_spec():
    import tensorflow as tf
    return dict(_image_spec(), mask=tf.io.FixedLenFeature([], tf.string),
                mask_encoding=tf.io.FixedLenFeature([], tf.string))


def decode_bytes(payload, encoding, height, width, channels):
    """(H, W, channels) uint8 of ``payload`` in ``encoding``; ``channels`` a Python int (1 or 3)."""
    import tensorflow as tf
    shape = tf.stack([height, width, tf.constant(channels, tf.int64)])
    return tf.switch_case(
        tf.cast(tf.argmax(tf.equal(encoding, tf.constant(list(ENCODINGS)))), tf.int32),
        [lambda: tf.reshape(tf.io.decode_png(payload, channels=channels), shape),
         lambda: tf.reshape(tf.io.decode_jpeg(payload, channels=channels), shape),
         lambda: tf.reshape(tf.io.decode_raw(payload, tf.uint8), shape)])


def decode(features, channels=1):
    """Decoded (H, W, channels) uint8 image of parsed ``features``, for any encoding."""
    return decode_bytes(features["image"], features["encoding"], features["height"], features["width"], channels)


def parse(serialized, num_classes):
    """One serialized record -> (image uint8 (H, W, 1), labels float32 (C,), name, patient)."""
    import tensorflow as tf
    features = tf.io.parse_single_example(serialized, feature_spec(num_classes))
    return decode(features), tf.cast(features["label"], tf.float32), features["name"], features["patient"]


def parse_segmentation(serialized):
    """One serialized record -> (image uint8 (H, W, 3) RGB, mask uint8 (H, W, 1) of 0/1, name)."""
    import tensorflow as tf
    features = tf.io.parse_single_example(serialized, segmentation_spec())
    mask = decode_bytes(features["mask"], features["mask_encoding"], features["height"], features["width"], 1)
    return decode(features, channels=3), mask, features["name"]
