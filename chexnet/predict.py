"""Predict the 14 pathology probabilities of image files into a CSV.

    python -m chexnet.predict --checkpoint runs/cx/best.npz --out predictions.csv a.png b.jpg
    python -m chexnet.predict --checkpoint runs/cx --out predictions.csv a.png      # the run's best.npz

Each image is read as write_tfrecords.sh reads the training X-rays (the same
function, dataprep.images.load_gray): PNG, JPEG or another format OpenCV
reads, or DICOM; 16-bit brought to 8-bit and a non-square image padded to
square by the writers' rule (docs/data.md), at least 32 px a side,
area-resized to the stored size. A folder stands for the image files under it.
Then the centre crop and ImageNet normalisation of evaluation, in the
precision the checkpoint was validated in unless ``--precision`` says
otherwise. An image the writer would reject (multi-frame DICOM, too small,
unreadable...) is named on stderr with the writer's reason, the others are
still predicted, and the exit status is 1: every image is a row of the CSV or
a reason.

Outputs: ``--out`` must end in .csv and never names an input image. An output
file that already exists stops the command before any work unless
``--overwrite`` is given; each is written under a temporary name and renamed.

``--cam`` also draws Grad-CAM heatmaps (chexnet.cam) of the ``--cam-top-k``
most probable pathologies, or of ``--cam-classes``, over each X-ray:

    python -m chexnet.predict --checkpoint runs/cx/best.npz --out preds.csv --cam a.png

writes ``cam/a.png`` beside ``preds.csv`` (one panel per pathology, its
probability in the title, the heatmap's peak marked) and ``cam/cam.csv``
(image, pathology, probability, peak x and y in the image's own pixels,
the layer used).
"""
import os

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from dataprep.images import image_files
from runtime.errors import UserError, main_guard
from training import paths, prediction, workload

WORKLOAD = workload.get("chexnet")
TRAINER = WORKLOAD.trainer
MAX_BATCH = 65536  # as evaluate's --eval-batch


@main_guard
def main(argv=None):
    parser = prediction.parser(__doc__, TRAINER)
    parser.add_argument("--out", required=True, help="CSV to write (.csv): image, then one probability per class")
    parser.add_argument("--batch", type=int, default=32, help=f"images per forward pass (default 32; 1 to "
                        f"{MAX_BATCH})")
    add_cam_flags(parser)
    args = parser.parse_args(argv)
    args.images = image_files(args.images)
    check_args(args)
    from chexnet.preprocess import read_stored

    state = prediction.read_checkpoint(args, WORKLOAD)
    if args.cam:
        check_cam_classes(args, state["classes"])  # before the model is built
    model = prediction.restored_model(args, WORKLOAD, state)
    cams = CamWriter(args, model, state) if args.cam else None
    bad = []
    images = prediction.each_image(args.images, lambda path: read_stored(path, state["stored_size"]), bad)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows = list(predicted_rows(model, images, state["crop"], args.batch, cams))
    paths.write_csv(args.out, ["image", *state["classes"]], rows)
    if cams:
        cams.write_table()
    prediction.finish(f"wrote {len(rows)} predictions to {args.out}" +
                      (f" and {len(rows)} Grad-CAM panels to {cams.out_dir}" if cams else ""), len(rows), bad,
                      args.images)


def check_args(args):
    """Flags and output paths, before TensorFlow loads: one line, and nothing written."""
    if not args.images:
        raise UserError("no image files in the folders given (PNG, JPEG, TIFF, BMP or DICOM)")
    if not 1 <= args.batch <= MAX_BATCH:
        raise UserError(f"--batch must be 1 to {MAX_BATCH}, got {args.batch}")
    if args.cam_top_k < 1:
        raise UserError(f"--cam-top-k must be >= 1, got {args.cam_top_k}")
    outputs = [(args.out, "--out")]
    folders = {"--out": os.path.dirname(os.path.abspath(args.out))}
    if args.cam:
        folders["--cam-dir"] = cam_dir(args)
        outputs += [(os.path.join(cam_dir(args), "cam.csv"), "the Grad-CAM table"),
                    *((panel, f"the Grad-CAM panel of {image}") for image, panel in panel_paths(args).items())]
    paths.check_targets(outputs, args.images, overwrite=True)  # an input named as an output: said first
    if not args.out.lower().endswith(".csv"):
        raise UserError(f"--out {args.out}: the predictions are a CSV table; give a file name ending in .csv")
    prediction.check_paths(args, TRAINER, folders, outputs)


def predicted_rows(model, images, crop, batch, cams):
    """[image path, probability per class] of each (path, stored image), ``batch`` images per forward pass."""
    import itertools
    import numpy as np
    import tensorflow as tf
    from chexnet.losses import sigmoid
    from chexnet.preprocess import preprocess
    while chunk := list(itertools.islice(images, batch)):
        x = tf.stack([preprocess(tf.constant(img), crop, training=False) for _, img in chunk])
        probs = np.atleast_2d(sigmoid(model(x, training=False).numpy()))
        if cams:
            cams.write(chunk, x, probs)
        for (path, _), p in zip(chunk, probs):
            yield [path, *(f"{v:.9g}" for v in p)]


def cam_dir(args):
    return args.cam_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "cam")


def panel_paths(args):
    """{image: <cam-dir>/<name>.png}; a second image of the same name (another folder) gets _2, _3..."""
    return paths.output_names(cam_dir(args), args.images, ".png", lambda stem, n: f"{stem}_{n}")


def check_cam_classes(args, classes):
    """The --cam-classes named, each among the checkpoint's ``classes``; --cam-top-k at most their number."""
    chosen = [c.strip() for c in args.cam_classes.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in classes]
    if unknown:
        raise UserError(f"--cam-classes: {', '.join(unknown)} not among the checkpoint's classes "
                        f"({', '.join(classes)})")
    if not 1 <= args.cam_top_k <= len(classes):
        raise UserError(f"--cam-top-k {args.cam_top_k}: choose 1 to {len(classes)}")
    return chosen


def add_cam_flags(parser):
    parser.add_argument("--cam", action="store_true", help="also draw Grad-CAM heatmaps (see above)")
    parser.add_argument("--cam-top-k", type=int, default=3, help="heatmaps of the k most probable pathologies "
                        "(default 3; 1 to the checkpoint's number of classes)")
    parser.add_argument("--cam-classes", default="", help="comma-separated pathologies to draw instead of the "
                        "top k, e.g. Cardiomegaly,Effusion")
    parser.add_argument("--cam-layer", default="auto", help="layer of the heatmap: auto (the deepest DenseNet "
                        "block at least 7x7) or a layer name, e.g. conv4_block24_concat")
    parser.add_argument("--cam-dir", default="", help="folder of the panels and cam.csv (default: cam/ beside "
                        "--out)")


class CamWriter:
    """Grad-CAM panels and peaks of each predicted batch: <cam-dir>/<image name>.png, and cam.csv at the end."""

    HEADER = ["image", "pathology", "probability", "peak_x", "peak_y", "layer"]

    def __init__(self, args, model, state):
        from chexnet import cam
        self.crop, self.stored = state["crop"], state["stored_size"]
        self.classes = list(state["classes"])
        self.chosen, self.top_k = check_cam_classes(args, self.classes), args.cam_top_k
        maps = [layer.name for layer in model.layers if len(layer.output.shape) == 4]
        if args.cam_layer != "auto" and args.cam_layer not in maps:
            raise UserError(f"--cam-layer {args.cam_layer!r} is not a feature-map layer of the model; try auto "
                            f"or one of {', '.join(cam.BLOCK_OUTPUTS)}")
        self.layer = cam.feature_layer(model) if args.cam_layer == "auto" else args.cam_layer
        self.probe = cam.probe_model(model, self.layer)
        self.out_dir, self.panels = cam_dir(args), panel_paths(args)
        self.rows = []  # of cam.csv, written once every panel is drawn

    def class_ids(self, probs):
        import numpy as np
        if self.chosen:
            return np.tile([self.classes.index(c) for c in self.chosen], (len(probs), 1))
        return np.argsort(-probs, axis=1, kind="stable")[:, :self.top_k]

    def write(self, chunk, x, probs):
        from chexnet import cam
        from dataprep.images import pad_offset, read_8bit, square
        from runtime.files import atomic_write
        os.makedirs(self.out_dir, exist_ok=True)
        ids = self.class_ids(probs)
        maps = cam.grad_cam(self.probe, x, ids)
        for (path, _), row, p, per_class in zip(chunk, ids, probs, maps):
            own = read_8bit(path)  # the file's pixels as the model saw them, before padding and resizing
            image, (left, top) = square(own), pad_offset(own.shape)
            panels = []
            for k, m in zip(row, per_class):
                heat, box = cam.place(m, self.crop, self.stored, image.shape[:2])
                px, py = cam.peak(heat, box)
                px, py = px - left, py - top  # in the file's own pixels
                self.rows.append([path, self.classes[k], f"{p[k]:.6g}", f"{px:.1f}", f"{py:.1f}", self.layer])
                panels.append((heat, box, self.classes[k], p[k]))
            atomic_write(self.panels[path], lambda tmp: cam.draw_panel(tmp, image, panels))

    def write_table(self):
        paths.write_csv(os.path.join(self.out_dir, "cam.csv"), self.HEADER, self.rows)


if __name__ == "__main__":
    main()
