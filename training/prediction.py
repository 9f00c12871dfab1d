"""What every predict entry point shares: the flags, the image files, the checkpoint's precision, the ending.

    parser = prediction.parser(__doc__, "chexnet.train")      # --checkpoint, --precision, images...
    args = parser.parse_args(argv)
    state = prediction.read_checkpoint(args)                  # and sets the precision policy
    good, bad = prediction.read_images(args.images)           # [(path, decoded array)], [(path, reason)]
    ...
    prediction.finish(f"wrote {len(good)} predictions to {args.out}", bad)   # exit 1 if any file failed

Single process, no Horovod: prediction needs none. Images are read as they
are (gray, BGR or BGRA, any size); each trainer brings them to its stored form.
"""
import argparse
import os
import sys

from runtime import precision


def parser(doc, trainer):
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help=f"best.npz or last.npz of a {trainer} run")
    p.add_argument("--precision", default="checkpoint", choices=["checkpoint", *precision.REQUESTS],
                   help="checkpoint (default): the precision the model was trained and validated in")
    p.add_argument("images", nargs="+", help="PNG or JPEG files")
    return p


def read_checkpoint(args):
    """The checkpoint's saved state; sets the Keras precision policy (before any model is built)."""
    import tensorflow as tf
    import tf_keras as keras
    from training import checkpoint
    _, _, state = checkpoint.read(args.checkpoint)
    requested = state.get("precision", "float32") if args.precision == "checkpoint" else args.precision
    choice = precision.choose(requested, on_gpu=bool(tf.config.list_physical_devices("GPU")))
    keras.mixed_precision.set_global_policy(choice.policy)
    return state


def read_images(paths, flags=None):
    """([(path, array as decoded)], [(path, reason)]): every file is one or the other.

    ``flags``: OpenCV's imread flags (default IMREAD_UNCHANGED: gray, BGR or BGRA, any bit depth).
    """
    import cv2
    flags = cv2.IMREAD_UNCHANGED if flags is None else flags
    good, bad = [], []
    for path in paths:
        img = cv2.imread(path, flags) if os.path.isfile(path) else None  # no OpenCV warning
        if img is None:
            bad.append((path, "not found, or not a readable PNG/JPEG"))
        else:
            good.append((path, img))
    return good, bad


def finish(summary, bad):
    """Print ``summary``, name each unreadable file on stderr; exit status 1 if there was one."""
    print(summary, flush=True)
    for path, why in bad:
        print(f"error: {path}: {why}", file=sys.stderr)
    if bad:
        sys.exit(1)
