"""Export a CheXNet checkpoint for use without this code: SavedModel (preprocessing inside), ONNX, Keras, card.

    python -m chexnet.export --checkpoint runs/cx --out exported/cx
    python -m chexnet.export --checkpoint runs/cx/best.npz --out exported/cx --format savedmodel,onnx

Writes into ``--out`` (a new or empty folder; training.export):

- ``savedmodel/``: ``serving_default`` takes ``image_bytes``, a batch of
  encoded PNG or JPEG files, and reads each as predict does (the TFRecord
  writers' rule, dataprep.images: 8-bit gray, RGB or RGBA to gray, padded
  with black to square, at least 32 px a side, area-resized to the stored
  size; training.image_graph), then the centre crop, /255, gray to RGB and
  ImageNet normalisation. Outputs ``probabilities`` (N, classes) in the
  checkpoint's class order, ``valid`` and ``reason``: an image predict
  refuses (too small, empty) is ``valid`` False with predict's reason, and
  NaN probabilities. A 16-bit PNG, which predict reads by the writers'
  16-bit rule, is refused here too (SIXTEEN_BIT): bring it to 8-bit first,
  or use chexnet.predict; DICOM is for chexnet.predict only.
  ``serving_tensor`` takes the normalised (N, crop, crop, 3) float32 tensor;
  ``preprocess`` gives it.
- ``model.onnx``: serving_tensor (input ``image``, output ``probabilities``).
- With ``--operating-point youden|sensitivity``: a ``positive`` output too
  (probability >= the class's threshold, chosen on val by chexnet.evaluate).
- ``model.keras``: the network (normalised tensor in, logits out), for
  fine-tuning in tf-keras.
- ``model_card.json`` and ``MODEL_CARD.md``.
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from chexnet.operating import KINDS
from training import export

MIN_SIDE = 32  # dataprep.images.MIN_SIDE: the writer refuses smaller X-rays
NOT_PNG_OR_JPEG = "not a PNG or JPEG image (the exported model decodes those two formats only)"
# Predict's 16-bit rule stretches the image's own range; the graph reads 8-bit only (docs/export.md).
SIXTEEN_BIT = "16-bit PNG: the exported model reads 8-bit images only (chexnet.predict reads 16-bit)"


def input_shape(state):
    return (state["crop"], state["crop"], 3)


def read_image(data, state):
    """(normalised crop, reason or "", [height, width]) of one encoded image, as predict reads a file."""
    import tensorflow as tf
    from chexnet.preprocess import preprocess
    from training import image_graph
    size = state["stored_size"]
    image, known = image_graph.decode(data, channels=1)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    reason = image_graph.first_reason([
        (tf.strings.length(data) == 0, "empty file (0 bytes)"),
        (~known, NOT_PNG_OR_JPEG),
        (image_graph.png_bit_depth(data) == 16, SIXTEEN_BIT),
        (tf.maximum(h, w) > image_graph.MAX_SIDE, image_graph.TOO_LARGE),
        (tf.minimum(h, w) < MIN_SIDE,
         tf.strings.format(f"unexpected size {{}}x{{}}: smaller than {MIN_SIDE}x{MIN_SIDE}", (w, h)))])
    stored = tf.cond(tf.equal(reason, ""), lambda: image_graph.area_resize(image_graph.pad_square(image), size),
                     lambda: tf.zeros([size, size, 1], tf.uint8))
    return preprocess(stored, state["crop"], training=False), reason, tf.where(known, tf.stack([h, w]), 0)


def with_positive(probabilities, state):
    """The probabilities, and with --operating-point ``positive``: probability >= the class's threshold
    (False where val chose none: a NaN threshold; False for an invalid image's NaN probabilities)."""
    import tensorflow as tf
    if "thresholds" not in state:
        return {"probabilities": probabilities}
    thresholds = tf.constant(state["thresholds"], tf.float32)
    return {"probabilities": probabilities, "positive": probabilities >= thresholds}


def tensor_outputs(logits, state):
    import tensorflow as tf
    return with_positive(tf.sigmoid(logits), state)


def image_outputs(logits, pre, state):
    import tensorflow as tf
    return with_positive(tf.where(pre["valid"][:, None], tf.sigmoid(logits), float("nan")), state)


def describe(state):
    from chexnet.preprocess import IMAGENET_MEAN, IMAGENET_STD
    crop, stored = state["crop"], state["stored_size"]
    return {"model": "densenet121", "classes": list(state["classes"]),
            "input_contract": [
                "serving_default: image_bytes, a batch of encoded PNG or JPEG files (other formats: valid False)",
                f"read as chexnet.predict reads a file: 8-bit gray, RGB or RGBA (converted to gray by OpenCV's "
                f"formula), a non-square image padded with black to square (centred), at least {MIN_SIDE} px a "
                f"side; a smaller or empty image is valid False with predict's reason and NaN probabilities",
                "a 16-bit PNG is valid False (predict reads it by the writers' 16-bit rule, this model does not): "
                "bring it to 8-bit first; DICOM: chexnet.predict only",
                f"area-resized to the stored {stored}x{stored} (OpenCV's INTER_AREA, reproduced), centre crop "
                f"{crop}x{crop}, /255, gray repeated to RGB, ImageNet mean {list(IMAGENET_MEAN)} and std "
                f"{list(IMAGENET_STD)}",
                f"serving_tensor and model.onnx: that normalised (N, {crop}, {crop}, 3) float32 tensor, "
                f"named image; the preprocess signature computes it",
                "EXIF orientation is not applied (predict does not apply it either for X-rays)"],
            "outputs": {"probabilities": "(N, classes) float32, sigmoid of the logits, in the class order above; "
                                         "NaN where valid is False",
                        **({"positive": f"(N, classes) bool, probability >= the class's {state['operating_point']} "
                                        f"threshold (Operating points below); False where none was chosen"}
                           if "thresholds" in state else {}),
                        "valid": "(N,) bool (serving_default)", "reason": "(N,) string, \"\" when valid",
                        "model.keras": "the network: the normalised tensor in, logits (N, classes) out"}}


EXPORT = export.ExportParts(input_shape=input_shape, read_image=read_image, tensor_outputs=tensor_outputs,
                           image_outputs=image_outputs, describe=describe, operating_points=KINDS)


@main_guard
def main(argv=None):
    export.main("chexnet", __doc__, argv)


if __name__ == "__main__":
    main()
