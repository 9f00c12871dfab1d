"""Benchmark: images/s the input pipeline delivers, against decoding the sources every epoch and the bare limit.

    .venv/bin/python benchmarks/input_pipeline.py [--images 600 --pairs 200 --threads 1,2,4,auto --repeats 3]
    .venv/bin/python benchmarks/input_pipeline.py --tables-only   # tables and plot again, from the records alone

The project's stages make the data: a synthetic ChestX-ray14 with 1024x1024 PNG
sources (the real size) written to 256x256 records, and a synthetic Kvasir-SEG
with JPEG frames at the real sizes (up to 1072x1920) written to 256x256 records;
each once per record encoding. Then, per workload, every configuration runs in
its own process (so its peak resident memory is its own), alternating over
``--repeats`` rounds:

- ``pipeline``, input ``raw``/``png``/``jpeg``: the trainer's own input (its
  ``train_dataset``: rank sharding, shuffle buffer, parse, decode, augmentation,
  batches) over the records of that encoding, one rank;
- ``pipeline``, input ``sources``: tf.data over the extracted source files,
  read, decoded and area-resized to the records' size every epoch, then the
  same augmentation: the pipeline without the TFRecord stage;

each at every ``--threads`` setting (N: tf.data's private pool of N threads and
N parallel decodes, the ``--data-threads`` of the trainers; ``auto``:
TensorFlow's autotuning, their default). Images/s: ``--batches`` batches after
``--warmup`` untimed ones.

- ``limit``: the same read + decode (+ resize) + augmentation of the same
  files in NumPy and OpenCV, one process per core, each timing its own loop,
  no tf.data and no batching: what these cores can deliver.
- ``shuffle``: the trainer's pipeline (raw records of a larger, smaller-image
  set) at each ``--shuffle-mb`` buffer size: peak resident memory and the
  time to the first batch (the buffer fills first).

Records go to <out>/metrics.jsonl (one per measurement); <out>.md, .csv and
.png are built from that file alone.
"""
import argparse
import csv
import glob
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import output_flags, sh, start_records, synthetic_data  # noqa: E402  (needs ROOT on sys.path)
from runtime.metrics import read_events  # noqa: E402

ENCODINGS = ("raw", "png", "jpeg")
WORKLOADS = ("chexnet", "segmentation")


# ------------------------------------------------------------------ the data, by the project's stages
def make_data(args, work):
    """{workload: {"sources": folder, "raw": records folder, ...}, "shuffle": records folder}."""
    py, logs = sys.executable, os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    folders = {}
    # (data set, images, source side, stored side, sources folder, writer flags) of each workload
    sets = {"chexnet": ("chestxray14", args.images, args.source_size, args.stored_size, ["images_all", "images"],
                        ["--images-per-shard", "50"]),
            "segmentation": ("kvasir-seg", args.pairs, args.seg_source_size, args.seg_size, ["Kvasir-SEG"],
                             ["--images-per-shard", "25", "--split", "random"])}
    for workload in args.workloads:
        dataset, count, source, stored, sources, write = sets[workload]
        folder = synthetic_data(dataset, os.path.join(work, f"{dataset}-data"), count, source or None)
        folders[workload] = {"sources": os.path.join(folder, *sources)}
        for enc in args.encodings:
            out = os.path.join(work, f"{workload}-{enc}")
            sh([py, "-m", f"dataprep.{dataset.replace('-', '_')}.tfrecords", "--data-dir", folder, "--out-dir", out,
                "--encoding", enc, "--image-size", str(stored), *write],
               os.path.join(logs, f"{workload}-{enc}.log"))
            folders[workload][enc] = out
    if args.shuffle_mb and not args.shuffle_images:  # the ChestX-ray14 raw records serve (tests: one data set less)
        folders["shuffle"] = folders["chexnet"]["raw"]
    elif args.shuffle_mb:
        folder = synthetic_data("chestxray14", os.path.join(work, "shuffle-data"), args.shuffle_images,
                                args.stored_size, args.stored_size)
        folders["shuffle"] = os.path.join(folder, "tfrecords")
    return folders


# ------------------------------------------------------------------ one pipeline, in its own process
def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def source_dataset(spec, pipeline):
    """tf.data over the source files: read, decode, area-resize to the records' size, then the trainer's
    augmentation, every epoch."""
    import tensorflow as tf
    from training.shards import parallel, pipeline_options
    stored = spec["stored_size"]

    def resized(image):  # area, as the TFRecord writer resizes
        return tf.cast(tf.round(tf.image.resize(image, [stored, stored], method="area")), tf.uint8)

    if spec["workload"] == "chexnet":
        from chexnet.preprocess import preprocess
        paths = sorted(glob.glob(os.path.join(spec["path"], "*.png")))

        def load(index, path):
            image = resized(tf.io.decode_png(tf.io.read_file(path), channels=1))
            # Labels would be a lookup by name: all zeros here, the cost is the image's.
            return preprocess(image, spec["crop"], True, tf.stack([tf.constant(0, tf.int64), index])), tf.zeros([14])
        items = paths
    else:
        from dataprep.kvasir_seg import facts
        from segmentation.preprocess import augment
        images = sorted(glob.glob(os.path.join(spec["path"], facts.IMAGES, "*.jpg")))
        items = (images, [os.path.join(spec["path"], facts.MASKS, os.path.basename(p)) for p in images])

        def load(index, pair):
            image = resized(tf.io.decode_jpeg(tf.io.read_file(pair[0]), channels=3))
            mask = tf.io.decode_jpeg(tf.io.read_file(pair[1]), channels=1)
            mask = tf.image.resize(mask, [stored, stored], method="nearest")
            mask = tf.cast(mask > facts.MASK_THRESHOLD, tf.uint8)
            return augment(image, mask, tf.stack([tf.constant(0, tf.int64), index]))
    ds = tf.data.Dataset.from_tensor_slices(items).shuffle(10_000, seed=0).repeat().enumerate()
    ds = ds.map(lambda i, item: load(i, item), num_parallel_calls=parallel(pipeline), deterministic=True)
    return ds.batch(spec["batch"], drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(
        pipeline_options(pipeline))


def record_dataset(spec, pipeline):
    """The trainer's own train_dataset over the records, one rank, epochs enough for the batches."""
    from training.shards import Manifest
    manifest = Manifest.load(spec["path"])
    steps = manifest.steps_per_epoch("train", 1, spec["batch"])
    epochs = math.ceil((spec["warmup"] + spec["batches"]) / steps) + 1
    if spec["workload"] == "chexnet":
        from chexnet.data import train_dataset
        return train_dataset(manifest, 0, 1, spec["batch"], spec["crop"], 0, 0, epochs, steps, pipeline)
    from segmentation.data import train_dataset
    return train_dataset(manifest, 0, 1, spec["batch"], 0, 0, epochs, steps, pipeline)


def measure_pipeline(spec):
    """{images_per_s, first_batch_s, peak_rss_mb, rss_after_import_mb, record_kb} of one pipeline."""
    import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
    import tensorflow as tf  # noqa: F401
    from training.config import Pipeline
    from training.shards import Manifest
    after_import = peak_rss_mb()
    pipeline = Pipeline(shuffle_mb=spec["shuffle_mb"], threads=spec["threads"])
    sources = spec["input"] == "sources"
    ds = source_dataset(spec, pipeline) if sources else record_dataset(spec, pipeline)
    t0 = time.perf_counter()
    batches = iter(ds)
    next(batches)
    first = time.perf_counter() - t0
    for _ in range(spec["warmup"] - 1):
        next(batches)
    t0 = time.perf_counter()
    for _ in range(spec["batches"]):
        next(batches)
    elapsed = time.perf_counter() - t0
    record_kb = None if sources else Manifest.load(spec["path"]).record_bytes("train") / 1024
    buffer = None if sources else pipeline.records_for(record_kb * 1024)
    return {"images_per_s": spec["batches"] * spec["batch"] / elapsed, "first_batch_s": first,
            "peak_rss_mb": peak_rss_mb(), "rss_after_import_mb": after_import, "record_kb": record_kb,
            "buffer_records": buffer}


# ------------------------------------------------------------------ the limit: NumPy and OpenCV, no tf.data
def tfrecord_payloads(path):
    """The serialized records of one TFRecord file (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
    with open(path, "rb") as fh:
        while True:
            head = fh.read(12)
            if len(head) < 12:
                return
            data = fh.read(struct.unpack("<Q", head[:8])[0])
            fh.read(4)
            yield data


def chexnet_augment(image, rng, crop):
    """chexnet.preprocess.crop_image(training=True) in NumPy: random crop, random flip (uint8; the model
    normalises on the device)."""
    r, c = rng.integers(0, image.shape[0] - crop + 1, 2)
    x = image[r:r + crop, c:c + crop]
    return x[:, ::-1].copy() if rng.random() < 0.5 else x.copy()


def segmentation_augment(image, mask, rng):
    """segmentation.preprocess.augment in NumPy/OpenCV: flips, quarter turn, zoom crop, brightness, contrast,
    rounded back to uint8."""
    import cv2
    import numpy as np
    both = np.concatenate([image.astype(np.float32) / 255.0, mask[..., None].astype(np.float32)], axis=-1)
    if rng.random() < 0.5:
        both = both[:, ::-1]
    if rng.random() < 0.5:
        both = both[::-1]
    both = np.rot90(both, int(rng.integers(4)))
    size = both.shape[0]
    side = int(round(rng.uniform(0.75, 1.0) * size))
    r, c = rng.integers(0, size - side + 1, 2)
    both = both[r:r + side, c:c + side]
    x = cv2.resize(np.ascontiguousarray(both[..., :3]), (size, size), interpolation=cv2.INTER_LINEAR)
    y = cv2.resize(np.ascontiguousarray(both[..., 3]), (size, size), interpolation=cv2.INTER_NEAREST)
    x = x + rng.uniform(-0.1, 0.1)
    mean = x.mean(axis=(0, 1))
    return np.round(np.clip((x - mean) * rng.uniform(0.8, 1.2) + mean, 0.0, 1.0) * 255.0).astype(np.uint8), y


def limit_items(spec, share, count):
    """This process's items (every ``count``-th from ``share``): source paths, or the records' payloads as read."""
    if spec["input"] == "sources":
        pattern = "*.png" if spec["workload"] == "chexnet" else os.path.join("images", "*.jpg")
        yield from sorted(glob.glob(os.path.join(spec["path"], pattern)))[share::count]
        return
    files = sorted(glob.glob(os.path.join(spec["path"], "train-*.tfrecord")))
    for i, payload in enumerate(p for f in files for p in tfrecord_payloads(f)):
        if i % count == share:
            yield payload


def limit_step(spec, rng):
    """One item -> decoded (+resized) and augmented, in OpenCV and NumPy."""
    import cv2
    stored, workload = spec["stored_size"], spec["workload"]
    if spec["input"] == "sources" and workload == "chexnet":
        return lambda path: chexnet_augment(cv2.resize(cv2.imread(path, cv2.IMREAD_GRAYSCALE), (stored, stored),
                                                       interpolation=cv2.INTER_AREA), rng, spec["crop"])
    if spec["input"] == "sources":
        from dataprep.kvasir_seg import facts

        def pair(path):
            image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            mask = cv2.imread(os.path.join(spec["path"], facts.MASKS, os.path.basename(path)), cv2.IMREAD_GRAYSCALE)
            image = cv2.resize(image, (stored, stored), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (stored, stored), interpolation=cv2.INTER_NEAREST) > facts.MASK_THRESHOLD
            return segmentation_augment(image, mask, rng)
        return pair
    import runtime  # noqa: F401  (the Example protobuf comes with TensorFlow, imported before the clock starts)
    from tensorflow.core.example import example_pb2

    def record(payload):
        features = example_pb2.Example.FromString(payload).features.feature
        side, image = features["height"].int64_list.value[0], features["image"].bytes_list.value[0]
        if workload == "chexnet":
            return chexnet_augment(decode_payload(image, spec["input"], side, 1), rng, spec["crop"])
        mask = decode_payload(features["mask"].bytes_list.value[0],
                              features["mask_encoding"].bytes_list.value[0].decode(), side, 1)
        return segmentation_augment(decode_payload(image, spec["input"], side, 3), mask, rng)
    return record


def _limit_share(job):
    """(seconds, items) for one process to read, decode (+resize) and augment its share; one untimed item first
    (the decoders' first-call set-up is no part of the rate)."""
    spec, share, count = job
    import cv2
    import numpy as np
    cv2.setNumThreads(1)  # one core per process: the processes are the parallelism
    step = limit_step(spec, np.random.default_rng(share))
    for item in limit_items(spec, share, count):
        step(item)
        break
    t0, n = time.perf_counter(), 0
    for item in limit_items(spec, share, count):
        step(item)
        n += 1
    return time.perf_counter() - t0, n


def decode_payload(payload, encoding, side, channels):
    import cv2
    import numpy as np
    if encoding == "raw":
        return np.frombuffer(payload, np.uint8).reshape((side, side) if channels == 1 else (side, side, channels))
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    return image if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # stored RGB: the decode's cost


def measure_limit(spec, processes):
    """Images/s of ``processes`` processes together: all their items over the slowest one's time."""
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        shares = pool.map(_limit_share, [(spec, k, processes) for k in range(processes)])
    return {"images_per_s": sum(n for _, n in shares) / max(t for t, _ in shares), "processes": processes}


# ------------------------------------------------------------------ the study
def specs(args, folders):
    """Every configuration of one round, as (kind, spec)."""
    base = {"warmup": args.warmup, "batches": args.batches, "shuffle_mb": 256.0, "stored_size": args.stored_size,
            "crop": args.crop}
    sizes = {"chexnet": (args.stored_size, args.chexnet_batch), "segmentation": (args.seg_size, args.seg_batch)}
    out = []
    for workload in args.workloads:
        stored, batch = sizes[workload]
        for source in (*args.encodings, "sources"):
            spec = dict(base, workload=workload, input=source, path=folders[workload][source], batch=batch,
                        stored_size=stored)
            out += [("pipeline", dict(spec, threads=t)) for t in args.threads]
            out.append(("limit", dict(spec, threads=None)))
    for mb in args.shuffle_mb:
        out.append(("shuffle", dict(base, workload="chexnet", input="raw", path=folders["shuffle"], threads=0,
                                    batch=args.chexnet_batch, shuffle_mb=mb)))
    return out


def run_one(kind, spec, cores):
    if kind == "limit":
        return measure_limit(spec, cores)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{spec['workload']} {spec['input']} (threads {spec['threads']}) failed, exit {proc.returncode}:\n"
                 f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_study(args, stream, folders):
    configs = specs(args, folders)
    for repeat in range(1, args.repeats + 1):
        shift = (repeat - 1) * len(configs) // args.repeats  # each round starts elsewhere: drift hits all alike
        for i, (kind, spec) in enumerate(configs[shift:] + configs[:shift], 1):
            result = run_one(kind, spec, args.cores)
            fields = {k: spec[k] for k in ("workload", "input", "threads", "batch", "stored_size", "shuffle_mb")}
            stream.write(kind, repeat=repeat, **fields, **result, load_avg_1m=os.getloadavg()[0])
            print(f"[round {repeat}/{args.repeats}, {i}/{len(configs)}] {kind} {spec['workload']} {spec['input']} "
                  f"threads={spec['threads']}: {result['images_per_s']:.1f} images/s", flush=True)


# ------------------------------------------------------------------ tables, from the records only
def threads_label(threads):
    return "auto" if threads == 0 else str(threads)


def medians(records, key, field="images_per_s"):
    groups = {}
    for r in records:
        groups.setdefault(key(r), []).append(r[field])
    return {k: statistics.median(v) for k, v in groups.items()}, groups


def pipeline_rows(path):
    """One row per (workload, input): medians per threads setting, the limit, the best against the limit."""
    study = read_events(path, "study")[-1]
    runs, limits = read_events(path, "pipeline"), read_events(path, "limit")
    rate, samples = medians(runs, lambda r: (r["workload"], r["input"], r["threads"]))
    limit, _ = medians(limits, lambda r: (r["workload"], r["input"]))
    rss, _ = medians(runs, lambda r: (r["workload"], r["input"], r["threads"]), "peak_rss_mb")
    kb, _ = medians([r for r in runs if r.get("record_kb")], lambda r: (r["workload"], r["input"]), "record_kb")
    rows = []
    for workload, source in dict.fromkeys((r["workload"], r["input"]) for r in runs):
        threads = [t for t in study["threads"] if (workload, source, t) in rate]
        best = max(rate[(workload, source, t)] for t in threads)
        rows.append({"workload": workload, "input": source, "record_kb": kb.get((workload, source)),
                     "images_per_s": {threads_label(t): rate[(workload, source, t)] for t in threads},
                     "samples": {threads_label(t): samples[(workload, source, t)] for t in threads},
                     "peak_rss_mb": {threads_label(t): rss[(workload, source, t)] for t in threads},
                     "limit": limit.get((workload, source)), "best": best})
    return study, rows


def pipeline_table(study, rows, workload):
    labels = [threads_label(t) for t in study["threads"]]
    cores = study["cores"]
    lines = [f"| input | KB/record | {' | '.join(f'threads {t}' for t in labels)} | limit, {cores} processes | "
             f"best of the pipeline / limit | peak RSS (MB), threads {labels[-1]} |",
             "|---" * (len(labels) + 5) + "|"]
    for row in (r for r in rows if r["workload"] == workload):
        name = f"records, {row['input']}" if row["input"] != "sources" else "source files, decoded every epoch"
        kb = f"{row['record_kb']:.1f}" if row["record_kb"] else "-"
        cells = " | ".join(f"{row['images_per_s'][t]:,.0f}" if t in row["images_per_s"] else "-" for t in labels)
        limit = f"{row['limit']:,.0f}" if row["limit"] else "-"
        ratio = f"{row['best'] / row['limit']:.0%}" if row["limit"] else "-"
        rss = row["peak_rss_mb"].get(labels[-1])
        lines.append(f"| {name} | {kb} | {cells} | {limit} | {ratio} | {rss:,.0f} |" if rss else
                     f"| {name} | {kb} | {cells} | {limit} | {ratio} | - |")
    return "\n".join(lines) + "\n"


def shuffle_table(path):
    runs = read_events(path, "shuffle")
    if not runs:
        return ""
    rss, _ = medians(runs, lambda r: r["shuffle_mb"], "peak_rss_mb")
    first, _ = medians(runs, lambda r: r["shuffle_mb"], "first_batch_s")
    rate, _ = medians(runs, lambda r: r["shuffle_mb"])
    records = {r["shuffle_mb"]: (r["buffer_records"], r["record_kb"]) for r in runs}
    smallest = min(rss)
    lines = ["| shuffle buffer (MB) | records (KB each) | peak RSS (MB) | RSS over the smallest buffer (MB) | "
             "first batch (s) | images/s |", "|---|---|---|---|---|---|"]
    for mb in sorted(rss):
        n, kb = records[mb]
        lines.append(f"| {mb:g} | {n:,} ({kb:.1f}) | {rss[mb]:,.0f} | {rss[mb] - rss[smallest]:+,.0f} | "
                     f"{first[mb]:.2f} | {rate[mb]:,.0f} |")
    return "\n".join(lines) + "\n"


def write_outputs(path, out):
    study, rows = pipeline_rows(path)
    m = study["machine"]
    head = (f"{study['date']}, {m['cpu']}, {study['cores']} cores, TensorFlow {m['tensorflow']}; "
            f"{study['batches']} timed batches after {study['warmup']}, median of {study['repeats']} rounds.\n\n")
    parts = [head]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        parts.append(f"**{workload}** (batch {study['batch'][workload]}, records at {study['size'][workload]}x"
                     f"{study['size'][workload]}; images/s):\n\n{pipeline_table(study, rows, workload)}\n")
    shuffle = shuffle_table(path)
    if shuffle:
        parts.append(f"**shuffle buffer** (the chexnet pipeline, raw records):\n\n{shuffle}")
    text = "".join(parts)
    with open(out + ".md", "w") as fh:
        fh.write(text)
    with open(out + ".csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["workload", "input", "threads", "images_per_s_median", "samples", "peak_rss_mb", "limit_images_per_s"])
        for row in rows:
            for t, value in row["images_per_s"].items():
                w.writerow([row["workload"], row["input"], t, f"{value:.2f}",
                            " ".join(f"{v:.2f}" for v in row["samples"][t]), f"{row['peak_rss_mb'][t]:.0f}",
                            f"{row['limit']:.2f}" if row["limit"] else ""])
    plot(study, rows, out + ".png")
    return text


def plot(study, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    labels = [threads_label(t) for t in study["threads"]]
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        mine = [r for r in rows if r["workload"] == workload]
        width = 0.8 / (len(labels) + 1)
        for j, t in enumerate(labels):
            ax.bar([i + j * width for i in range(len(mine))], [r["images_per_s"].get(t, 0) for r in mine], width,
                   label=f"tf.data, threads {t}")
        ax.bar([i + len(labels) * width for i in range(len(mine))], [r["limit"] or 0 for r in mine], width,
               label=f"limit, {study['cores']} processes", color="0.6")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(mine))])
        ax.set_xticklabels([r["input"] for r in mine])
        ax.set_yscale("log")
        ax.set_ylabel("images/s")
        ax.set_title(f"{workload}: input pipeline")
        ax.legend(fontsize=7)
    fig.suptitle(f"{study['machine']['cpu']}, {study['cores']} cores, {study['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--encodings", default=",".join(ENCODINGS), help="record encodings to write and read")
    p.add_argument("--threads", default="1,2,4,auto", help="tf.data threads per setting; auto: TensorFlow's autotuning")
    p.add_argument("--images", type=int, default=600, help="synthetic ChestX-ray14 images")
    p.add_argument("--source-size", type=int, default=1024, help="their side (the real 1024)")
    p.add_argument("--stored-size", type=int, default=256, help="ChestX-ray14 records' side")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--chexnet-batch", type=int, default=16)
    p.add_argument("--pairs", type=int, default=200, help="synthetic Kvasir-SEG pairs")
    p.add_argument("--seg-source-size", type=int, default=0, help="their largest height (0: the real 1072)")
    p.add_argument("--seg-size", type=int, default=256, help="Kvasir-SEG records' side")
    p.add_argument("--seg-batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=30, help="timed batches per pipeline")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches before them (the first one included)")
    p.add_argument("--shuffle-mb", default="8,32,128", help="shuffle buffer sizes to measure ('' skips)")
    p.add_argument("--shuffle-images", type=int, default=3000,
                   help="images of the shuffle study's set (256x256); 0: the ChestX-ray14 raw records above")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default="/tmp/input-pipeline")
    output_flags(p, "input_pipeline", ".md/.csv/.png")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.encodings = [e for e in args.encodings.split(",") if e]
    for name, values, known in (("--workloads", args.workloads, WORKLOADS), ("--encodings", args.encodings, ENCODINGS)):
        if not values or set(values) - set(known):
            p.error(f"{name}: {','.join(values) or 'nothing'}; pick from {', '.join(known)}")
    try:
        args.threads = [0 if t == "auto" else int(t) for t in args.threads.split(",")]
        args.shuffle_mb = [float(v) for v in args.shuffle_mb.split(",") if v]
    except ValueError:
        p.error(f"--threads takes numbers or 'auto', --shuffle-mb numbers: got {args.threads!r}, {args.shuffle_mb!r}")
    if any(t < 0 for t in args.threads) or any(v <= 0 for v in args.shuffle_mb) or args.warmup < 1:
        p.error("--threads must be >= 1 or auto, --shuffle-mb > 0 and --warmup >= 1")
    if args.shuffle_mb and not args.shuffle_images and not {"chexnet", "raw"} <= {*args.workloads, *args.encodings}:
        p.error("--shuffle-images 0 reads the chexnet raw records: keep chexnet in --workloads and raw in --encodings")
    args.cores = os.cpu_count() or 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure_pipeline(json.loads(args.worker))))
        return
    path = os.path.join(args.out, "metrics.jsonl")
    if not args.tables_only:
        work = os.path.abspath(args.workdir)
        print(f"making the data sets in {work} ...", flush=True)
        folders = make_data(args, work)
        stream = start_records(args.out, cores=args.cores, threads=args.threads, repeats=args.repeats,
                               batches=args.batches, warmup=args.warmup, encodings=args.encodings,
                               images=args.images, source_size=args.source_size, pairs=args.pairs,
                               seg_source_size=args.seg_source_size or "real",
                               batch={"chexnet": args.chexnet_batch, "segmentation": args.seg_batch},
                               size={"chexnet": args.stored_size, "segmentation": args.seg_size}, crop=args.crop,
                               shuffle_images=args.shuffle_images)
        run_study(args, stream, folders)
    print(write_outputs(path, args.out))


if __name__ == "__main__":
    main()
