"""Predict the 14 pathology probabilities of image files into a CSV.

    python -m chexnet.predict --checkpoint runs/cx/best.npz --out predictions.csv a.png b.jpg

Any size, gray, RGB or RGBA, PNG or JPEG: each image goes through the same
steps as the training data (gray, centre square, area resize to the stored
size, centre crop, ImageNet normalisation), in the precision the checkpoint
was validated in unless ``--precision`` says otherwise. A file that cannot be read is
named on stderr with its reason, the others are still predicted, and the exit
status is 1.
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from training import prediction


@main_guard
def main(argv=None):
    parser = prediction.parser(__doc__, "chexnet.train")
    parser.add_argument("--out", required=True, help="CSV to write: image, then one probability per class")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass (default 32)")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    import numpy as np
    import tensorflow as tf
    from chexnet import model as cx_model
    from chexnet.losses import sigmoid
    from chexnet.preprocess import preprocess, to_stored_form
    from training import checkpoint

    state = prediction.read_checkpoint(args)
    cx_model.check_checkpoint(state, args.checkpoint)
    model = cx_model.build_model(state["crop"], len(state["classes"]))
    checkpoint.restore(args.checkpoint, model, with_optimizer=False)
    good, bad = prediction.read_images(args.images)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("image," + ",".join(state["classes"]) + "\n")
        for start in range(0, len(good), args.batch):
            chunk = good[start:start + args.batch]
            x = tf.stack([preprocess(tf.constant(to_stored_form(img, state["stored_size"])), state["crop"],
                                     training=False) for _, img in chunk])
            probs = sigmoid(model(x, training=False).numpy())
            for (path, _), p in zip(chunk, np.atleast_2d(probs)):
                fh.write(path + "," + ",".join(f"{v:.9g}" for v in p) + "\n")
    prediction.finish(f"wrote {len(good)} predictions to {args.out}", bad)


if __name__ == "__main__":
    main()
