"""Benchmark: FCN-8s, SegNet, U-Net and ResUNet++ trained for the same budget on the same split, in one table.

    .venv/bin/python benchmarks/segmentation_models.py [--data-dir data/kvasir-seg/tfrecords] [--np 2] [--epochs 30]

1. Data: the Kvasir-SEG TFRecords of --data-dir; without it, a synthetic
   Kvasir-SEG made by the project's own three stages (--pairs frames at the
   real frame sizes, records at --image-size) in --workdir.
2. Training: ``segmentation.train`` on --np ranks, one run per network, each
   with the same records, split, loss, augmentation, seed, batch, learning-rate
   schedule and number of epochs (--preset, then --train-args). Each run's
   folder, <workdir>/runs/<network>-<key>, is keyed by a fingerprint of all that
   shapes it: the records' manifest SHA-256, the preset's SHA-256, every trainer
   flag, the ranks and the code version (training.card.code_version); the study
   writes it beside the folder (<folder>.study.json) before training. Another
   data set or setting trains a new run; the same one continues or reuses its
   own. A folder there that the study did not make is refused, never reused or
   replaced.
3. Quality: ``segmentation.evaluate`` on --split (default: test where the
   records have one, else val; val drove each network's plateau cuts) with
   --checkpoint, by default ``last.npz``, the weights at the end of the budget:
   the validation split picks ``best.npz``, so it should not also grade it.
   Dice and IoU are per image, with bootstrap 95% intervals; the table and the
   JSON name the split and its image count.
4. Speed: training images/s per rank is the median over epochs of the
   trainer's own throughput record (warm-up steps excluded). Inference runs
   here, on one process and all cores, in the checkpoint's precision, on
   random images of the stored size: for each of --batches, --repeats timed
   calls after 3 untimed ones, each ending in a host copy; latency
   percentiles, and images/s = images / total time. Each batch size is an
   ``inference`` record in the run's metrics.jsonl.
5. Output, built only from the runs' metrics.jsonl (``--tables-only``
   rebuilds it, from the run folders its .json names): <out>.md and <out>.csv (one row per network: parameters,
   Dice, IoU, training images/s per rank, batch-1 latency, images/s at the
   best batch) and <out>.png: the first --panels images of the split, their
   true masks, then one row of predictions per network.

Tiny check: ``--pairs 24 --image-size 32 --epochs 1 --np 1 --batches 1,2 --repeats 2 --out /tmp/seg``.
"""
import argparse
import hashlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    machine, ranks_command, run_note, sh, synthetic_data, write_run_note)
from runtime.errors import UserError  # noqa: E402
from runtime.files import sha256_of  # noqa: E402
from runtime.metrics import MetricsStream, read_events  # noqa: E402
from training.card import code_version  # noqa: E402
from training.manifest import Manifest  # noqa: E402

NAMES = {"fcn8s": "FCN-8s", "segnet": "SegNet", "unet": "U-Net", "resunetpp": "ResUNet++"}
WARMUP_CALLS = 3
MARK = "benchmarks/segmentation_models.py"  # in <run>.study.json: the study made that run folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="", help="Kvasir-SEG TFRecords (default: a synthetic set in --workdir)")
    p.add_argument("--pairs", type=int, default=1000, help="synthetic frame/mask pairs (default 1000, as the real set)")
    p.add_argument("--image-size", type=int, default=128,
                   help="synthetic records' side, a multiple of 32 (default 128)")
    p.add_argument("--models", default="fcn8s,segnet,unet,resunetpp", help="networks, comma list (default: all four)")
    p.add_argument("--np", type=int, default=2, help="training and evaluation ranks (default 2)")
    p.add_argument("--epochs", type=int, default=30, help="the budget: epochs per network (default 30)")
    p.add_argument("--per-rank-batch", type=int, default=8, help="images per rank per step (default 8)")
    p.add_argument("--precision", default="auto", help="trainer --precision (default auto)")
    p.add_argument("--preset", default=os.path.join(ROOT, "presets", "segmentation_demo.json"),
                   help="trainer preset for every network; --models and --epochs override its model and epochs "
                        "(default presets/segmentation_demo.json: BatchNorm momentum 0.9 for short runs)")
    p.add_argument("--train-args", default="", help="more segmentation.train flags for every network, e.g. "
                   "\"--loss dice --base-lr 3e-4\"")
    p.add_argument("--split", default="auto", choices=["auto", "val", "test"],
                   help="split to grade (default auto: test where the records have one, else val)")
    p.add_argument("--checkpoint", default="last.npz", help="checkpoint to grade (default last.npz)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="inference batch sizes (default 1,2,4,8,16,32)")
    p.add_argument("--repeats", type=int, default=20, help="timed inference calls per batch size (default 20)")
    p.add_argument("--panels", type=int, default=4, help="images in the panel PNG (default 4)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "segmentation-models"),
                   help="synthetic data and the runs; reused across invocations")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "segmentation_models"),
                   help="output path without extension: .md, .csv, .png, .json")
    p.add_argument("--tables-only", action="store_true", help="rebuild the outputs from the runs' records")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(NAMES))
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def make_data(args):
    """The records to train on: --data-dir, or a synthetic Kvasir-SEG made by the three stages (once)."""
    if args.data_dir:
        return os.path.abspath(args.data_dir)
    out = os.path.join(args.workdir, f"data-{args.pairs}-{args.image_size}")
    return os.path.join(synthetic_data("kvasir-seg", out, args.pairs, stored=args.image_size), "tfrecords")


def grading_split(requested, tfrecords):
    """(split, images) to grade: ``requested``, or for auto test where the records hold one, else val."""
    splits = {name: info["images"] for name, info in Manifest.load(tfrecords).data["splits"].items()}
    split = ("test" if splits.get("test") else "val") if requested == "auto" else requested
    if not splits.get(split):
        raise UserError(f"--split {split}: {tfrecords}/manifest.json has no {split} images; pass --split "
                        f"{' or '.join(s for s, n in splits.items() if n and s != 'train') or 'of a split it has'}")
    return split, splits[split]


def train_flags(args, model):
    """Every segmentation.train flag of ``model``'s run, but the data and run folders (the fingerprint names them)."""
    return ["--preset", args.preset, "--model", model, "--epochs", str(args.epochs), "--per-rank-batch",
            str(args.per_rank_batch), "--precision", args.precision, "--progress", "log", "--no-tensorboard",
            *shlex.split(args.train_args)]


def fingerprint(args, tfrecords, model):
    """All that shapes ``model``'s run: the records, the preset's contents, the trainer's flags, ranks, code."""
    preset = sha256_of(args.preset) if os.path.isfile(args.preset) else None  # the trainer names a missing one
    return {"model": model, "data_manifest_sha256": sha256_of(os.path.join(tfrecords, "manifest.json")),
            "preset_sha256": preset, "train_flags": train_flags(args, model), "ranks": args.np,
            "code_version": code_version()}


def claim_run(args, tfrecords, model):
    """(run folder, fingerprint) of ``model``: the study's own folder for these settings, or a one-line refusal
    where something the study did not make (for them) is in its place."""
    fp = fingerprint(args, tfrecords, model)
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    run = os.path.join(args.workdir, "runs", f"{model}-{key}")
    marker = run + ".study.json"
    if (os.path.lexists(run) or os.path.lexists(marker)) and run_note(run) != {"made_by": MARK, "fingerprint": fp}:
        sys.exit(f"{run} exists but this study did not make it for these settings (no matching {marker}): it is "
                 f"left as it is; pass another --workdir, or move it away")
    return run, fp


def events(run, event):
    path = os.path.join(run, "metrics.jsonl")
    return read_events(path, event) if os.path.exists(path) else []


def graded(args, run):
    return [r for r in events(run, "eval") if r["split"] == args.split and r["checkpoint"] == args.checkpoint]


def train_and_grade(args, tfrecords, model, run, fp):
    """Train ``model`` in its own ``run`` for the budget (unless it holds every epoch), then evaluate it once."""
    trained = len(events(run, "epoch")) < args.epochs
    if trained:
        os.makedirs(os.path.dirname(run), exist_ok=True)
        write_run_note(run, {"made_by": MARK, "fingerprint": fp})  # first: a stopped run stays the study's
        sh(ranks_command(args.np, [
            "-m", "segmentation.train", *train_flags(args, model), "--data-dir", tfrecords,
            "--runs-dir", os.path.dirname(run), "--run-name", os.path.basename(run),
            *(["--resume"] if os.path.exists(os.path.join(run, "last.npz")) else [])]), run + ".train.log")
    if trained or not graded(args, run):  # new weights need a new grade
        sh(ranks_command(args.np, ["-m", "segmentation.evaluate", "--run", run, "--split", args.split,
                                   "--checkpoint", args.checkpoint, "--bootstrap", str(args.bootstrap)]),
           run + ".eval.log")


def load(run, checkpoint_name):
    """(model, stored size) of a run's checkpoint, in its precision."""
    from training import prediction, workload
    args, wl = argparse.Namespace(checkpoint=os.path.join(run, checkpoint_name), precision="checkpoint",
                                  device="auto"), workload.get("segmentation")
    state = prediction.read_checkpoint(args, wl)
    return prediction.restored_model(args, wl, state), state["stored_size"]


def time_inference(args, run, model_name):
    """One ``inference`` record per batch size in the run's metrics.jsonl (the table takes the latest)."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from runtime.precision import cpu_facts
    from segmentation.model import count_params
    model, size = load(run, args.checkpoint)
    forward = tf.function(lambda x: model(x, training=False))
    stream = MetricsStream(os.path.join(run, "metrics.jsonl"))
    for batch in args.batches:
        x = tf.random.stateless_uniform((batch, size, size, 3), seed=(batch, 0))
        for _ in range(WARMUP_CALLS):
            forward(x).numpy()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            forward(x).numpy()  # the host copy ends the timed call
            times.append(time.perf_counter() - t0)
        p50, p90, p95, p99 = np.percentile(times, (50, 90, 95, 99))
        stream.write("inference", model=model_name, batch=batch, image_size=size, checkpoint=args.checkpoint,
                     repeats=args.repeats, warmup_calls=WARMUP_CALLS, images_per_s=batch * len(times) / sum(times),
                     latency_mean_s=float(np.mean(times)), latency_p50_s=p50, latency_p90_s=p90,
                     latency_p95_s=p95, latency_p99_s=p99, parameters=count_params(model),
                     precision=keras.mixed_precision.global_policy().name, cpu_model=cpu_facts().model,
                     cores=os.cpu_count())
    keras.backend.clear_session()


def latest_inference(run, checkpoint_name, batches):
    """{batch: record} of the last inference timing of ``checkpoint_name`` at each of ``batches``."""
    return {r["batch"]: r for r in events(run, "inference")
            if r["checkpoint"] == checkpoint_name and r["batch"] in batches}


def summarise(args, model, run):
    """One table row, from the run's metrics.jsonl only."""
    config, epochs, ev = events(run, "config")[0], events(run, "epoch"), graded(args, run)[-1]
    per_rank = [e["throughput"]["images_per_s"] / config["ranks"] for e in epochs if e.get("throughput")]
    inference = latest_inference(run, args.checkpoint, args.batches)
    best = max(inference.values(), key=lambda r: r["images_per_s"])
    one = inference.get(1, {})
    return {"model": model, "name": NAMES[model], "parameters": best["parameters"], "epochs": len(epochs),
            "ranks": config["ranks"], "image_size": best["image_size"], "split": args.split,
            "images": ev["images"], "checkpoint": args.checkpoint,
            "dice": ev["mean_dice"], "dice_ci": ev["mean_dice_ci"], "iou": ev["mean_iou"], "iou_ci": ev["mean_iou_ci"],
            "train_images_per_s_per_rank": statistics.median(per_rank) if per_rank else None,
            "train_time_s": sum(e["epoch_time_s"] for e in epochs),
            "latency_b1_p50_ms": one.get("latency_p50_s", float("nan")) * 1e3,
            "latency_b1_p90_ms": one.get("latency_p90_s", float("nan")) * 1e3,
            "best_batch": best["batch"], "best_images_per_s": best["images_per_s"],
            "precision": best["precision"], "cpu_model": best["cpu_model"]}


COLUMNS = [  # (header, key, format)
    ("network", "name", "s"), ("parameters", "parameters", ","), ("Dice", "dice", ".3f"),
    ("Dice 95% CI", "dice_ci", "ci"), ("IoU", "iou", ".3f"), ("IoU 95% CI", "iou_ci", "ci"),
    ("train images/s per rank", "train_images_per_s_per_rank", ".1f"), ("train time (s)", "train_time_s", ".0f"),
    ("batch-1 latency p50 / p90 (ms)", ("latency_b1_p50_ms", "latency_b1_p90_ms"), "pair"),
    ("inference images/s (best batch)", ("best_images_per_s", "best_batch"), "best"),
]


def cell(row, key, spec):
    if spec == "ci":
        return f"{row[key][0]:.3f}-{row[key][1]:.3f}"
    if spec == "pair":
        return f"{row[key[0]]:.1f} / {row[key[1]]:.1f}"
    if spec == "best":
        return f"{row[key[0]]:.1f} ({row[key[1]]})"
    return "n/a" if row[key] is None else format(row[key], spec)


def markdown(rows, meta):
    first = rows[0]
    lines = [f"{first['split']} split of {first['images']} images, {first['image_size']}x{first['image_size']}, "
             f"{first['epochs']} epochs on {first['ranks']} rank(s), graded at {first['checkpoint']}; "
             f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores, {first['precision']}.", "",
             "| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, key, spec) for _, key, spec in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows):
    keys = [k for k in rows[0] if k not in ("dice_ci", "iou_ci")] + ["dice_ci_low", "dice_ci_high", "iou_ci_low",
                                                                        "iou_ci_high"]
    out = [",".join(keys)]
    for r in rows:
        flat = dict(r, dice_ci_low=r["dice_ci"][0], dice_ci_high=r["dice_ci"][1], iou_ci_low=r["iou_ci"][0],
                    iou_ci_high=r["iou_ci"][1])
        out.append(",".join(str(flat[k]) for k in keys))
    return "\n".join(out) + "\n"


def panels_png(args, tfrecords, path):
    """Rows: the split's first --panels images, their true masks, then each network's predicted masks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tf_keras as keras

    from segmentation import data
    from training import workload
    from training.shards import Manifest
    x, y, names = next(iter(data.eval_dataset(Manifest.load(tfrecords), args.split, 0, 1, args.panels)))
    rows = [("image", x.numpy()), ("truth", y.numpy()[..., 0])]
    for model_name in args.models:
        model, _ = load(args.runs[model_name], args.checkpoint)
        device = workload.get("segmentation").device_model(model)
        rows.append((NAMES[model_name], device.predict(x, verbose=0)[..., 0] > 0))
        keras.backend.clear_session()
    fig, axes = plt.subplots(len(rows), len(x), figsize=(2.2 * len(x), 2.2 * len(rows)), squeeze=False)
    for r, (label, shown) in enumerate(rows):
        for c in range(len(x)):
            axes[r][c].imshow(shown[c], cmap=None if shown.ndim == 4 else "gray", vmin=0, vmax=1)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if c == 0:
                axes[r][c].set_ylabel(label)
            if r == 0:
                axes[r][c].set_title(names[c].numpy().decode()[:14], fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_outputs(args, tfrecords, meta):
    rows = [summarise(args, m, args.runs[m]) for m in args.models]
    with open(args.out + ".md", "w", encoding="utf-8") as fh:
        fh.write(markdown(rows, meta))
    with open(args.out + ".csv", "w", encoding="utf-8") as fh:
        fh.write(csv_text(rows))
    with open(args.out + ".json", "w", encoding="utf-8") as fh:
        json.dump({**meta, "rows": rows}, fh, indent=2)
    panels_png(args, tfrecords, args.out + ".png")
    print(markdown(rows, meta), flush=True)


def earlier_study(args):
    """(meta, runs) of the study <out>.json describes, for --tables-only: its runs, split and data."""
    path = args.out + ".json"
    try:
        with open(path, encoding="utf-8") as fh:
            meta = {k: v for k, v in json.load(fh).items() if k != "rows"}
    except (OSError, ValueError) as err:
        sys.exit(f"{path}: cannot read it ({type(err).__name__}): run the study without --tables-only first")
    missing = [m for m in args.models if m not in meta.get("runs", {})]
    if missing:
        sys.exit(f"{path} holds no run of {', '.join(missing)}: run the study for them, or pass --models "
                 f"{','.join(meta.get('runs', {}))}")
    args.split = meta["split"]["name"]
    return meta, {m: meta["runs"][m]["folder"] for m in args.models}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.tables_only:
        meta, args.runs = earlier_study(args)
        return write_outputs(args, meta["data"], meta)
    tfrecords = make_data(args)
    try:
        args.split, images = grading_split(args.split, tfrecords)
    except UserError as err:
        sys.exit(str(err))
    claims = {m: claim_run(args, tfrecords, m) for m in args.models}  # every refusal before any training
    args.runs = {m: run for m, (run, _) in claims.items()}
    meta = {"command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
            "date": time.strftime("%Y-%m-%d"), "data": tfrecords, "split": {"name": args.split, "images": images},
            "machine": machine(), "runs": {m: {"folder": run, "fingerprint": fp} for m, (run, fp) in claims.items()}}
    for i, model in enumerate(args.models, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(args.models)}] {NAMES[model]}: training and grading in {args.runs[model]}", flush=True)
        train_and_grade(args, tfrecords, model, *claims[model])
        time_inference(args, args.runs[model], model)
        print(f"[{i}/{len(args.models)}] {NAMES[model]}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    write_outputs(args, tfrecords, meta)


if __name__ == "__main__":
    main()
