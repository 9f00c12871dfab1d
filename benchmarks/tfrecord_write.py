"""Benchmark: TFRecord writing from 1024x1024 sources, and the record encodings compared.

    .venv/bin/python benchmarks/tfrecord_write.py --images 600 --repeats 3

1. Makes a synthetic ChestX-ray14 at 1024x1024 (the real source size) with the
   project's own stages (download --synthetic, extract).
2. Writing: runs the writer with 1 and 2 local processes, alternating, each
   ``--repeats`` times into a fresh folder. Two figures, medians over repeats:
   the whole stage (images written / its wall time, process start-up,
   planning and manifest included) and the shards alone (manifest.json's
   ``writing``: images over the span from the first shard's start to the last
   one's end). Beside them, the limit: the writer's own read + decode + resize
   of the same files in 1 and 2 processes, with nothing else.
3. Encodings: for png, jpeg (quality 95) and raw at 256x256, the bytes per
   record and the read speed of a tf.data pipeline that parses and decodes
   every record (median images/s over repeats, 2 parallel calls).

Writes benchmarks/results/tfrecords.json and prints a Markdown table.
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

from runtime.precision import cpu_facts  # noqa: E402  (needs ROOT on sys.path)


def sh(*cmd):
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def write_once(data_dir, out_dir, processes, encoding):
    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    sh(sys.executable, "-m", "dataprep.chestxray14.tfrecords", "--data-dir", data_dir, "--out-dir", out_dir,
       "--processes", str(processes), "--encoding", encoding, "--images-per-shard", "100")
    elapsed = time.perf_counter() - t0
    manifest = json.load(open(os.path.join(out_dir, "manifest.json")))
    return manifest["counts"]["written"] / elapsed, manifest


def _decode_share(args):
    """One process's share of the decode limit: seconds to read, decode and resize ``paths``."""
    paths, size = args
    from dataprep.chestxray14.tfrecords import load_gray
    t0 = time.perf_counter()
    for path in paths:
        load_gray(path, size)
    return time.perf_counter() - t0


def decode_limit(data_dir, processes, size=256):
    """Images/s of the writer's own read + decode + resize (``load_gray``) over the same files, split
    between ``processes`` processes, with nothing else: no TensorFlow, no records, no start-up (each
    process times its own loop; the slowest one sets the rate)."""
    import multiprocessing
    folder = os.path.join(data_dir, "images_all", "images")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))
    shares = [(paths[i::processes], size) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        seconds = pool.map(_decode_share, shares)
    return len(paths) / max(seconds)


def read_speed(out_dir):
    import tensorflow as tf
    from dataprep import records
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".tfrecord"))
    ds = tf.data.TFRecordDataset([os.path.join(out_dir, f) for f in files], num_parallel_reads=2)
    ds = ds.map(lambda r: records.parse(r, 14)[0], num_parallel_calls=2).batch(64)
    t0, n = time.perf_counter(), 0
    for batch in ds:
        n += int(batch.shape[0])
    return n / (time.perf_counter() - t0)



def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default="")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "tfrecords.json"))
    args = p.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench-tfrecords-")
    data = os.path.join(work, "data")
    t0 = time.perf_counter()
    sh("bash", "download_dataset.sh", "--out", data, "--synthetic", str(args.images), "--image-size", "1024")
    synth_s = time.perf_counter() - t0
    sh("bash", "extract_images.sh", "--out", data)
    data_dir = os.path.join(data, "chestxray14")

    rates, steady, limits = {1: [], 2: []}, {1: [], 2: []}, {1: [], 2: []}
    for _ in range(args.repeats):
        for procs in (1, 2):  # alternate: drifting machine load hits all alike
            rate, manifest = write_once(data_dir, os.path.join(work, f"w{procs}"), procs, "png")
            rates[procs].append(rate)
            steady[procs].append(manifest["writing"]["images_per_s"])
            limits[procs].append(decode_limit(data_dir, procs))

    encodings = {}
    for enc in ("png", "jpeg", "raw"):
        out = os.path.join(work, f"enc-{enc}")
        write_rates, reads = [], []
        for _ in range(args.repeats):
            rate, manifest = write_once(data_dir, out, 1, enc)
            write_rates.append(rate)
            reads.append(read_speed(out))
        total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".tfrecord"))
        encodings[enc] = {"bytes_per_record": total / manifest["counts"]["written"],
                          "write_images_per_s_1proc": statistics.median(write_rates),
                          "read_decode_images_per_s": statistics.median(reads), "read_samples": reads}

    import tensorflow as tf
    result = {
        "command": " ".join([os.path.relpath(sys.executable, ROOT)] + sys.argv),
        "date": time.strftime("%Y-%m-%d"), "images": args.images, "source_size": 1024, "stored_size": 256,
        "repeats": args.repeats, "synthetic_generation_s": synth_s,
        "machine": {"cpu": cpu_facts().model, "cores": os.cpu_count(), "python": platform.python_version(),
                    "tensorflow": tf.__version__, "opencv": __import__("cv2").__version__},
        "write_png_images_per_s": {str(k): statistics.median(v) for k, v in rates.items()},
        "write_png_samples": {str(k): v for k, v in rates.items()},
        "write_png_steady_images_per_s": {str(k): statistics.median(v) for k, v in steady.items()},
        "write_png_steady_samples": {str(k): v for k, v in steady.items()},
        "decode_limit_images_per_s": {str(k): statistics.median(v) for k, v in limits.items()},
        "decode_limit_samples": {str(k): v for k, v in limits.items()},
        "encodings": encodings,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    w, st, lim = (result[k] for k in ("write_png_images_per_s", "write_png_steady_images_per_s",
                                      "decode_limit_images_per_s"))
    print(f"| processes | whole stage, images/s | shards written, images/s | decode + resize limit, images/s | "
          f"shards / limit |\n|---|---|---|---|---|")
    for k in ("1", "2"):
        def cell(d):  # with the 2-process speed-up
            return f"{d[k]:.1f}" + (f" (x{d[k] / d['1']:.2f})" if k == "2" else "")
        print(f"| {k} | {cell(w)} | {cell(st)} | {cell(lim)} | {st[k] / lim[k]:.0%} |")
    print()
    print("| encoding | KB/record | write images/s (1 proc) | read+decode images/s |\n|---|---|---|---|")
    for enc, e in encodings.items():
        print(f"| {enc} | {e['bytes_per_record'] / 1024:.1f} | {e['write_images_per_s_1proc']:.1f} | "
              f"{e['read_decode_images_per_s']:.0f} |")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
