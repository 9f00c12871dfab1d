"""Predict the 14 pathology probabilities of image files into a CSV.

    python -m chexnet.predict --checkpoint runs/cx/best.npz --out predictions.csv a.png b.jpg

Any size, gray, RGB or RGBA, PNG or JPEG: each image goes through the same
steps as the training data (gray, centre square, area resize to the stored
size, centre crop, ImageNet normalisation), in the precision the checkpoint
was validated in unless ``--precision`` says otherwise. A file that cannot be read is
named on stderr with its reason, the others are still predicted, and the exit
status is 1.

``--cam`` also draws Grad-CAM heatmaps (chexnet.cam) of the ``--cam-top-k``
most probable pathologies, or of ``--cam-classes``, over each X-ray:

    python -m chexnet.predict --checkpoint runs/cx/best.npz --out preds.csv --cam a.png

writes ``cam/a.png`` beside ``preds.csv`` (one panel per pathology, its
probability in the title, the heatmap's peak marked) and ``cam/cam.csv``
(image, pathology, probability, peak x and y in the image's own pixels,
the layer used).
"""
import contextlib
import os

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from training import prediction


@main_guard
def main(argv=None):
    parser = prediction.parser(__doc__, "chexnet.train")
    parser.add_argument("--out", required=True, help="CSV to write: image, then one probability per class")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass (default 32)")
    add_cam_flags(parser)
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
    cams = CamWriter(args, model, state) if args.cam else None
    good, bad = prediction.read_images(args.images)
    with open(args.out, "w", encoding="utf-8") as fh, cams or contextlib.nullcontext():
        fh.write("image," + ",".join(state["classes"]) + "\n")
        for start in range(0, len(good), args.batch):
            chunk = good[start:start + args.batch]
            x = tf.stack([preprocess(tf.constant(to_stored_form(img, state["stored_size"])), state["crop"],
                                     training=False) for _, img in chunk])
            probs = np.atleast_2d(sigmoid(model(x, training=False).numpy()))
            for (path, _), p in zip(chunk, probs):
                fh.write(path + "," + ",".join(f"{v:.9g}" for v in p) + "\n")
            if cams:
                cams.write(chunk, x, probs)
    prediction.finish(f"wrote {len(good)} predictions to {args.out}" +
                      (f" and {len(good)} Grad-CAM panels to {cams.out_dir}" if cams else ""), bad)


def add_cam_flags(parser):
    parser.add_argument("--cam", action="store_true", help="also draw Grad-CAM heatmaps (see above)")
    parser.add_argument("--cam-top-k", type=int, default=3, help="heatmaps of the k most probable pathologies "
                        "(default 3)")
    parser.add_argument("--cam-classes", default="", help="comma-separated pathologies to draw instead of the "
                        "top k, e.g. Cardiomegaly,Effusion")
    parser.add_argument("--cam-layer", default="auto", help="layer of the heatmap: auto (the deepest DenseNet "
                        "block at least 7x7) or a layer name, e.g. conv4_block24_concat")
    parser.add_argument("--cam-dir", default="", help="folder of the panels and cam.csv (default: cam/ beside "
                        "--out)")


class CamWriter:
    """Grad-CAM panels and peaks of each predicted batch: <cam-dir>/<image name>.png and cam.csv."""

    def __init__(self, args, model, state):
        from chexnet import cam
        from runtime.errors import UserError
        self.crop, self.stored = state["crop"], state["stored_size"]
        self.classes = list(state["classes"])
        self.chosen = [c.strip() for c in args.cam_classes.split(",") if c.strip()]
        unknown = [c for c in self.chosen if c not in self.classes]
        if unknown:
            raise UserError(f"--cam-classes: {', '.join(unknown)} not among the checkpoint's classes "
                            f"({', '.join(self.classes)})")
        if not 1 <= args.cam_top_k <= len(self.classes):
            raise UserError(f"--cam-top-k {args.cam_top_k}: choose 1 to {len(self.classes)}")
        self.top_k = args.cam_top_k
        maps = [layer.name for layer in model.layers if len(layer.output.shape) == 4]
        if args.cam_layer != "auto" and args.cam_layer not in maps:
            raise UserError(f"--cam-layer {args.cam_layer!r} is not a feature-map layer of the model; try auto "
                            f"or one of {', '.join(cam.BLOCK_OUTPUTS)}")
        self.layer = cam.feature_layer(model) if args.cam_layer == "auto" else args.cam_layer
        self.probe = cam.probe_model(model, self.layer)
        self.out_dir = args.cam_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "cam")
        os.makedirs(self.out_dir, exist_ok=True)
        self.csv = None  # opened by __enter__, closed by __exit__ however prediction ends
        self.taken = set()

    def __enter__(self):
        self.csv = open(os.path.join(self.out_dir, "cam.csv"), "w", encoding="utf-8")
        self.csv.write("image,pathology,probability,peak_x,peak_y,layer\n")
        return self

    def __exit__(self, *exc):
        self.csv.close()
        return False

    def class_ids(self, probs):
        import numpy as np
        if self.chosen:
            return np.tile([self.classes.index(c) for c in self.chosen], (len(probs), 1))
        return np.argsort(-probs, axis=1, kind="stable")[:, :self.top_k]

    def write(self, chunk, x, probs):
        from chexnet import cam
        ids = self.class_ids(probs)
        maps = cam.grad_cam(self.probe, x, ids)
        for (path, image), row, p, per_class in zip(chunk, ids, probs, maps):
            panels = []
            for k, m in zip(row, per_class):
                heat, box = cam.place(m, self.crop, self.stored, image.shape[:2])
                px, py = cam.peak(heat, box)
                self.csv.write(f"{path},{self.classes[k]},{p[k]:.6g},{px:.1f},{py:.1f},{self.layer}\n")
                panels.append((heat, box, self.classes[k], p[k]))
            cam.draw_panel(self.panel_path(path), image, panels)
        self.csv.flush()

    def panel_path(self, image_path):
        """<cam-dir>/<name>.png; a second image of the same name (another folder) gets _2, _3..."""
        stem = os.path.splitext(os.path.basename(image_path))[0]
        name, n = stem, 1
        while name in self.taken:
            n += 1
            name = f"{stem}_{n}"
        self.taken.add(name)
        return os.path.join(self.out_dir, name + ".png")


if __name__ == "__main__":
    main()
