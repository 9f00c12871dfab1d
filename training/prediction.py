"""What every predict entry point shares: the flags, the checkpoint, the image files, the outputs, the ending.

    parser = prediction.parser(__doc__, "chexnet.train")      # --checkpoint, --precision, --overwrite, images...
    args = parser.parse_args(argv)
    prediction.check_paths(args, "chexnet.train", {"--out": "out"}, [("out/p.csv", "--out")])  # before TF
    state = prediction.read_checkpoint(args, wl)              # wl: training.workload.get("chexnet"); sets the precision
    model = prediction.restored_model(args, wl, state)
    bad = []
    for path, image in prediction.each_image(args.images, load, bad):   # one at a time; bad: [(path, reason)]
        ...
    prediction.finish(f"wrote {n} predictions to {args.out}", n, bad, args.images)   # exit 1 if any was bad

Outputs never replace an input image; an output file that already exists
(from an earlier run, or the user's) stops the command before any work
unless ``--overwrite`` is given (training.paths). ``--checkpoint`` takes a
checkpoint file or a run folder, which stands for its best.npz.

Single process, no Horovod: prediction needs none. ``--device`` chooses as the
trainers do (runtime.devices): one GPU, with memory growth, whose compute
capability sets the ``auto`` precision; a node whose GPUs TensorFlow cannot
see is refused in one line. Each entry point reads the
images the way its TFRecord writer does, and refuses, per image and with the
writer's reason, what the writer rejects.
"""
import argparse
import sys

from dataprep.shards import Rejected
from runtime import devices, precision
from runtime.files import check_writable_folder
from training import paths

OVERWRITE_HELP = ("replace output files that already exist (an input image never is); without it an existing "
                  "output stops the command before any work")


def parser(doc, trainer):
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help=f"best.npz or last.npz of a {trainer} run, or the run's "
                   f"folder (its best.npz)")
    p.add_argument("--precision", default="checkpoint", choices=["checkpoint", *precision.REQUESTS],
                   help="checkpoint (default): the precision the model was trained and validated in")
    p.add_argument("--device", default="auto", choices=devices.DEVICES,
                   help="auto (default): a GPU TensorFlow sees, else the CPU, refusing a node whose GPUs it cannot "
                        "see; gpu: require one; cpu: hide them")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("images", nargs="+", help="image files")
    return p


def check_paths(args, trainer, folders, outputs):
    """Before TensorFlow loads: every output folder ({flag: folder}) is writable, no output [(path, what
    it is)] replaces an input or, without --overwrite, any existing file, and the checkpoint exists (a run
    folder stands for its best.npz, and the choice is printed)."""
    for what, folder in folders.items():
        check_writable_folder(folder, what)
    paths.check_targets(outputs, args.images, args.overwrite)
    args.checkpoint, note = paths.locate_checkpoint(args.checkpoint, trainer)
    if note:
        print(note, flush=True)


def read_checkpoint(args, wl):
    """The checkpoint's saved state, refused unless it is workload ``wl``'s (training.workload); pins the
    device and sets the Keras precision policy for it (before any model is built)."""
    import tf_keras as keras
    from runtime import tf_devices
    from training import checkpoint
    _, _, state = checkpoint.read(args.checkpoint)
    wl.check_checkpoint(state, args.checkpoint)
    device, capability, name = tf_devices.pin(args.device, index=0, size=1, nccl=True)
    requested = state.get("precision", "float32") if args.precision == "checkpoint" else args.precision
    choice = precision.choose(requested, gpu_capability=capability, on_gpu=device != "CPU")
    keras.mixed_precision.set_global_policy(choice.policy)
    print(f"predicting on {device}" + (f" ({name}, compute capability {capability})" if name else "")
          + f" in {choice.policy}", file=sys.stderr, flush=True)
    return state


def restored_model(args, wl, state):
    """Workload ``wl``'s network of the checkpoint's settings, its weights restored."""
    from training import checkpoint
    model = wl.model_from_checkpoint(state)
    checkpoint.restore(args.checkpoint, model, with_optimizer=False)
    return model


def each_image(paths_, load, bad):
    """(path, array) of each image ``load`` accepts, read one at a time; a rejected one is appended to
    ``bad`` as (path, reason) instead.

    ``load(path)`` returns the image as the model's input wants it, or raises
    ``dataprep.shards.Rejected`` with the reason (the TFRecord writer's own).
    """
    for path in paths_:
        try:
            image = load(path)
        except Rejected as why:
            bad.append((path, str(why)))
            continue
        yield path, image


def finish(summary, predicted, bad, images):
    """Print ``summary``, name each rejected file and its reason on stderr; exit status 1 if there was one."""
    if predicted + len(bad) != len(images):
        raise RuntimeError(f"{len(images)} images given, {predicted} predicted and {len(bad)} rejected")
    rejected = f"; {len(bad)} of the {len(images)} images not predicted (reasons below)" if bad else ""
    print(summary + rejected, flush=True)
    for path, why in bad:
        print(f"error: {path}: {why}", file=sys.stderr)
    if bad:
        sys.exit(1)
