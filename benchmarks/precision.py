"""Benchmark: precision and compilation per workload: float32, mixed precision, XLA, fp16 allreduce;
training FLOP/s against the matmul peak measured on the same cores in the same run.

    .venv/bin/python benchmarks/precision.py [--workloads chexnet,segmentation] [--repeats 3]
    .venv/bin/python benchmarks/precision.py --tables-only      # the table again, from the records alone

1. Peak: a square matmul (--matmul-n, float32 and bfloat16) in one process on
   all cores, timed over 20 calls after 3 untimed (one ``.numpy()`` per call);
   GFLOP/s = 2 n^3 / seconds. Measured at the start and at the end of the run;
   the table uses the larger.
2. FLOPs per training image: the forward pass of the model at batch 1, counted
   by TensorFlow's profiler on the frozen graph (a multiply-add is 2 FLOPs),
   times 3 (forward, and a backward pass of about twice its cost).
3. Variants, each the trainer's benchmark mode on random tensors
   (``--synthetic-input``; CheXNet with random weights):
   - ``float32``, 1 rank (the reference);
   - ``mixed``: ``--precision bfloat16`` on a CPU (``float16`` on a GPU), 1 rank;
     only where the hardware has the units (runtime/precision.py): on an
     AVX2-only CPU TensorFlow emulates bfloat16 about 9x slower, and the
     variant is recorded as skipped with that reason, never run;
   - ``xla``: ``--xla``, float32, 1 rank (horovod 0.28.1 has no XLA allreduce);
   - ``2 ranks``, and ``2 ranks fp16 allreduce``: float32 compute, gradients
     sent as float32 or float16 (``--fp16-allreduce``).
   Training GFLOP/s = images/s x FLOPs per image; its share of the peak of the
   variant's compute type (bfloat16 peak for mixed, float32 otherwise).
4. ``--repeats`` rounds, the variants alternating, medians in the table. Every
   record goes to <out>/metrics.jsonl; <out>.md and <out>.csv are built from it
   alone. The table also says what ``--precision auto`` chooses on this machine.
"""
import argparse
import csv
import io
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    benchmark_flags, mpi_env, output_flags, ranks_command, sh, start_records)
from runtime.metrics import read_events  # noqa: E402
from runtime.precision import choose, cpu_facts  # noqa: E402

WORKLOADS = ("chexnet", "segmentation")
# (name, ranks, trainer flags); "mixed" gets its precision from the machine (mixed_precision()).
VARIANTS = [("float32", 1, ["--precision", "float32"]),
            ("mixed", 1, None),
            ("xla", 1, ["--precision", "float32", "--xla"]),
            ("2 ranks", 2, ["--precision", "float32"]),
            ("2 ranks fp16 allreduce", 2, ["--precision", "float32", "--fp16-allreduce"])]


def mixed_precision():
    """(trainer flags, None) where this machine has mixed-precision units, else (None, why not)."""
    choice = choose("mixed", cpu=cpu_facts())
    if choice.policy == "float32":
        return None, choice.warning or choice.reason
    return ["--precision", choice.compute_dtype], None


# ------------------------------------------------------------------ measuring (child processes)
MATMUL = """
import sys, time, statistics
import runtime  # noqa: F401
import tensorflow as tf
n, dtype = int(sys.argv[1]), sys.argv[2]
a = tf.random.normal((n, n), dtype=tf.float32)
a = tf.cast(a, dtype)
mm = tf.function(lambda x: tf.matmul(x, x))
for _ in range(3):
    mm(a).numpy()
times = []
for _ in range(20):
    t = time.perf_counter(); mm(a).numpy(); times.append(time.perf_counter() - t)
print(2 * n ** 3 / statistics.median(times) / 1e9)
"""

FLOPS = """
import sys
import runtime  # noqa: F401
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
workload, size, seg_model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if workload == "chexnet":
    from chexnet.model import build_model
    model = build_model(size, 14, "none", 0.99)
else:
    from segmentation.model import build_model
    model = build_model(seg_model, size)
fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, size, size, 3]))
graph = convert_variables_to_constants_v2(fn).graph
opts = tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
opts = opts.with_empty_output().build()
print(tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=opts).total_float_ops)
"""


def child(code, *argv):
    """Run a measuring snippet in a fresh process (its own threads and precision); its last stdout line."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=ROOT, env=mpi_env(),
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"a measurement failed ({argv}): {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def measure_peaks(args, stream, when):
    for dtype in ("float32", "bfloat16"):
        stream.write("matmul_peak", dtype=dtype, n=args.matmul_n, gflop_per_s=child(MATMUL, args.matmul_n, dtype),
                     when=when, load_avg_1m=os.getloadavg()[0])


def trainer_flags(args, workload, run_dir, name, extra):
    return benchmark_flags(workload, args.size[workload], args.per_rank_batch[workload], args.steps,
                           args.warmup_steps, run_dir, name, args.seg_model, extra)


def run_study(args, stream):
    run_dir = os.path.join(os.path.abspath(args.workdir), time.strftime("runs-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    mixed, why_not = mixed_precision()
    for workload in args.workloads:
        flops = 3 * child(FLOPS, workload, args.size[workload], args.seg_model)
        stream.write("flops", workload=workload, size=args.size[workload], train_flop_per_image=flops)
    runs = [(w, v) for w in args.workloads for v in VARIANTS if v[0] in args.variants]
    for name, _, _ in VARIANTS:
        if name == "mixed" and name in args.variants and mixed is None:
            stream.write("skipped", variant=name, reason=why_not)
    runs = [(w, v) for w, v in runs if not (v[0] == "mixed" and mixed is None)]
    failed = set()
    for repeat in range(1, args.repeats + 1):
        shift = (repeat - 1) % len(runs)  # each round starts one run later: load spreads over all
        for workload, (variant, ranks, extra) in runs[shift:] + runs[:shift]:
            if (workload, variant) in failed:
                continue
            name = f"{workload}-{variant.replace(' ', '_')}-r{repeat}"
            print(f"[round {repeat}/{args.repeats}] {name}", flush=True)
            flags = trainer_flags(args, workload, run_dir, name, mixed if variant == "mixed" else extra)
            log = os.path.join(run_dir, name + ".log")
            try:
                sh(ranks_command(ranks, flags), log)
            except SystemExit:  # one variant that cannot run here (XLA without a kernel) ends only itself
                failed.add((workload, variant))
                reason = failure_reason(log)
                stream.write("failed", workload=workload, variant=variant, reason=reason, log=log)
                print(f"  {name} failed: {reason}", flush=True)
                continue
            r = read_events(os.path.join(run_dir, name, "metrics.jsonl"), "benchmark")[-1]
            stream.write("precision", workload=workload, variant=variant, ranks=ranks, repeat=repeat,
                         images_per_s=r["images_per_s"], step_time_p50_s=r["step_time_p50_s"],
                         compute_dtype=r["precision"].replace("mixed_", ""), peak_rss_mb=r.get("peak_rss_mb"),
                         load_avg_1m=os.getloadavg()[0])  # how shared the machine was


def failure_reason(log):
    """The line of a failed run's log that says why: XLA's unsupported operation, or the trainer's error."""
    with open(log, errors="replace") as fh:
        lines = fh.read().splitlines()
    for line in lines:
        m = re.search(r"Detected unsupported operations[^:]*: (\w+)", line)
        if m:
            return f"XLA on CPU has no kernel for {m.group(1)}"
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1][len("error: "):] if errors else f"it failed; see {log}"


# ------------------------------------------------------------------ the table, from the records only
def table_rows(path):
    peaks = {}
    for r in read_events(path, "matmul_peak"):
        peaks[r["dtype"]] = max(peaks.get(r["dtype"], 0.0), r["gflop_per_s"])
    flops = {r["workload"]: r["train_flop_per_image"] for r in read_events(path, "flops")}
    runs = {}
    for r in read_events(path, "precision"):
        runs.setdefault((r["workload"], r["variant"]), []).append(r)
    rows = []
    for (workload, variant), recs in runs.items():
        rate = statistics.median(r["images_per_s"] for r in recs)
        reference = statistics.median(r["images_per_s"] for r in runs[(workload, "float32")]) \
            if (workload, "float32") in runs else float("nan")
        dtype = recs[0]["compute_dtype"]
        gflops = rate * flops[workload] / 1e9
        peak = peaks.get("bfloat16" if dtype == "bfloat16" else "float32", float("nan"))
        rows.append({"workload": workload, "variant": variant, "ranks": recs[0]["ranks"], "compute": dtype,
                     "images_per_s": round(rate, 3), "vs_float32": round(rate / reference, 3),
                     "train_gflop_per_s": round(gflops, 2), "peak_gflop_per_s": round(peak, 1),
                     "of_peak": round(gflops / peak, 3), "peak_rss_mb": round(max(r["peak_rss_mb"] or 0 for r in recs)),
                     "samples": " ".join(f"{r['images_per_s']:.2f}" for r in recs)})
    return rows


def markdown(path, rows):
    study = read_events(path, "study")[-1]
    peaks = {}
    for r in read_events(path, "matmul_peak"):
        peaks[r["dtype"]] = max(peaks.get(r["dtype"], 0.0), r["gflop_per_s"])
    lines = [f"CPU: {study['machine']['cpu']} ({study['machine']['cores']} cores); `--precision auto` chooses "
             f"**{study['auto']['policy']}** here ({study['auto']['reason']}). Matmul peak ({study['matmul_n']}^2): "
             + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in sorted(peaks.items())) + ".", ""]
    for r in read_events(path, "skipped"):
        lines += [f"Skipped: {r['variant']} ({r['reason']}).", ""]
    for r in read_events(path, "failed"):
        lines += [f"Failed: {r['workload']} {r['variant']} ({r['reason']}).", ""]
    lines += [f"| workload | variant | ranks | compute | images/s (median of {study['repeats']}) | vs float32 | "
              "training GFLOP/s | of the matmul peak | peak RSS per rank (MB) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['variant']} | {r['ranks']} | {r['compute']} | {r['images_per_s']:.2f} | "
                     f"x{r['vs_float32']:.2f} | {r['train_gflop_per_s']:.1f} | {r['of_peak']:.0%} | "
                     f"{r['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


def write_tables(out):
    path = os.path.join(out, "metrics.jsonl")
    rows = table_rows(path)
    text = markdown(path, rows)
    with open(out + ".md", "w") as fh:
        fh.write(text)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with open(out + ".csv", "w") as fh:
        fh.write(buf.getvalue())
    print(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS))
    p.add_argument("--chexnet-size", type=int, default=224, help="CheXNet's crop")
    p.add_argument("--segmentation-size", type=int, default=256)
    p.add_argument("--seg-model", default="resunetpp")
    p.add_argument("--chexnet-batch", type=int, default=16, help="per rank")
    p.add_argument("--segmentation-batch", type=int, default=8, help="per rank")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--workdir", default="/tmp/precision-study")
    output_flags(p, "precision", ".md/.csv")
    args = p.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(args.workloads) - set(WORKLOADS) or not args.workloads:
        p.error(f"--workloads: pick from {', '.join(WORKLOADS)}, got {args.workloads}")
    known = [v[0] for v in VARIANTS]
    if set(args.variants) - set(known) or not args.variants:
        p.error(f"--variants: pick from {', '.join(known)}, got {args.variants}")
    args.size = {"chexnet": args.chexnet_size, "segmentation": args.segmentation_size}
    args.per_rank_batch = {"chexnet": args.chexnet_batch, "segmentation": args.segmentation_batch}
    return args


def main(argv=None):
    args = parse_args(argv)
    if not args.tables_only:
        auto = choose("auto", cpu=cpu_facts())
        stream = start_records(args.out, repeats=args.repeats, steps=args.steps, warmup_steps=args.warmup_steps,
                               matmul_n=args.matmul_n, sizes=args.size, per_rank_batch=args.per_rank_batch,
                               auto={"policy": auto.policy, "reason": auto.reason})
        measure_peaks(args, stream, "start")
        run_study(args, stream)
        measure_peaks(args, stream, "end")
    write_tables(args.out)


if __name__ == "__main__":
    main()
