"""What both export entry points share: a checkpoint to a SavedModel, an ONNX file, a Keras file and a model card.

    python -m chexnet.export --checkpoint runs/cx --out exported/cx                  # the three formats
    python -m segmentation.export --checkpoint runs/seg/best.npz --out exported/seg --format savedmodel

    export.main("chexnet", __doc__, argv)   # each entry point: its workload's name (training.workload);
                                           # the workload's export parts are an ExportParts (below)

``--out`` is the user's folder: a new or empty one, or with ``--overwrite``
one that holds an earlier export and nothing else (only its files are
replaced). Everything is written to a staging folder inside it and moved into
place at the end, the model card last. Flags, paths and the ONNX packages are
checked before TensorFlow loads.

The model is built in float32 whatever the training precision, from the
checkpoint's weights and BatchNorm statistics, in inference mode. Before the
files are moved into place, each format is loaded back and run on the same
random tensor: its outputs must equal TensorFlow's to ``TOLERANCE`` (the
figures go into the model card's ``checks``).
"""
import argparse
import dataclasses
import importlib.util
import os
import shutil
import time
from typing import Callable

from runtime.errors import UserError
from runtime.files import check_writable_folder
from training import card, paths

FORMATS = {"savedmodel": "savedmodel", "onnx": "model.onnx", "keras": "model.keras"}  # format: its name in --out
CARD_FILES = ("model_card.json", "MODEL_CARD.md")
OURS = (*FORMATS.values(), *CARD_FILES)
STAGING_PREFIX = ".export-"
TOLERANCE = 1e-4
ONNX_OPSET = 17
ONNX_PACKAGES = ("tf2onnx", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class ExportParts:
    """A workload's part of the export (its checkpoint check and model come from the workload itself);
    every callable takes the checkpoint's saved state last."""

    input_shape: Callable          # (state) -> the preprocessed tensor's (H, W, C)
    read_image: Callable           # (encoded bytes, state) -> (tensor, reason or "", [height, width]); TF ops
    tensor_outputs: Callable       # (logits, state) -> {name: tensor} of serving_tensor
    image_outputs: Callable        # (logits, preprocess outputs, state) -> {name: tensor} of serving_default
    describe: Callable             # (state) -> the card's classes, input contract and outputs
    keras_problem: Callable = lambda state: None  # why the Keras file would not load without this code
    operating_points: tuple = ()   # the kinds --operating-point takes (chexnet.operating.KINDS), if any


def parser(doc, wl, parts):
    trainer = wl.trainer
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help=f"best.npz or last.npz of a {trainer} run, or the run's "
                   f"folder (its best.npz)")
    p.add_argument("--out", required=True, help="folder to write: new or empty (see --overwrite)")
    p.add_argument("--format", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)} "
                   f"(default: all three)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (a folder that "
                   "holds only export's files); anything else there stops the command")
    if parts.operating_points:
        p.add_argument("--operating-point", choices=parts.operating_points, default=None,
                       help="add a thresholded output, positive, at this operating point of the checkpoint (chosen "
                            "on val by evaluate: its operating_points.json)")
    return p


def check_args(args, trainer):
    """Before TensorFlow loads: the formats, their packages, --out, the checkpoint and its operating points;
    returns the formats."""
    formats = list(dict.fromkeys(f.strip() for f in args.format.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format {args.format!r}: choose among {', '.join(FORMATS)}, comma-separated")
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if "onnx" in formats and missing:
        raise UserError(f"--format onnx needs {' and '.join(missing)}, not installed here: run make setup "
                        f"(requirements.txt pins them), or leave onnx out (--format savedmodel,keras)")
    check_out(args.out, args.overwrite)
    check_writable_folder(args.out, "--out")
    args.checkpoint, note = paths.locate_checkpoint(args.checkpoint, trainer)
    if note:
        print(note, flush=True)
    chosen = card.operating_points(args.checkpoint) if getattr(args, "operating_point", None) else {"found": True}
    if not chosen["found"]:
        raise UserError(f"--operating-point {args.operating_point}: {chosen['why']}")
    return formats


def check_out(out, overwrite):
    """--out is new, empty, or (with --overwrite) an earlier export and nothing else."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file: export writes a folder; choose a new or empty folder")
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if not entries:
        return
    if not overwrite:
        more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
        raise UserError(f"--out {out} is not empty ({entries[0]}{more}): export writes into a new or empty folder; "
                        f"choose another --out, or pass --overwrite to replace an earlier export there")
    foreign = [e for e in entries if e not in OURS and not e.startswith(STAGING_PREFIX)]
    if foreign:
        raise UserError(f"--out {out} holds {foreign[0]}, which export did not write: --overwrite replaces only "
                        f"an earlier export's files; choose another --out")
    if not card.written_by_export(os.path.join(out, CARD_FILES[0])):
        raise UserError(f"--out {out} has no model_card.json of an earlier export: --overwrite replaces only a "
                        f"finished export; choose another --out")


def main(name, doc, argv=None):
    """The export command of workload ``name``: flags, checks, the model in float32, each format written and
    checked, the card."""
    from training import workload
    wl = workload.get(name)
    parts = wl.export_parts()
    args = parser(doc, wl, parts).parse_args(argv)
    formats = check_args(args, wl.trainer)
    started = time.perf_counter()
    state = read_state(args.checkpoint, wl, parts, formats)
    if getattr(args, "operating_point", None):
        state = {**state, "operating_point": args.operating_point,
                 "thresholds": card.thresholds(args.checkpoint, args.operating_point)}
    model = build_float32(wl, state, args.checkpoint)
    serving = make_serving(wl.name, parts, model, state)
    created = not os.path.exists(args.out)
    stage = make_stage(args.out)
    try:
        timings, checks = write_formats(formats, serving, model, parts.input_shape(state), stage)
        card.write(stage, card.contents(wl.name, parts, state, args.checkpoint, {f: FORMATS[f] for f in formats}, checks,
                                         timings))
        publish(stage, args.out, [FORMATS[f] for f in formats])
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # the staging folder is this command's own
        if created and not os.listdir(args.out):
            os.rmdir(args.out)  # a failed export leaves no folder it made
    print(f"exported {args.checkpoint} to {args.out}: {', '.join(FORMATS[f] for f in formats)} and "
          f"{' and '.join(CARD_FILES)} ({time.perf_counter() - started:.0f} s)", flush=True)


def read_state(path, wl, parts, formats):
    """The checkpoint's settings, checked for workload ``wl`` and the formats asked for."""
    from training import checkpoint
    _, _, state = checkpoint.read(path)
    wl.check_checkpoint(state, path)
    problem = parts.keras_problem(state) if "keras" in formats else None
    if problem:
        raise UserError(f"--format keras: {problem}; leave keras out (--format savedmodel,onnx)")
    return state


def build_float32(wl, state, path):
    """The checkpoint's model in float32, its weights and BatchNorm statistics restored."""
    import tf_keras as keras
    from training import checkpoint
    # Float32 whatever the training precision: every runtime runs it, and it is what predict --precision float32 does.
    keras.mixed_precision.set_global_policy("float32")
    model = wl.model_from_checkpoint(state)
    checkpoint.restore(path, model, with_optimizer=False)
    return model


def make_stage(out):
    os.makedirs(out, exist_ok=True)
    stage = os.path.join(out, f"{STAGING_PREFIX}{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)  # this pid's own leftover, if a crashed run had it
    os.makedirs(stage)
    return stage


def publish(stage, out, names):
    """Move the staged files into --out (replacing an earlier export's), the card last; drop an earlier
    export's files of formats not written now, so the folder holds one export."""
    for name in [*names, *CARD_FILES]:
        target = os.path.join(out, name)
        _remove(target)
        os.replace(os.path.join(stage, name), target)
    for stale in set(FORMATS.values()) - set(names):
        _remove(os.path.join(out, stale))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def make_serving(name, parts, model, state):
    """The tf.Module of the SavedModel: serving_default (encoded images), serving_tensor, preprocess."""
    from training.serving import Serving
    return Serving(name, parts, model, state)


def write_formats(formats, serving, model, shape, stage):
    """Each format into ``stage``, each loaded back and compared with TensorFlow on one random tensor:
    ({format: seconds}, {format: largest difference})."""
    import numpy as np
    sample = np.random.default_rng(0).standard_normal((2, *shape)).astype("float32")
    expected = {k: v.numpy() for k, v in serving.serve_tensor(sample).items()}
    writers = {"savedmodel": write_savedmodel, "onnx": write_onnx, "keras": write_keras}
    timings, checks = {}, {}
    for fmt in formats:
        t0 = time.perf_counter()
        path = os.path.join(stage, FORMATS[fmt])
        got = writers[fmt](serving, model, shape, path, sample)
        checks[fmt] = compare(fmt, expected if fmt != "keras" else {"logits": model(sample).numpy()}, got)
        timings[fmt] = round(time.perf_counter() - t0, 2)
    return timings, checks


def compare(fmt, expected, got):
    """The largest absolute difference over the float outputs; a RuntimeError beyond TOLERANCE."""
    import numpy as np
    worst = 0.0
    for name, want in expected.items():
        if want.dtype.kind != "f":
            continue  # a thresholded output follows the probabilities compared here
        diff = np.abs(np.asarray(got[name], np.float64) - want).max() if want.size else 0.0
        worst = max(worst, float(diff))
    if not worst <= TOLERANCE:
        raise RuntimeError(f"the {fmt} file's outputs differ from TensorFlow's by {worst:.3g} (> {TOLERANCE}): "
                           f"the export is wrong; nothing was written to --out")
    return worst


def write_savedmodel(serving, model, shape, path, sample):
    import tensorflow as tf
    tf.saved_model.save(serving, path, signatures=serving.signatures())
    loaded = tf.saved_model.load(path).signatures["serving_tensor"]
    return {k: v.numpy() for k, v in loaded(image=tf.constant(sample)).items()}


def write_onnx(serving, model, shape, path, sample):
    """serving_tensor through tf2onnx, run back with ONNX Runtime on the CPU."""
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    spec = [tf.TensorSpec([None, *shape], tf.float32, name="image")]
    tf2onnx.convert.from_function(serving.serve_tensor, input_signature=spec, opset=ONNX_OPSET, output_path=path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": sample})))


def write_keras(serving, model, shape, path, sample):
    import tf_keras as keras
    model.save(path)
    return {"logits": keras.models.load_model(path, compile=False)(sample).numpy()}
