"""Benchmark: where the time goes when a node's cores are split between ranks.

    .venv/bin/python benchmarks/core_split.py [--size 112] [--per-rank-batch 16] [--repeats 3]
    .venv/bin/python benchmarks/core_split.py --tables-only     # the table again, from the records alone

On C cores (all of this machine's), CheXNet's benchmark mode (random tensors,
float32, DenseNet121 with random weights; or the segmentation trainer's with
``--workload segmentation``) runs as:

- ``1xC``: one process with C TensorFlow threads, no allreduce (the reference);
- ``Cx1 apart``: C single-thread processes at once, each its own run, no Horovod
  between them: what C ranks could reach if synchronising cost nothing. Their
  images/s add up. Below ``1xC``, the loss is in TensorFlow itself (one thread
  per process against C threads in one);
- ``Cx1 <variant>``: C Horovod ranks of one thread under mpirun (or horovodrun
  --gloo), the settings of each variant in the environment. Below ``Cx1 apart``,
  the loss is the synchronisation: the allreduce, Horovod's background thread,
  MPI waiting for the slower rank. (Recorded runs from before 2026-11-27 18:40
  name the first variant "defaults": Open MPI polling, as "MPI polls" now.)

Every run writes a ``benchmark`` record (``training.benchmark``); each one is
copied into <out>/metrics.jsonl with its configuration, and <out>.md is built
from that file alone. Configurations alternate within each of ``--repeats``
rounds (the machine is shared); the table shows medians.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    benchmark_flags, mpi_env, output_flags, sh, start_records)
from runtime.metrics import read_events  # noqa: E402

# Horovod ranks of one thread each, and what each variant changes (environment, launcher).
VARIANTS = {
    # Open MPI's own default: it polls while a rank waits (the project's runtime sets 1 unless told).
    "MPI polls": {"OMPI_MCA_mpi_yield_when_idle": "0"},
    # Horovod's background thread coordinates every HOROVOD_CYCLE_TIME ms (default 1).
    "cycle 10 ms": {"HOROVOD_CYCLE_TIME": "10"},
    # Open MPI polls while a rank waits for the other; yielding gives the core back.
    "MPI yields when idle": {"OMPI_MCA_mpi_yield_when_idle": "1"},
    # Gloo's controller and collectives wait on sockets instead of polling.
    "Gloo": {"launcher": "gloo"},
}


def trainer_flags(args, threads, run_dir, name):
    return benchmark_flags(args.workload, args.size, args.per_rank_batch, args.steps, args.warmup_steps, run_dir,
                           name, args.seg_model, ["--precision", "float32", "--threads-per-rank", str(threads)])


def last_benchmark(run_dir, name):
    return read_events(os.path.join(run_dir, name, "metrics.jsonl"), "benchmark")[-1]


def run_alone(args, run_dir, name):
    """One process with every core's thread."""
    sh([sys.executable, *trainer_flags(args, args.cores, run_dir, name)], os.path.join(run_dir, name + ".log"))
    return [last_benchmark(run_dir, name)]


def run_apart(args, run_dir, name):
    """``cores`` single-thread processes at once, no Horovod between them."""
    procs = []
    for i in range(args.cores):
        log = open(os.path.join(run_dir, f"{name}-{i}.log"), "w")
        procs.append((subprocess.Popen([sys.executable, *trainer_flags(args, 1, run_dir, f"{name}-{i}")], cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, env=mpi_env()), log))
    for proc, log in procs:
        if proc.wait():
            sys.exit(f"{name}: a process exited {proc.returncode}; see {log.name}")
        log.close()
    return [last_benchmark(run_dir, f"{name}-{i}") for i in range(args.cores)]


def run_ranks(args, run_dir, name, variant):
    """``cores`` Horovod ranks of one thread, with the variant's settings."""
    settings = dict(VARIANTS[variant])
    launcher = settings.pop("launcher", "mpi")
    flags = trainer_flags(args, 1, run_dir, name)
    if launcher == "gloo":
        cmd = [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "--gloo", "-np", str(args.cores),
               sys.executable, *flags]
    else:
        cmd = [shutil.which("mpirun") or "mpirun", "-np", str(args.cores), sys.executable, *flags]
    sh(cmd, os.path.join(run_dir, name + ".log"), env=dict(mpi_env(), **settings))
    return [last_benchmark(run_dir, name)]


def configurations(args):
    return [("alone", None), ("apart", None), *(("ranks", v) for v in args.variants)]


def run_study(args, stream):
    run_dir = os.path.join(os.path.abspath(args.workdir), time.strftime("runs-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    configs = configurations(args)
    for repeat in range(1, args.repeats + 1):
        shift = (repeat - 1) % len(configs)  # each round starts one configuration later
        for kind, variant in configs[shift:] + configs[:shift]:
            name = f"{kind}-{(variant or '').replace(' ', '_')}-r{repeat}".replace("--", "-")
            print(f"[round {repeat}/{args.repeats}] {name}", flush=True)
            if kind == "alone":
                records = run_alone(args, run_dir, name)
            elif kind == "apart":
                records = run_apart(args, run_dir, name)
            else:
                records = run_ranks(args, run_dir, name, variant)
            for i, r in enumerate(records):
                stream.write("core_split", kind=kind, variant=variant, repeat=repeat, process=i,
                             processes=len(records), ranks=len(r["images_per_s_per_rank"]),
                             threads=args.cores if kind == "alone" else 1, images_per_s=r["images_per_s"],
                             step_time_p50_s=r["step_time_p50_s"], peak_rss_mb=r.get("peak_rss_mb"),
                             load_avg_1m=os.getloadavg()[0])  # how shared the machine was


# ------------------------------------------------------------------ the table, from the records only
def label(kind, variant, cores):
    return {"alone": f"1 process x {cores} threads", "apart": f"{cores} processes x 1 thread, apart"}.get(
        kind, f"{cores} Horovod ranks x 1 thread, {variant}")


def table(path):
    study = read_events(path, "study")[-1]
    records = read_events(path, "core_split")
    cores = study["cores"]
    per_round = {}
    for r in records:  # images/s of a configuration in one round: the processes' sum (apart) or the job's
        key = (r["kind"], r["variant"], r["repeat"])
        per_round[key] = per_round.get(key, 0.0) + r["images_per_s"]
    medians, steps, rss = {}, {}, {}
    for (kind, variant, _), value in per_round.items():
        medians.setdefault((kind, variant), []).append(value)
    for r in records:
        steps.setdefault((r["kind"], r["variant"]), []).append(r["step_time_p50_s"])
        rss.setdefault((r["kind"], r["variant"]), []).append(r.get("peak_rss_mb") or 0)
    reference = statistics.median(medians[("alone", None)])
    lines = [f"| configuration | images/s (median of the rounds) | of 1 x {cores} threads | "
             f"step p50 (s) | samples | peak RSS per process (MB) |", "|---|---|---|---|---|---|"]
    for (kind, variant), values in medians.items():
        m = statistics.median(values)
        lines.append(f"| {label(kind, variant, cores)} | {m:.2f} | {m / reference:.0%} | "
                     f"{statistics.median(steps[(kind, variant)]):.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in values)} | {max(rss[(kind, variant)]):,.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=["chexnet", "segmentation"], default="chexnet",
                   help="chexnet: DenseNet121; segmentation: --seg-model")
    p.add_argument("--size", type=int, default=112, help="CheXNet's crop, or the segmentation input side")
    p.add_argument("--seg-model", default="resunetpp")
    p.add_argument("--per-rank-batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"Horovod variants, of: {', '.join(VARIANTS)}")
    p.add_argument("--workdir", default="/tmp/core-split")
    output_flags(p, "core_split")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    args.cores = os.cpu_count() or 1
    if args.cores < 2:
        p.error("this machine has one core: there is nothing to split")
    return args


def main(argv=None):
    args = parse_args(argv)
    path = os.path.join(args.out, "metrics.jsonl")
    if not args.tables_only:
        stream = start_records(args.out, cores=args.cores, workload=args.workload, size=args.size,
                               seg_model=args.seg_model if args.workload == "segmentation" else None,
                               per_rank_batch=args.per_rank_batch, steps=args.steps, warmup_steps=args.warmup_steps,
                               repeats=args.repeats)
        run_study(args, stream)
    text = table(path)
    with open(args.out + ".md", "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
