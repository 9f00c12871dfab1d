"""Benchmark: allreduce bandwidth, Horovod (MPI and Gloo controllers) against mpi4py, and tensor fusion.

    .venv/bin/python benchmarks/allreduce.py [--np 2] [--sizes 1K,...,256M] [--repeats 20]

1. Sizes: ``hvd.allreduce`` of one float32 tensor of each size, under
   ``mpirun`` (Horovod's MPI controller) and ``horovodrun --gloo``; and
   ``mpi4py`` ``Allreduce`` of a numpy array of the same size under
   ``mpirun`` (the floor: MPI itself, no framework). Each size is timed
   --repeats times after 3 untimed calls; the median is kept.
2. Fusion: 64 tensors of 64 KB (gradients of a small model) reduced by one
   ``grouped_allreduce``, with Horovod's tensor fusion off
   (``HOROVOD_FUSION_THRESHOLD=0``) and on (64 MB), at cycle times of 1 and
   5 ms (``HOROVOD_CYCLE_TIME``; --fusion picks the pairs).
3. Every figure is a record in ``<out>/metrics.jsonl``; the tables
   (``<out>.md``, ``<out>.csv``) and the plot (``<out>.png``) are built from
   those records alone (``--tables-only`` rebuilds them).

Bandwidth: ``algbw = bytes / time``; ``busbw = algbw x 2 (n - 1) / n``, the
bytes each rank's link carries in a ring allreduce (the nccl-tests
convention), comparable across rank counts.
Tiny check: ``--sizes 1K,64K --repeats 3 --fusion 0:1,67108864:1 --out /tmp/ar``.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    mpi_env, output_flags, start_records, study_records, write_outputs)
from runtime.metrics import read_events  # noqa: E402

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_SIZES = "1K,16K,256K,1M,4M,16M,64M,256M"
FUSION_TENSORS, FUSION_BYTES = 64, 64 << 10
DEFAULT_FUSION = f"0:1,0:5,{64 << 20}:1,{64 << 20}:5"


def parse_size(text):
    text = text.strip().upper()
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def human(n):
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}B"
    return f"{n} B"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--np", type=int, default=2, help="ranks (default 2)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"tensor sizes (default {DEFAULT_SIZES})")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per size (default 20)")
    p.add_argument("--fusion", default=DEFAULT_FUSION,
                   help=f"THRESHOLD_BYTES:CYCLE_MS pairs for the fusion runs (default {DEFAULT_FUSION})")
    output_flags(p, "allreduce", ".md/.csv/.png")
    p.add_argument("--worker", choices=["horovod", "mpi4py", "fusion"], help=argparse.SUPPRESS)
    p.add_argument("--controller", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------ workers (one per launch)
def timed(call, repeats):
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def record(stream, ranks, impl, controller, nbytes, times, **extra):
    p50 = statistics.median(times)
    algbw = nbytes / p50 / 1e9
    stream.write("allreduce", impl=impl, controller=controller, ranks=ranks, bytes=nbytes,
                 seconds_p50=p50, seconds_min=min(times), seconds_max=max(times), repeats=len(times),
                 algbw_GBps=algbw, busbw_GBps=algbw * 2 * (ranks - 1) / ranks, **extra)


def horovod_worker(args, stream):
    import runtime  # noqa: F401  (legacy Keras before TensorFlow)
    import horovod.tensorflow as hvd
    import numpy as np
    import tensorflow as tf
    hvd.init()
    stream.enabled = hvd.rank() == 0
    if args.worker == "fusion":
        tensors = [tf.constant(np.ones(FUSION_BYTES // 4, np.float32)) for _ in range(FUSION_TENSORS)]
        times = timed(lambda: hvd.grouped_allreduce(tensors, op=hvd.Sum), args.repeats)
        record(stream, hvd.size(), "horovod grouped", args.controller, FUSION_TENSORS * FUSION_BYTES, times,
               tensors=FUSION_TENSORS, fusion_threshold=os.environ["HOROVOD_FUSION_THRESHOLD"],
               cycle_time_ms=os.environ["HOROVOD_CYCLE_TIME"])
        return
    for nbytes in (parse_size(s) for s in args.sizes.split(",")):
        tensor = tf.constant(np.ones(nbytes // 4, np.float32))
        # Eager allreduce returns once the reduced tensor is there: each call is one whole allreduce.
        times = timed(lambda: hvd.allreduce(tensor, op=hvd.Sum, name=f"ar{nbytes}"), args.repeats)
        record(stream, hvd.size(), "horovod", args.controller, nbytes, times)


def mpi4py_worker(args, stream):
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    stream.enabled = comm.Get_rank() == 0
    for nbytes in (parse_size(s) for s in args.sizes.split(",")):
        send, recv = np.ones(nbytes // 4, np.float32), np.empty(nbytes // 4, np.float32)
        times = timed(lambda: comm.Allreduce(send, recv, op=MPI.SUM), args.repeats)
        record(stream, comm.Get_size(), "mpi4py", "mpi", nbytes, times)


# ------------------------------------------------------------------ driver
def launch(args, worker, controller, env=None):
    me = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--controller", controller,
          "--sizes", args.sizes, "--repeats", str(args.repeats), "--out", args.out]
    if controller == "gloo":
        cmd = [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "--gloo", "-np", str(args.np), *me]
    else:
        cmd = ["mpirun", "-np", str(args.np), "--oversubscribe", "--bind-to", "none", *me]
    print(f"[allreduce] {worker} over {controller} {env or ''}", flush=True)
    subprocess.run(cmd, cwd=ROOT, env=dict(mpi_env(), **(env or {})), check=True, stdout=subprocess.DEVNULL)


def run_all(args):
    import horovod
    import mpi4py
    mpirun = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    start_records(args.out, ranks=args.np, repeats=args.repeats,
                  versions=f"Python {platform.python_version()}, horovod {horovod.__version__}, mpi4py "
                           f"{mpi4py.__version__}, {mpirun}")
    launch(args, "mpi4py", "mpi")
    launch(args, "horovod", "mpi")
    launch(args, "horovod", "gloo")
    for pair in args.fusion.split(","):
        threshold, cycle = pair.split(":")
        launch(args, "fusion", "mpi", {"HOROVOD_FUSION_THRESHOLD": threshold, "HOROVOD_CYCLE_TIME": cycle})


# ------------------------------------------------------------------ tables, from the records only
def size_rows(records):
    sizes = sorted({r["bytes"] for r in records if r["impl"] in ("horovod", "mpi4py")})
    impls = [("mpi4py", "mpi"), ("horovod", "mpi"), ("horovod", "gloo")]
    by = {(r["impl"], r["controller"], r["bytes"]): r for r in records}
    return sizes, impls, by


def tables(records, study):
    meta = dict(study, cpu=study["machine"]["cpu"])
    sizes, impls, by = size_rows(records)
    heads = [f"{i} ({c})" for i, c in impls]
    md = [f"# Allreduce on {meta['ranks']} ranks: {meta['cpu']}", "",
          f"{meta['date']}; {meta['versions']}; command: `{meta['command']}`; median of "
          f"{meta['repeats']} calls after 3 untimed.", "",
          "Bus bandwidth, GB/s (time per call in brackets):", "",
          "| size | " + " | ".join(heads) + " | Horovod MPI / mpi4py |", "|---" * (len(heads) + 2) + "|"]
    csv = ["impl,controller,ranks,bytes,fusion_threshold,cycle_time_ms,seconds_p50,algbw_GBps,busbw_GBps"]
    for n in sizes:
        cells, ratio = [], ""
        for impl, ctl in impls:
            r = by.get((impl, ctl, n))
            cells.append(f"{r['busbw_GBps']:.3g} ({r['seconds_p50'] * 1e3:.3g} ms)" if r else "-")
        a, b = by.get(("horovod", "mpi", n)), by.get(("mpi4py", "mpi", n))
        if a and b:
            ratio = f"{b['seconds_p50'] / a['seconds_p50']:.2f}"
        md.append(f"| {human(n)} | " + " | ".join(cells) + f" | {ratio} |")
    for r in records:
        csv.append(f"{r['impl']},{r['controller']},{r['ranks']},{r['bytes']},{r.get('fusion_threshold', '')},"
                   f"{r.get('cycle_time_ms', '')},{r['seconds_p50']:.6g},{r['algbw_GBps']:.6g},{r['busbw_GBps']:.6g}")
    fusion = [r for r in records if r["impl"] == "horovod grouped"]
    if fusion:
        md += ["", f"Tensor fusion: {FUSION_TENSORS} tensors of {human(FUSION_BYTES)} in one grouped allreduce "
               f"(MPI controller):", "", "| fusion threshold | cycle time | time per group | bus GB/s |",
               "|---|---|---|---|"]
        for r in sorted(fusion, key=lambda r: (int(r["fusion_threshold"]), float(r["cycle_time_ms"]))):
            off = "off (0)" if r["fusion_threshold"] == "0" else human(int(r["fusion_threshold"]))
            md.append(f"| {off} | {r['cycle_time_ms']} ms | {r['seconds_p50'] * 1e3:.3g} ms | "
                      f"{r['busbw_GBps']:.3g} |")
    md += ["", "The Horovod MPI / mpi4py column is mpi4py's time over Horovod's: below 1, Horovod's "
           "negotiation and copies cost more than the reduction itself."]
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def plot(records, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes, impls, by = size_rows(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, ctl in impls:
        pts = [(n, by[(impl, ctl, n)]["busbw_GBps"]) for n in sizes if (impl, ctl, n) in by]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{impl} ({ctl})")
    ax.set(xscale="log", xlabel="bytes per allreduce", ylabel="bus bandwidth (GB/s)", title="Allreduce")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_tables(args):
    path = study_records(args.out)
    records = read_events(path, "allreduce")
    md, csv = tables(records, read_events(path, "study")[-1])
    plot(records, args.out + ".png")
    write_outputs(args.out, {".md": md, ".csv": csv})


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        from runtime.metrics import MetricsStream
        stream = MetricsStream(os.path.join(args.out, "metrics.jsonl"), enabled=True)
        (mpi4py_worker if args.worker == "mpi4py" else horovod_worker)(args, stream)
        return
    if not args.tables_only:
        run_all(args)
    write_tables(args)


if __name__ == "__main__":
    main()
