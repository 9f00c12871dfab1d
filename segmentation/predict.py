"""Predict polyp masks for image files: one PNG mask per image, at the image's own size.

    python -m segmentation.predict --checkpoint runs/seg/best.npz --out-dir masks/ a.jpg b.png
    python -m segmentation.predict --checkpoint runs/seg --out-dir masks/ a.jpg        # the run's best.npz

Each frame is read as write_tfrecords.sh reads Kvasir-SEG frames (8-bit BGR,
alpha dropped, at least 16x16; JPEG, PNG or another format OpenCV reads) and
goes through the same steps as the training data (area resize to the stored
size, RGB, /255). The network's mask (logit > 0, i.e. probability > 0.5) is
resized back to the frame's size by nearest neighbour and written as
``<out-dir>/<name>.png`` (0 or 255); a second frame of the same name gets
``<name>-1.png``. ``<out-dir>/predictions.csv`` lists each image, its mask and
the polyp share of its pixels. The checkpoint's precision is used unless
``--precision`` says otherwise. A file that cannot be read is named on stderr
with its reason, the others are still predicted, and the exit status is 1.

No mask replaces an input frame, and an output file that already exists stops
the command before any work unless ``--overwrite`` is given; each is written
under a temporary name and renamed.
"""
import os

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from training import paths, prediction, workload

WORKLOAD = workload.get("segmentation")
TRAINER = WORKLOAD.trainer
HEADER = ["image", "mask", "polyp_fraction"]


def mask_paths(out_dir, images):
    """{image: <out-dir>/<stem>.png}, numbered <stem>-1.png, -2... when two inputs share a stem."""
    return paths.output_names(out_dir, images, ".png", lambda stem, n: f"{stem}-{n - 1}")


def read_frame(path):
    """8-bit BGR as the TFRecord writer reads a frame (EXIF orientation applied), or Rejected(its reason)."""
    import cv2
    from dataprep.kvasir_seg.tfrecords import MIN_SIDE
    from dataprep.shards import Rejected
    if not os.path.isfile(path):
        raise Rejected("missing: no such file")
    if os.path.getsize(path) == 0:
        raise Rejected("image is an empty file (0 bytes)")
    frame = cv2.imread(path, cv2.IMREAD_COLOR)
    if frame is None:
        raise Rejected("image unreadable or corrupt (OpenCV could not decode it)")
    if min(frame.shape[:2]) < MIN_SIDE:
        raise Rejected(f"too small: {frame.shape[1]}x{frame.shape[0]}")
    return frame


@main_guard
def main(argv=None):
    parser = prediction.parser(__doc__, TRAINER)
    parser.add_argument("--out-dir", required=True, help="folder for the masks and predictions.csv")
    args = parser.parse_args(argv)
    masks = mask_paths(args.out_dir, args.images)
    table = os.path.join(args.out_dir, "predictions.csv")
    outputs = [(table, "the predictions table"), *((mask, f"the mask of {image}") for image, mask in masks.items())]
    prediction.check_paths(args, TRAINER, {"--out-dir": args.out_dir}, outputs)
    state = prediction.read_checkpoint(args, WORKLOAD)
    model = prediction.restored_model(args, WORKLOAD, state)
    os.makedirs(args.out_dir, exist_ok=True)
    bad = []
    rows = [[path, masks[path], f"{write_mask(model, frame, state['stored_size'], masks[path]):.6f}"]
            for path, frame in prediction.each_image(args.images, read_frame, bad)]
    paths.write_csv(table, HEADER, rows)
    prediction.finish(f"wrote {len(rows)} masks to {args.out_dir}", len(rows), bad, args.images)


def write_mask(model, frame, size, out):
    """The frame's 0/255 mask at its own size to ``out``; returns the polyp share of its pixels."""
    import cv2
    import numpy as np
    import tensorflow as tf
    from runtime.files import atomic_write
    from segmentation.preprocess import normalize, to_stored_form
    x = normalize(tf.constant(to_stored_form(frame, size)))[None]
    polyp = (model(x, training=False).numpy()[0, ..., 0] > 0).astype(np.uint8)
    full = cv2.resize(polyp, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)

    def encode(tmp):
        if not cv2.imwrite(tmp, full * 255):
            raise OSError(f"OpenCV could not write {tmp}")
    atomic_write(out, encode)
    return float(full.mean())


if __name__ == "__main__":
    main()
