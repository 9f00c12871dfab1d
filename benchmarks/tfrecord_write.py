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

Each configuration's medians and samples are a record in <out>/metrics.jsonl, after the study's record
(command, date, machine); <out>.md is built from that file alone (``--tables-only`` rebuilds it).
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    output_flags, refuse_unless_noted, sh, start_records, study_records, synthetic_data, write_outputs,
    write_run_note)
from runtime.metrics import read_events  # noqa: E402


MARK = "benchmarks/tfrecord_write.py"
OUTPUTS = ("w1", "w2", "enc-png", "enc-jpeg", "enc-raw")  # the writer's output folders in the work folder


def write_once(data_dir, out_dir, processes, encoding):
    shutil.rmtree(out_dir, ignore_errors=True)  # the study's own (run_study refused any other)
    write_run_note(out_dir, {"made_by": MARK})
    t0 = time.perf_counter()
    sh([sys.executable, "-m", "dataprep.chestxray14.tfrecords", "--data-dir", data_dir, "--out-dir", out_dir,
        "--processes", str(processes), "--encoding", encoding, "--images-per-shard", "100"], out_dir + ".log")
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



def run_study(args):
    for name in OUTPUTS if args.workdir else ():
        refuse_unless_noted(os.path.join(args.workdir, name), {"made_by": MARK})
    work = args.workdir or tempfile.mkdtemp(prefix="bench-tfrecords-")
    t0 = time.perf_counter()
    data_dir = synthetic_data("chestxray14", os.path.join(work, "data"), args.images, source=1024)
    stream = start_records(args.out, images=args.images, source_size=1024, stored_size=256, repeats=args.repeats,
                           opencv=__import__("cv2").__version__)
    stream.write("synthetic", seconds=time.perf_counter() - t0)
    rates, steady, limits = {1: [], 2: []}, {1: [], 2: []}, {1: [], 2: []}
    for _ in range(args.repeats):
        for procs in (1, 2):  # alternate: drifting machine load hits all alike
            rate, manifest = write_once(data_dir, os.path.join(work, f"w{procs}"), procs, "png")
            rates[procs].append(rate)
            steady[procs].append(manifest["writing"]["images_per_s"])
            limits[procs].append(decode_limit(data_dir, procs))
    for procs in (1, 2):
        stream.write("write", processes=procs, images_per_s=statistics.median(rates[procs]), samples=rates[procs],
                     steady_images_per_s=statistics.median(steady[procs]), steady_samples=steady[procs],
                     limit_images_per_s=statistics.median(limits[procs]), limit_samples=limits[procs])
    for enc in ("png", "jpeg", "raw"):
        out = os.path.join(work, f"enc-{enc}")
        write_rates, reads = [], []
        for _ in range(args.repeats):
            rate, manifest = write_once(data_dir, out, 1, enc)
            write_rates.append(rate)
            reads.append(read_speed(out))
        total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".tfrecord"))
        stream.write("encoding", encoding=enc, bytes_per_record=total / manifest["counts"]["written"],
                     write_images_per_s_1proc=statistics.median(write_rates), write_samples=write_rates,
                     read_decode_images_per_s=statistics.median(reads), read_samples=reads)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def markdown(path):
    study = read_events(path, "study")[-1]
    writes = {r["processes"]: r for r in read_events(path, "write")}
    m = study["machine"]
    lines = [f"{study['images']} synthetic images at {study['source_size']}x{study['source_size']} written at "
             f"{study['stored_size']}x{study['stored_size']}, medians of {study['repeats']}; {m['cpu']}, {m['cores']} "
             f"cores, TensorFlow {m['tensorflow']}; {study['date']}. Command: `{study['command']}`", "",
             "| processes | whole stage, images/s | shards written, images/s | decode + resize limit, images/s | "
             "shards / limit |", "|---|---|---|---|---|"]
    for k, r in sorted(writes.items()):
        def cell(key):  # with the speed-up over one process
            return f"{r[key]:.1f}" + (f" (x{r[key] / writes[1][key]:.2f})" if k != 1 else "")
        lines.append(f"| {k} | {cell('images_per_s')} | {cell('steady_images_per_s')} | {cell('limit_images_per_s')} "
                     f"| {r['steady_images_per_s'] / r['limit_images_per_s']:.0%} |")
    lines += ["", "| encoding | KB/record | write images/s (1 proc) | read+decode images/s |", "|---|---|---|---|"]
    lines += [f"| {e['encoding']} | {e['bytes_per_record'] / 1024:.1f} | {e['write_images_per_s_1proc']:.1f} | "
              f"{e['read_decode_images_per_s']:.0f} |" for e in read_events(path, "encoding")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default="", help="keep data and records here (default: a temporary folder)")
    output_flags(p, "tfrecords")
    args = p.parse_args(argv)
    if not args.tables_only:
        run_study(args)
    write_outputs(args.out, {".md": markdown(study_records(args.out))})


if __name__ == "__main__":
    main()
