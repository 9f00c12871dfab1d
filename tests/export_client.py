"""A user of an export who has neither this project nor tf-keras: plain TensorFlow and ONNX Runtime only.

    python tests/export_client.py EXPORT_DIR OUT.npz image1.png image2.jpg ...

Run by tests/test_export.py in a fresh process with this venv's third-party packages only (helpers'
without_project: -S, so that no editable install's .pth puts the project back; its working folder a
temporary one); it refuses to run where any of the project's packages can be imported. Loads
EXPORT_DIR/savedmodel with tf.saved_model.load, feeds the files' bytes to serving_default, and, when
EXPORT_DIR/model.onnx exists and onnxruntime is installed, feeds the preprocess signature's tensor to the
ONNX file; then, last, the same tensor to model.keras in plain tf-keras. Writes every output to OUT.npz
(onnx_* and keras_* for those files'; a segmentation mask of theirs also resized to each frame by the
model card's nearest-neighbour rule).
"""
import importlib.util
import json
import os
import sys

PROJECT = ("chexnet", "segmentation", "training", "runtime", "dataprep", "smoke")
# Before TensorFlow loads, so that a refusal is cheap: a client that could import the project proves nothing.
if any(importlib.util.find_spec(name) for name in PROJECT):
    raise SystemExit("the project is importable here: this client must run without it")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def nearest(grid, height, width):
    """The model card's rule: source index floor(x * (1 / (dst / src))), as OpenCV's INTER_NEAREST."""
    def index(dst, src):
        return np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(int), src - 1)
    return grid[index(height, grid.shape[0])][:, index(width, grid.shape[1])]


def masks_at_size(logits, pre):
    """Stored-size logits > 0 at each frame's own size by the card's rule, padded with 0 as serving_default."""
    at_size = np.zeros((len(pre["valid"]), pre["height"].max(initial=0), pre["width"].max(initial=0)), np.uint8)
    for i, (z, h, w) in enumerate(zip(logits, pre["height"], pre["width"])):
        at_size[i, :h, :w] = nearest(np.asarray(z).reshape(z.shape[:2]) > 0, h, w)
    return at_size


def run_onnx(path, pre, card):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {"image": pre["image"]})))
    result = {f"onnx_{k}": v for k, v in outputs.items()}
    if card["workload"] == "segmentation":
        result["onnx_mask_at_size"] = masks_at_size(outputs["mask"].astype(np.float32) - 0.5, pre)
    return result


def run_keras(path, pre, card):
    """The Keras file in plain tf-keras (imported only now, after the SavedModel and ONNX checks)."""
    import tf_keras
    logits = tf_keras.models.load_model(path, compile=False)(pre["image"]).numpy()
    result = {"keras_logits": logits}
    if card["workload"] == "segmentation":
        result["keras_mask_at_size"] = masks_at_size(logits, pre)
    return result


def plain(outputs):
    """{name: numpy array}, strings as str (np.load refuses object arrays)."""
    arrays = {k: v.numpy() for k, v in outputs.items()}
    return {k: np.array([b.decode() for b in v.ravel()]).reshape(v.shape) if v.dtype == object else v
            for k, v in arrays.items()}


def main(folder, out, images):
    with open(os.path.join(folder, "model_card.json"), encoding="utf-8") as fh:
        card = json.load(fh)
    model = tf.saved_model.load(os.path.join(folder, "savedmodel"))
    data = tf.constant([open(p, "rb").read() for p in images])
    result = plain(model.signatures["serving_default"](image_bytes=data))
    pre = plain(model.signatures["preprocess"](image_bytes=data))
    onnx = os.path.join(folder, "model.onnx")
    if os.path.isfile(onnx) and importlib.util.find_spec("onnxruntime"):
        result.update(run_onnx(onnx, pre, card))
    result["tf_keras_loaded"] = np.array("tf_keras" in sys.modules)
    keras = os.path.join(folder, "model.keras")
    if os.path.isfile(keras):
        result.update(run_keras(keras, pre, card))
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
