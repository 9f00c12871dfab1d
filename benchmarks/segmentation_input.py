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
3. Writes results/segmentation_input.json (figures, medians, machine,
   versions, command) and prints a Markdown table.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from runtime.metrics import read_events  # noqa: E402  (needs ROOT on sys.path)
from runtime.precision import cpu_facts  # noqa: E402


def sh(*cmd, env=None):
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)


def make_data(work, pairs, size):
    data = os.path.join(work, "data")
    sh("bash", "download_dataset.sh", "--dataset", "kvasir-seg", "--out", data, "--synthetic", str(pairs))
    sh("bash", "extract_images.sh", "--dataset", "kvasir-seg", "--out", data)
    sh("bash", "write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", data, "--image-size", str(size))
    return os.path.join(data, "kvasir-seg")


def trainer_rate(args, folder, runs, k):
    name = f"trainer-{k}"
    sh(sys.executable, "-m", "segmentation.train", "--benchmark", "--data-dir", os.path.join(folder, "tfrecords"),
       "--runs-dir", runs, "--run-name", name, "--per-rank-batch", str(args.batch), "--benchmark-steps",
       str(args.steps), "--throughput-warmup-steps", str(args.warmup), "--precision", "float32",
       "--no-tensorboard", "--progress", "none")
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


def machine():
    import tensorflow as tf
    import tf_keras
    return {"cpu": cpu_facts().model, "cores": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=240, help="synthetic frame/mask pairs at real sizes (default 240)")
    p.add_argument("--size", type=int, default=128, help="network input side, a multiple of 16 (default 128)")
    p.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians reported (default 3)")
    p.add_argument("--workdir", default="", help="keep data and runs here (default: a temporary folder)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "segmentation_input.json"))
    p.add_argument("--plain-fit", default="", help=argparse.SUPPRESS)  # internal: run the baseline only
    args = p.parse_args()
    if args.plain_fit:
        return plain_fit(args.plain_fit, args.size, args.batch, args.steps, args.warmup)
    work = args.workdir or tempfile.mkdtemp(prefix="bench-seg-")
    t0 = time.perf_counter()
    folder = make_data(work, args.pairs, args.size)
    rates = {"trainer": [], "plain": []}
    for k in range(args.repeats):  # alternate: drifting machine load hits both alike
        rates["trainer"].append(trainer_rate(args, folder, os.path.join(work, "runs"), k))
        rates["plain"].append(plain_rate(args, folder))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    result = {"command": " ".join([os.path.relpath(sys.executable, ROOT)] + sys.argv), "date": time.strftime("%Y-%m-%d"),
              "settings": {k: getattr(args, k) for k in ("pairs", "size", "batch", "steps", "warmup", "repeats")},
              "model": "resunetpp", "precision": "float32", "machine": machine(), "samples": rates,
              "median_images_per_s": medians, "trainer_over_plain": medians["trainer"] / medians["plain"],
              "wall_time_s": time.perf_counter() - t0}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    print(f"| input | images/s (median of {args.repeats}) | samples |\n|---|---|---|")
    for k, v in rates.items():
        print(f"| {k} | {medians[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    print(f"\ntrainer / plain = {result['trainer_over_plain']:.2f}; {result['machine']['cpu']}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
