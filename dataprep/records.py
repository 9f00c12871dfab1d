"""The TFRecord format of image/label records: encode, serialize, parse (no Horovod).

    payload = encode_image(gray_uint8, "png")
    blob = serialize(payload, labels=[0, 1, ...], name="00000013_005.png", patient="00000013",
                     encoding="png", size=256)
    image, labels, name, patient = parse(blob, num_classes=14)   # inside tf.data

Each record holds ``image`` (encoded bytes), ``encoding`` (png|jpeg|raw),
``height``/``width``/``channels``, ``label`` (int64 multi-hot, class order of the
data set), ``name`` (file name) and ``patient`` (patient id). ``parse`` returns
an (H, W, 1) uint8 image whatever the encoding, so readers need not know it.
"""
import cv2
import numpy as np

ENCODINGS = ("png", "jpeg", "raw")


def encode_image(gray, encoding, jpeg_quality=95):
    """2-D uint8 array -> bytes in ``encoding``."""
    if encoding == "raw":
        return np.ascontiguousarray(gray).tobytes()
    if encoding == "png":
        # Level 1: a third faster to write than the default 3, a few % larger.
        ok, buf = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {gray.shape} image as {encoding}")
    return buf.tobytes()


def serialize(payload, labels, name, patient, encoding, size):
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    features = {
        "image": b(payload), "encoding": b(encoding.encode()),
        "height": i([size]), "width": i([size]), "channels": i([1]),
        "label": i(int(x) for x in labels), "name": b(name.encode()), "patient": b(patient.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec(num_classes):
    import tensorflow as tf
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "encoding": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([num_classes], tf.int64),
        "name": tf.io.FixedLenFeature([], tf.string),
        "patient": tf.io.FixedLenFeature([], tf.string),
    }


def decode(features):
    """Decoded (H, W, 1) uint8 image of parsed ``features``, for any encoding."""
    import tensorflow as tf
    shape = tf.stack([features["height"], features["width"], features["channels"]])
    return tf.switch_case(
        tf.cast(tf.argmax(tf.equal(features["encoding"], tf.constant(list(ENCODINGS)))), tf.int32),
        [lambda: tf.reshape(tf.io.decode_png(features["image"], channels=1), shape),
         lambda: tf.reshape(tf.io.decode_jpeg(features["image"], channels=1), shape),
         lambda: tf.reshape(tf.io.decode_raw(features["image"], tf.uint8), shape)])


def parse(serialized, num_classes):
    """One serialized record -> (image uint8 (H, W, 1), labels float32 (C,), name, patient)."""
    import tensorflow as tf
    features = tf.io.parse_single_example(serialized, feature_spec(num_classes))
    return decode(features), tf.cast(features["label"], tf.float32), features["name"], features["patient"]
