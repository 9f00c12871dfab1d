"""Predict the 14 pathology probabilities of image files into a CSV.

    python -m chexnet.predict --checkpoint runs/cx/best.npz --out predictions.csv a.png b.jpg

Any size, gray, RGB or RGBA, PNG or JPEG: each image goes through the same
steps as the training data (gray, centre square, area resize to the stored
size, centre crop, ImageNet normalisation), in the precision the checkpoint
was validated in unless ``--precision`` says otherwise. A file that cannot be read is
named on stderr with its reason, the others are still predicted, and the exit
status is 1.
"""
import argparse
import sys

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime import precision
from runtime.errors import main_guard


def load_images(paths, stored_size):
    import cv2
    from chexnet.preprocess import to_stored_form
    good, bad = [], []
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            bad.append((path, "not found, or not a readable PNG/JPEG"))
        else:
            good.append((path, to_stored_form(img, stored_size)))
    return good, bad


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="best.npz or last.npz of a chexnet.train run")
    parser.add_argument("--out", required=True, help="CSV to write: image, then one probability per class")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="checkpoint", choices=["checkpoint", *precision.REQUESTS],
                        help="checkpoint (default): the precision the model was trained and validated in")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from chexnet import model as cx_model
    from training import checkpoint
    from chexnet.losses import sigmoid
    from chexnet.preprocess import preprocess

    _, _, state = checkpoint.read(args.checkpoint)
    cx_model.check_checkpoint(state, args.checkpoint)
    requested = state.get("precision", "float32") if args.precision == "checkpoint" else args.precision
    choice = precision.choose(requested, on_gpu=bool(tf.config.list_physical_devices("GPU")))
    keras.mixed_precision.set_global_policy(choice.policy)  # before the model is built
    model = cx_model.build_model(state["crop"], len(state["classes"]))
    checkpoint.restore(args.checkpoint, model, with_optimizer=False)
    good, bad = load_images(args.images, state["stored_size"])
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("image," + ",".join(state["classes"]) + "\n")
        for start in range(0, len(good), args.batch):
            chunk = good[start:start + args.batch]
            x = tf.stack([preprocess(tf.constant(img), state["crop"], training=False) for _, img in chunk])
            probs = sigmoid(model(x, training=False).numpy())
            for (path, _), p in zip(chunk, np.atleast_2d(probs)):
                fh.write(path + "," + ",".join(f"{v:.9g}" for v in p) + "\n")
    print(f"wrote {len(good)} predictions to {args.out}", flush=True)
    for path, why in bad:
        print(f"error: {path}: {why}", file=sys.stderr)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
