"""Export a segmentation checkpoint for use without this code: SavedModel (pre- and post-processing inside),
ONNX, Keras, card.

    python -m segmentation.export --checkpoint runs/seg --out exported/seg
    python -m segmentation.export --checkpoint runs/seg/best.npz --out exported/seg --format savedmodel,onnx

Writes into ``--out`` (a new or empty folder; training.export):

- ``savedmodel/``: ``serving_default`` takes ``image_bytes``, a batch of
  encoded PNG or JPEG frames, and reads each as predict does (8-bit colour,
  a 16-bit PNG by its high byte, alpha dropped, gray repeated, at least
  16x16, area-resized to the stored size, /255; training.image_graph). It
  gives each frame's ``probability`` and ``mask`` (logit > 0, 0 or 1) at the
  frame's own size, resized from the stored size by nearest neighbour as
  predict's mask PNG is (that PNG is mask x 255). Frames of a batch may differ
  in size: the outputs are (N, largest height, largest width), padded with 0,
  and ``height`` and ``width`` say each frame's own. ``valid`` False (with
  predict's reason in ``reason``; NaN probability, zero mask, size 0) for a
  frame predict refuses. ``serving_tensor`` takes the (N, S, S, 3) tensor in
  [0, 1]; ``preprocess`` gives it.
- ``model.onnx``: serving_tensor (input ``image``; outputs ``probability``
  and ``mask`` at the stored size).
- ``model.keras``: the network (tensor in, logits out), for fine-tuning in
  tf-keras; not for SegNet, whose pooling-switch layer is this project's.
- ``model_card.json`` and ``MODEL_CARD.md``.
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from training import export

MIN_SIDE = 16  # dataprep.kvasir_seg.tfrecords.MIN_SIDE: predict refuses smaller frames
NOT_PNG_OR_JPEG = "not a PNG or JPEG image (the exported model decodes those two formats only)"
CUSTOM_LAYERS = {"segnet": "PoolSwitch", "fcn8s": "CountedDropout"}  # networks with a layer of this project's own


def input_shape(state):
    return (state["stored_size"], state["stored_size"], 3)


def keras_problem(state):
    layer = CUSTOM_LAYERS.get(state["model"])
    return (f"{state['model']} has a layer of this project's own ({layer}): a Keras file of it would not load "
            f"without this code") if layer else None


def read_image(data, state):
    """(stored-size RGB in [0, 1], reason or "", [height, width]) of one encoded frame, as predict reads it."""
    import tensorflow as tf
    from segmentation.preprocess import normalize
    from training import image_graph
    size = state["stored_size"]
    image, known = image_graph.decode(data, channels=3)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    reason = image_graph.first_reason([
        (tf.strings.length(data) == 0, "image is an empty file (0 bytes)"),
        (~known, NOT_PNG_OR_JPEG),
        (tf.maximum(h, w) > image_graph.MAX_SIDE, image_graph.TOO_LARGE),
        (tf.minimum(h, w) < MIN_SIDE, tf.strings.format("too small: {}x{}", (w, h)))])
    valid = tf.equal(reason, "")
    stored = tf.cond(valid, lambda: image_graph.area_resize(image, size), lambda: tf.zeros([size, size, 3], tf.uint8))
    return normalize(stored), reason, tf.where(valid, tf.stack([h, w]), 0)


def tensor_outputs(logits, state):
    import tensorflow as tf
    return {"probability": tf.sigmoid(logits[..., 0]), "mask": tf.cast(logits[..., 0] > 0, tf.uint8)}


def image_outputs(logits, pre, state):
    """Probability and mask at each frame's own size (nearest neighbour, as predict), padded to the batch's
    largest; NaN probability where the frame is not valid."""
    import tensorflow as tf
    from training import image_graph
    size, heights, widths = state["stored_size"], pre["height"], pre["width"]
    tallest, widest = tf.reduce_max(tf.concat([heights, [0]], 0)), tf.reduce_max(tf.concat([widths, [0]], 0))

    def at_size(args):
        z, h, w = args
        grid = tf.gather(tf.gather(z[..., 0], image_graph.nearest_index(h, size)), image_graph.nearest_index(w, size),
                         axis=1)
        return tf.pad(grid, [[0, tallest - h], [0, widest - w]])
    z = tf.map_fn(at_size, (logits, heights, widths), fn_output_signature=tf.TensorSpec([None, None], tf.float32))
    probability = tf.where(pre["valid"][:, None, None], tf.sigmoid(z), float("nan"))
    inside = (tf.range(tallest)[None, :, None] < heights[:, None, None]) & \
        (tf.range(widest)[None, None, :] < widths[:, None, None])
    return {"probability": tf.where(inside | ~pre["valid"][:, None, None], probability, 0.0),
            "mask": tf.cast((z > 0) & inside, tf.uint8), "height": heights, "width": widths}


def describe(state):
    size = state["stored_size"]
    return {"model": state["model"], "classes": ["polyp"],
            "input_contract": [
                "serving_default: image_bytes, a batch of encoded PNG or JPEG frames (other formats: valid False)",
                f"read as segmentation.predict reads a file: 8-bit colour (a 16-bit PNG by its high byte, alpha "
                f"dropped, gray repeated to RGB), at least {MIN_SIDE}x{MIN_SIDE}; an empty or smaller frame is "
                f"valid False with predict's reason",
                f"area-resized to the stored {size}x{size} (OpenCV's INTER_AREA, reproduced), RGB, /255",
                f"serving_tensor and model.onnx: that (N, {size}, {size}, 3) float32 tensor in [0, 1], named "
                f"image; the preprocess signature computes it",
                "EXIF orientation is not applied (predict applies it to JPEG frames: pass frames without an "
                "orientation tag, or rotated already)"],
            "outputs": {"probability": "(N, H, W) float32 sigmoid at each frame's own size (nearest neighbour "
                                       "from the stored size), padded with 0 to the batch's largest; NaN where "
                                       "valid is False; serving_tensor and ONNX: at the stored size",
                        "mask": "(N, H, W) uint8, 1 where the logit > 0 (predict's mask PNG is this x 255)",
                        "height": "(N,) int32, each frame's own height (0 when not valid)",
                        "width": "(N,) int32, each frame's own width (0 when not valid)",
                        "valid": "(N,) bool", "reason": "(N,) string, \"\" when valid",
                        "model.keras": "the network: the tensor in, logits (N, S, S, 1) out"}}


EXPORT = export.ExportParts(input_shape=input_shape, read_image=read_image,
                           tensor_outputs=tensor_outputs, image_outputs=image_outputs, describe=describe,
                           keras_problem=keras_problem)


@main_guard
def main(argv=None):
    export.main("segmentation", __doc__, argv)


if __name__ == "__main__":
    main()
