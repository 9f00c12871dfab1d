"""Benchmark: the segmentation trainer against a plain Keras fit of the same model reading the JPEGs.

    .venv/bin/python benchmarks/segmentation_input.py [--pairs 240 --size 128 --batch 8 --steps 20 --repeats 3]

1. Makes a synthetic Kvasir-SEG with the project's stages at the real frame
   sizes (up to 1072x1920 JPEGs), extracts it, writes TFRecords at --size.
2. Times, on one process and the same cores, alternating within each repeat:
   - trainer: ``python -m segmentation.train --benchmark`` on the TFRecords
     (ResUNet++, its augmentation, float32), the figure from its
     ``benchmark`` record;
   - plain: a Keras ``fit`` of the same model, loss and optimizer, fed by
     ``tf.data`` that reads each JPEG pair, decodes, resizes (bilinear image,
     nearest mask), thresholds and batches (parallel map, prefetch) with no
     augmentation, as a tutorial would; timed with the same step meter.
   Both time ``--steps`` steps after ``--warmup`` untimed ones: images / elapsed.
3. Every run is a record in <out>/metrics.jsonl, after the study's record (command, date, machine,
   settings); <out>.md is built from that file alone (``--tables-only`` rebuilds it).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    output_flags, sh, start_records, study_records, synthetic_data, write_outputs)
from runtime.metrics import read_events  # noqa: E402

SETTINGS = ("pairs", "size", "batch", "steps", "warmup", "repeats")


def trainer_rate(args, folder, runs, k):
    name = f"trainer-{k}"
    sh([sys.executable, "-m", "segmentation.train", "--benchmark", "--data-dir", os.path.join(folder, "tfrecords"),
        "--runs-dir", runs, "--run-name", name, "--per-rank-batch", str(args.batch), "--benchmark-steps",
        str(args.steps), "--throughput-warmup-steps", str(args.warmup), "--precision", "float32",
        "--no-tensorboard", "--progress", "none"], os.path.join(runs, name + ".log"))
    return read_events(os.path.join(runs, name, "metrics.jsonl"), "benchmark")[0]["images_per_s"]


def plain_rate(args, folder):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--plain-fit", folder, "--size", str(args.size),
                           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the plain Keras baseline failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"]


def plain_fit(folder, size, batch, steps, warmup):
    """The baseline, in its own process: Keras fit on tf.data over the JPEG files."""
    import runtime  # noqa: F401  (legacy Keras, as the trainer)
    import tensorflow as tf
    import tf_keras as keras
    from dataprep.kvasir_seg import facts
    from runtime.throughput import StepMeter
    from segmentation import losses, model as seg_model

    root = os.path.join(folder, facts.TOP)
    ids = facts.read_list(os.path.join(folder, "train.txt"))
    images = [os.path.join(root, facts.IMAGES, f"{i}.jpg") for i in ids]
    masks = [os.path.join(root, facts.MASKS, f"{i}.jpg") for i in ids]

    def load(image_path, mask_path):
        x = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3), [size, size]) / 255.0
        y = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(mask_path), channels=1), [size, size],
                            method="nearest")
        return x, tf.cast(y > facts.MASK_THRESHOLD, tf.float32)

    ds = (tf.data.Dataset.from_tensor_slices((images, masks)).shuffle(len(ids), seed=0).repeat()
          .map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))
    model = seg_model.build_model("resunetpp", size)
    model.compile(keras.optimizers.Adam(1e-3), losses.build_loss("dice_bce"))
    meter = StepMeter(warmup)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            meter.start()

        def on_train_batch_end(self, b, logs=None):  # Keras syncs on the step's logs first
            meter.step(batch)

    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Timer()])
    print(json.dumps({"images_per_s": meter.summary().images_per_s}), flush=True)


def markdown(path):
    study, runs = read_events(path, "study")[-1], read_events(path, "run")
    samples = {}
    for r in runs:
        samples.setdefault(r["input"], []).append(r["images_per_s"])
    medians = {k: statistics.median(v) for k, v in samples.items()}
    m = study["machine"]
    lines = [f"ResUNet++ {study['size']}x{study['size']}, batch {study['batch']}, {study['precision']}, "
             f"{study['steps']} timed steps after {study['warmup']}; {m['cpu']}, {m['cores']} cores, TensorFlow "
             f"{m['tensorflow']}; {study['date']}. Command: `{study['command']}`", "",
             f"| input | images/s (median of {study['repeats']}) | samples |", "|---|---|---|"]
    lines += [f"| {k} | {medians[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in samples.items()]
    lines += ["", f"trainer / plain = {medians['trainer'] / medians['plain']:.2f}"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=240, help="synthetic frame/mask pairs at real sizes (default 240)")
    p.add_argument("--size", type=int, default=128, help="network input side, a multiple of 16 (default 128)")
    p.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians reported (default 3)")
    p.add_argument("--workdir", default="", help="keep data and runs here (default: a temporary folder)")
    output_flags(p, "segmentation_input")
    p.add_argument("--plain-fit", default="", help=argparse.SUPPRESS)  # internal: run the baseline only
    args = p.parse_args(argv)
    if args.plain_fit:
        return plain_fit(args.plain_fit, args.size, args.batch, args.steps, args.warmup)
    if not args.tables_only:
        run_study(args)
    write_outputs(args.out, {".md": markdown(study_records(args.out))})


def run_study(args):
    work = args.workdir or tempfile.mkdtemp(prefix="bench-seg-")
    t0 = time.perf_counter()
    folder = synthetic_data("kvasir-seg", os.path.join(work, "data"), args.pairs, stored=args.size)
    stream = start_records(args.out, model="resunetpp", precision="float32",
                           **{k: getattr(args, k) for k in SETTINGS})
    os.makedirs(os.path.join(work, "runs"), exist_ok=True)
    for k in range(args.repeats):  # alternate: drifting machine load hits both alike
        stream.write("run", input="trainer", repeat=k + 1,
                     images_per_s=trainer_rate(args, folder, os.path.join(work, "runs"), k))
        stream.write("run", input="plain", repeat=k + 1, images_per_s=plain_rate(args, folder))
    stream.write("study_end", wall_s=time.perf_counter() - t0)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
