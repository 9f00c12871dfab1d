"""Predict polyp masks for image files: one PNG mask per image, at the image's own size.

    python -m segmentation.predict --checkpoint runs/seg/best.npz --out-dir masks/ a.jpg b.png

Any size, RGB, RGBA or gray, JPEG or PNG: each frame goes through the same
steps as the training data (area resize to the stored size, RGB, /255), the
network's mask (logit > 0, i.e. probability > 0.5) is resized back to the
frame's size by nearest neighbour and written as ``<out-dir>/<name>.png``
(0 or 255). ``<out-dir>/predictions.csv`` lists each image, its mask and the
polyp share of its pixels. The checkpoint's precision is used unless
``--precision`` says otherwise. A file that cannot be read is named on stderr
with its reason, the others are still predicted, and the exit status is 1.
"""
import os

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from training import prediction


def mask_name(out_dir, path, taken):
    """<out-dir>/<stem>.png, numbered when two inputs share a stem."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, k = f"{stem}.png", 1
    while name in taken:
        name, k = f"{stem}-{k}.png", k + 1
    taken.add(name)
    return os.path.join(out_dir, name)


@main_guard
def main(argv=None):
    parser = prediction.parser(__doc__, "segmentation.train")
    parser.add_argument("--out-dir", required=True, help="folder for the masks and predictions.csv")
    args = parser.parse_args(argv)
    import cv2
    import numpy as np
    import tensorflow as tf
    from segmentation import model as seg_model
    from segmentation.preprocess import normalize, to_stored_form
    from training import checkpoint

    state = prediction.read_checkpoint(args)
    seg_model.check_checkpoint(state, args.checkpoint)
    size = state["stored_size"]
    model = seg_model.build_model(state["model"], size)
    checkpoint.restore(args.checkpoint, model, with_optimizer=False)
    os.makedirs(args.out_dir, exist_ok=True)
    # 8-bit BGR, EXIF orientation applied: as the TFRecord writer reads the frames.
    good, bad = prediction.read_images(args.images, cv2.IMREAD_COLOR)
    taken = set()
    with open(os.path.join(args.out_dir, "predictions.csv"), "w", encoding="utf-8") as fh:
        fh.write("image,mask,polyp_fraction\n")
        for path, frame in good:
            x = normalize(tf.constant(to_stored_form(frame, size)))[None]
            polyp = (model(x, training=False).numpy()[0, ..., 0] > 0).astype(np.uint8)
            full = cv2.resize(polyp, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
            out = mask_name(args.out_dir, path, taken)
            cv2.imwrite(out, full * 255)
            fh.write(f"{path},{out},{full.mean():.6f}\n")
    prediction.finish(f"wrote {len(good)} masks to {args.out_dir}", bad)


if __name__ == "__main__":
    main()
