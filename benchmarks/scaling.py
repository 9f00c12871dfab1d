"""Benchmark: weak and strong scaling of the trainers' benchmark mode over rank counts, CheXNet and segmentation.

    .venv/bin/python benchmarks/scaling.py [--ranks 1,2] [--workloads chexnet,segmentation] [--repeats 3]
    .venv/bin/python benchmarks/scaling.py --tables-only        # the tables again, from the records alone

1. Configurations, per workload and rank count N:
   - weak: the per-rank batch is fixed (--per-rank-batch), the global batch is N x it;
   - strong: the global batch is fixed (--global-batch), each rank takes global / N (it must divide).
   A (ranks, per-rank batch) pair that both modes ask for (N = global / per-rank batch) runs once and
   serves both rows: it is the same command.
2. Runs: ``python -m <workload>.train --benchmark`` under ``mpirun -np N`` (plain python for 1 rank),
   --precision float32, random tensors (``--synthetic-input``; --input tfrecords reads --data-dir
   instead), CheXNet's DenseNet121 with random weights (speed does not depend on their values),
   --warmup-steps untimed steps then --steps timed ones. Each run has its own folder under
   --workdir and writes one ``benchmark`` record into its metrics.jsonl.
3. Repeats: --repeats rounds; every round runs every configuration once, starting one configuration
   later than the round before, so that a busy spell on the shared machine spreads over all of them.
   The tables report medians over the rounds.
4. Records: each run's ``benchmark`` record is copied, tagged with workload, modes, round and run
   folder, into <out>/metrics.jsonl, after a ``study`` record (command, date, machine, epoch sizes)
   and the Horovod-over-MPI ``allreduce`` records of --allreduce-records (for the projection).
   <out>.md, <out>.csv and <out>.png are built from that file alone (--tables-only rebuilds them).

Figures: global images/s as the trainer measures it (all ranks' timed images / the slowest rank's
elapsed time); per-rank images/s = global / N; speed-up = images/s at N / images/s at the fewest
ranks of the same workload and mode; efficiency = speed-up x fewest / N; time per epoch =
--epoch-images / global images/s; step p50/p90 = medians of the runs' own percentiles; peak
resident memory = the largest ``ru_maxrss`` of any rank in any round.
Tiny check: ``--crop 32 --seg-model unet --seg-size 32 --per-rank-batch 2 --global-batch 4 --steps 2
--warmup-steps 1 --repeats 1 --out /tmp/scaling``.
"""
import argparse
import math
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import output_flags, ranks_command, sh, start_records  # noqa: E402  (needs ROOT on sys.path)
from dataprep.kvasir_seg import facts as kvasir  # noqa: E402
from runtime.metrics import fmt, read_events  # noqa: E402
from runtime.precision import REQUESTS, cpu_facts  # noqa: E402

WORKLOADS = ("chexnet", "segmentation")
MODES = ("weak", "strong")
# ChestX-ray14's training split as write_tfrecords.sh makes it: train_val_list.txt's 86,524 images
# (REFERENCE.md section 3, the official list) less --val-fraction 0.1 of its patients for validation;
# by patient, so about 10% of the images: 0.9 x 86,524.
CHESTXRAY14_TRAIN = 77_872
EPOCH_IMAGES = {"chexnet": CHESTXRAY14_TRAIN, "segmentation": len(kvasir.official_split("train"))}  # 880
ALLREDUCE = os.path.join(ROOT, "benchmarks", "results", "allreduce", "metrics.jsonl")
# Reference figures (REFERENCE.md section 4), not measured here.
DELL_V100 = {1: 185, 4: 589, 8: 1117, 16: 1913}  # CheXNet images/s, TF 1.12, Horovod 0.16
HOROVOD_512 = 0.90  # Horovod paper: about 90% efficiency at 512 GPUs (Inception V3, ResNet-101)
PROJECTED_RANKS = (2, 4, 8, 16, 512)


def per_workload(text, cast, flag):
    """'16' -> {each workload: 16}; 'chexnet=16,segmentation=8' -> each named one its own."""
    if "=" not in text:
        return {w: cast(text) for w in WORKLOADS}
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in WORKLOADS:
            sys.exit(f"--{flag}: unknown workload {name.strip()!r} in {text!r}; use {', '.join(WORKLOADS)}")
        out[name.strip()] = cast(value)
    return out


def int_list(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        sys.exit(f"--{flag} takes positive integers, comma-separated, e.g. 1,2,4; got {text!r}")
    return sorted(set(values))


def name_list(text, known, flag):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if not names or unknown:
        sys.exit(f"--{flag}: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(known)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2", help="rank counts, comma list (default 1,2)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="chexnet, segmentation or both (default)")
    p.add_argument("--modes", default=",".join(MODES), help="weak, strong or both (default)")
    p.add_argument("--per-rank-batch", default="chexnet=16,segmentation=8",
                   help="weak scaling's per-rank batch: N, or WORKLOAD=N pairs (default chexnet=16,segmentation=8)")
    p.add_argument("--global-batch", default="chexnet=32,segmentation=16",
                   help="strong scaling's global batch, divided over the ranks (default chexnet=32,segmentation=16)")
    p.add_argument("--steps", default="20", help="timed steps per run: N or WORKLOAD=N pairs (default 20)")
    p.add_argument("--warmup-steps", default="3", help="untimed steps before them (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all configurations (default 3)")
    p.add_argument("--precision", default="float32", choices=REQUESTS,
                   help="trainer --precision (default float32: the same arithmetic on any CPU)")
    p.add_argument("--input", default="synthetic", choices=["synthetic", "tfrecords"],
                   help="random tensors (default) or the TFRecords of --data-dir")
    p.add_argument("--data-dir", default="chexnet=data/chestxray14/tfrecords,segmentation=data/kvasir-seg/tfrecords",
                   help="WORKLOAD=PATH pairs for --input tfrecords (default: the trainers' own)")
    p.add_argument("--crop", type=int, default=224, help="CheXNet crop (default 224)")
    p.add_argument("--seg-model", default="resunetpp", help="segmentation --model (default resunetpp)")
    p.add_argument("--seg-size", type=int, default=256,
                   help="segmentation image side of random tensors (default 256; records keep their own)")
    p.add_argument("--train-args", default="", help="more trainer flags for every run, e.g. \"--threads-per-rank 1\"")
    p.add_argument("--epoch-images", default="",
                   help=f"images an epoch for the epoch-time column: N or WORKLOAD=N pairs (default "
                        f"chexnet={EPOCH_IMAGES['chexnet']} (ChestX-ray14 train split), "
                        f"segmentation={EPOCH_IMAGES['segmentation']} (Kvasir-SEG official train list))")
    p.add_argument("--allreduce-records", default=ALLREDUCE,
                   help="allreduce.py's metrics.jsonl, for the projection (default benchmarks/results/allreduce)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "scaling-study"),
                   help="where each run's folder and log go (a new runs-<time> folder per study)")
    output_flags(p, "scaling", ".md/.csv/.png")
    args = p.parse_args(argv)
    args.epoch_images = per_workload(args.epoch_images, int, "epoch-images") if args.epoch_images else {}
    if args.tables_only:
        return args
    args.ranks = int_list(args.ranks, "ranks")
    args.workloads = name_list(args.workloads, WORKLOADS, "workloads")
    args.modes = name_list(args.modes, MODES, "modes")
    for flag in ("per_rank_batch", "global_batch", "steps", "warmup_steps"):
        setattr(args, flag, per_workload(getattr(args, flag), int, flag.replace("_", "-")))
    args.data_dir = per_workload(args.data_dir, str, "data-dir")
    if args.repeats < 1:
        sys.exit(f"--repeats must be >= 1, got {args.repeats}")
    check_batches(args)
    return args


def check_batches(args):
    """Every workload names its figures, and strong scaling's global batch divides over every rank count."""
    for w in args.workloads:
        for flag in ("per_rank_batch", "global_batch", "steps", "warmup_steps"):
            if w not in getattr(args, flag):
                sys.exit(f"--{flag.replace('_', '-')} names no figure for {w}")
        if min(args.per_rank_batch[w], args.global_batch[w], args.steps[w]) < 1 or args.warmup_steps[w] < 0:
            sys.exit(f"{w}: batches and --steps must be >= 1, --warmup-steps >= 0")
        if "strong" in args.modes:
            bad = [n for n in args.ranks if args.global_batch[w] % n]
            if bad:
                sys.exit(f"--global-batch {args.global_batch[w]} ({w}) does not divide over {bad[0]} ranks: "
                         f"pick a multiple of {math.lcm(*args.ranks)} for --ranks {','.join(map(str, args.ranks))}")


# ------------------------------------------------------------------ runs
def configurations(args):
    """{(workload, ranks, per_rank_batch): [modes]}: one run per distinct command, in a fixed order."""
    runs = {}
    for w in args.workloads:
        for n in args.ranks:
            for mode in args.modes:
                # Weak: each rank's work is fixed, the global batch grows. Strong: the global batch (and so
                # the optimisation) is fixed, each rank's share shrinks.
                batch = args.per_rank_batch[w] if mode == "weak" else args.global_batch[w] // n
                runs.setdefault((w, n, batch), []).append(mode)  # the same command serves both modes
    return runs


def trainer_command(args, workload, ranks, batch, runs_dir, name):
    flags = ["-m", f"{workload}.train", "--benchmark", "--runs-dir", runs_dir, "--run-name", name,
             "--per-rank-batch", str(batch), "--benchmark-steps", str(args.steps[workload]),
             "--throughput-warmup-steps", str(args.warmup_steps[workload]), "--precision", args.precision,
             "--progress", "none", "--no-tensorboard"]
    flags += ["--synthetic-input"] if args.input == "synthetic" else ["--data-dir", args.data_dir[workload]]
    if workload == "chexnet":
        flags += ["--crop", str(args.crop), "--weights", "none"]  # random weights: same speed, no download
    else:
        flags += ["--model", args.seg_model, "--synthetic-size", str(args.seg_size)]
    # One rank runs without mpirun (Horovod of size 1 skips the allreduce); start-up is never timed.
    return ranks_command(ranks, flags + shlex.split(args.train_args))


def run_all(args, stream):
    """--repeats rounds over every configuration; each run's benchmark record goes into ``stream``."""
    runs = list(configurations(args).items())
    runs_dir = os.path.join(os.path.abspath(args.workdir), time.strftime("runs-%Y%m%d-%H%M%S"))
    os.makedirs(runs_dir)
    for repeat in range(1, args.repeats + 1):
        shift = (repeat - 1) % len(runs)  # each round starts one configuration later
        for i, ((workload, ranks, batch), modes) in enumerate(runs[shift:] + runs[:shift], 1):
            name = f"{workload}-n{ranks}-b{batch}-r{repeat}"
            print(f"[round {repeat}/{args.repeats}, {i}/{len(runs)}] {name} ({'/'.join(modes)})", flush=True)
            cmd = trainer_command(args, workload, ranks, batch, runs_dir, name)
            sh(cmd, os.path.join(runs_dir, name + ".log"))
            record = read_events(os.path.join(runs_dir, name, "metrics.jsonl"), "benchmark")[-1]
            stream.write("benchmark", **{k: v for k, v in record.items() if k not in ("event", "time")},
                         workload=workload, modes=modes, repeat=repeat, run=os.path.join(runs_dir, name),
                         recorded=record["time"], load_avg_1m=os.getloadavg()[0])  # how shared the machine was


def start_stream(args):
    """A fresh <out>/metrics.jsonl that opens with the study's settings and the allreduce figures it uses."""
    facts, recorded = cpu_facts(), os.path.exists(args.allreduce_records)
    source = read_events(args.allreduce_records, "study")[-1] if recorded else {}
    stream = start_records(args.out, native_bf16=facts.native_bf16,
                           amx=sorted(f for f in facts.flags if f.startswith("amx")),
                           epoch_images={**EPOCH_IMAGES, **args.epoch_images}, repeats=args.repeats,
                           steps=args.steps, warmup_steps=args.warmup_steps, input=args.input,
                           allreduce_meta={"date": source.get("date"), "cpu": source.get("machine", {}).get("cpu")})
    if recorded:
        for r in read_events(args.allreduce_records, "allreduce"):
            if (r["impl"], r["controller"]) == ("horovod", "mpi"):
                stream.write("allreduce", **{k: v for k, v in r.items() if k not in ("event", "time")},
                             source=os.path.relpath(args.allreduce_records, ROOT))
    return stream


# ------------------------------------------------------------------ tables, from the records only
def rows(records, epoch_images):
    """One row per (workload, mode, ranks): medians over the rounds, speed-up against the fewest ranks."""
    groups = {}
    for r in records:
        for mode in r["modes"]:
            groups.setdefault((WORKLOADS.index(r["workload"]), MODES.index(mode), r["ranks"]), []).append(r)
    out, base = [], {}
    for (w, m, ranks), runs in sorted(groups.items()):
        ips = statistics.median(r["images_per_s"] for r in runs)
        fewest, base_ips = base.setdefault((w, m), (ranks, ips))  # rows are sorted: the first has the fewest
        speedup = ips / base_ips
        out.append({
            "workload": WORKLOADS[w], "mode": MODES[m], "ranks": ranks, "per_rank_batch": runs[0]["per_rank_batch"],
            "global_batch": runs[0]["global_batch"], "images_per_s": ips, "images_per_s_per_rank": ips / ranks,
            "baseline_ranks": fewest, "speedup": speedup, "efficiency_pct": 100 * speedup * fewest / ranks,
            "epoch_images": epoch_images[WORKLOADS[w]], "epoch_time_s": epoch_images[WORKLOADS[w]] / ips,
            "step_p50_s": statistics.median(r["step_time_p50_s"] for r in runs),
            "step_p90_s": statistics.median(r["step_time_p90_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "repeats": len(runs),
            "images_per_s_samples": [r["images_per_s"] for r in runs],
            "trainable_parameters": runs[0]["trainable_parameters"], "network": runs[0]["network"],
            "size": runs[0].get("crop") or runs[0].get("image_size"), "precision": runs[0]["precision"],
            "input": runs[0]["input"], "fp16_allreduce": runs[0]["fp16_allreduce"]})
    return out


def duration(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


COLUMNS = [  # (header, cell)
    ("workload", lambda r: f"{r['workload']} ({r['network']}, {r['size']})"), ("mode", lambda r: r["mode"]),
    ("ranks", lambda r: str(r["ranks"])), ("per-rank batch", lambda r: str(r["per_rank_batch"])),
    ("global batch", lambda r: str(r["global_batch"])), ("images/s", lambda r: fmt(r["images_per_s"], ".2f")),
    ("images/s per rank", lambda r: fmt(r["images_per_s_per_rank"], ".2f")),
    ("speed-up", lambda r: f"{r['speedup']:.2f}x"), ("efficiency", lambda r: f"{r['efficiency_pct']:.0f}%"),
    ("epoch time", lambda r: f"{duration(r['epoch_time_s'])} ({r['epoch_images']:,} images)"),
    ("step p50 / p90 (s)", lambda r: f"{r['step_p50_s']:.3f} / {r['step_p90_s']:.3f}"),
    ("peak RSS per rank (MB)", lambda r: f"{r['peak_rss_mb']:,.0f}"),
]
CSV_KEYS = ["workload", "network", "size", "mode", "ranks", "per_rank_batch", "global_batch", "images_per_s",
            "images_per_s_per_rank", "baseline_ranks", "speedup", "efficiency_pct", "epoch_images", "epoch_time_s",
            "step_p50_s", "step_p90_s", "peak_rss_mb", "repeats", "precision", "input"]


def measured_table(table, study, records):
    m, load = study["machine"], [r["load_avg_1m"] for r in records]
    workloads = list(dict.fromkeys(r["workload"] for r in table))
    bf16 = ", ".join(study["native_bf16"]) or "no native bfloat16"
    lines = [f"# Scaling: {', '.join(workloads)}", "",
             f"{study['date']}; {m['cpu']} ({bf16}), {m['cores']} cores; Python {m['python']}, TensorFlow "
             f"{m['tensorflow']}, tf_keras {m['tf_keras']}, horovod {m['horovod']}; {table[0]['precision']}, "
             f"{table[0]['input']} input; command: `{study['command']}`.", "",
             f"Medians over {max(r['repeats'] for r in table)} round(s); timed steps "
             f"{pairs(study['steps'], workloads)} after {pairs(study['warmup_steps'], workloads)} untimed. "
             f"Speed-up and efficiency against the fewest ranks of the same workload and mode (here "
             f"{table[0]['baseline_ranks']}); per-rank images/s = images/s / ranks; epoch time = images / "
             f"images/s. The 1-minute load average at the end of the runs was {min(load):.1f}-{max(load):.1f} "
             f"on {m['cores']} cores (this study's own run accounts for about {m['cores']}).", "",
             "| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for r in table]
    return lines


def pairs(per_workload_figures, workloads):
    return ", ".join(f"{w} {per_workload_figures[w]}" for w in workloads)


def csv_text(table):
    lines = [",".join(CSV_KEYS + ["images_per_s_samples"])]
    for r in table:
        lines.append(",".join(str(r[k]) for k in CSV_KEYS) + "," + ";".join(f"{v:.6g}" for v in
                                                                            r["images_per_s_samples"]))
    return "\n".join(lines) + "\n"


def allreduce_seconds(allreduce, nbytes):
    """Horovod's 2-rank allreduce time at ``nbytes``: log-log between the two measured sizes around it."""
    pts = sorted((r["bytes"], r["seconds_p50"]) for r in allreduce if r["ranks"] == 2)
    below = [p for p in pts if p[0] <= nbytes] or pts[:1]
    above = [p for p in pts if p[0] > nbytes] or pts[-1:]
    (b0, t0), (b1, t1) = below[-1], above[0]
    if b0 == b1:
        return t0 * nbytes / b0
    return t0 * (t1 / t0) ** (math.log(nbytes / b0) / math.log(b1 / b0))


def projection(table, allreduce, study):
    """The PROJECTION section: measured step and allreduce times put into a ring-allreduce model."""
    if not allreduce:
        return ["", "## PROJECTION", "", "No allreduce records (run benchmarks/allreduce.py): no projection."]
    src = study.get("allreduce_meta") or {}
    lines = ["", "## PROJECTION (a model fed with measured figures, not a measurement)", "",
             "Formula, per step with N ranks: `t_ar(N) = t_ar(2) x 2(N-1)/N` (a ring allreduce moves 2(N-1)/N of "
             "the gradient over each link) and `efficiency(N) = t_c / (t_c + t_ar(N))` (no overlap of the "
             "allreduce with the backward pass).", "",
             f"- `t_ar(2)`: Horovod over MPI, 2 ranks, at the gradient's size (trainable parameters x 4 bytes), "
             f"interpolated log-log between the sizes measured by `{allreduce[0]['source']}` "
             f"({src.get('date', '?')}, {src.get('cpu', '?')}, one node: shared memory).",
             "- `t_c` on *nodes like this one*: the measured step p50 at the fewest ranks, weak mode, "
             "one rank per node.",
             f"- `t_c` on *V100s*: per-rank batch / {DELL_V100[1]} s, from Dell's CheXNet figure of "
             f"{DELL_V100[1]} images/s on one V100 (reference, not measured here).",
             "- Left out: per-message latency (2(N-1) messages per allreduce), Horovod's cycle time and the "
             "input pipeline, which lower efficiency; overlap with the backward pass, which raises it. The "
             "links are taken to be as fast as one node's shared memory; real networks differ.", "",
             "| workload | ranks N | gradient | t_ar(N) | t_c, nodes like this one | efficiency | t_c, V100 | "
             "efficiency | reference (measured elsewhere) |", "|---" * 9 + "|"]
    for r in table:
        if r["mode"] != "weak" or r["ranks"] != r["baseline_ranks"]:
            continue
        nbytes = r["trainable_parameters"] * (2 if r["fp16_allreduce"] else 4)
        t2 = allreduce_seconds(allreduce, nbytes)
        gpu_tc = r["per_rank_batch"] / DELL_V100[1] if r["workload"] == "chexnet" else None
        for n in PROJECTED_RANKS:
            t_ar = t2 * 2 * (n - 1) / n
            gpu = (f"{gpu_tc * 1e3:.0f} ms", f"{100 * gpu_tc / (gpu_tc + t_ar):.0f}%") if gpu_tc else ("-", "-")
            lines.append(f"| {r['workload']} | {n} | {nbytes / 1e6:.1f} MB | {t_ar * 1e3:.1f} ms | "
                         f"{r['step_p50_s'] * 1e3:,.0f} ms | {100 * r['step_p50_s'] / (r['step_p50_s'] + t_ar):.1f}% | "
                         f"{gpu[0]} | {gpu[1]} | {reference(r['workload'], n)} |")
    return lines


def reference(workload, n):
    if workload == "chexnet" and n in DELL_V100:
        return f"Dell V100: {DELL_V100[n]:,} images/s, {100 * DELL_V100[n] / (n * DELL_V100[1]):.0f}%"
    return f"Horovod paper: ~{HOROVOD_512:.0%} (Inception V3, ResNet-101)" if n == 512 else ""


def plot(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    workloads = list(dict.fromkeys(r["workload"] for r in table))
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        for mode, colour in zip(MODES, ("tab:blue", "tab:orange")):
            pts = [(r["ranks"], r["images_per_s"]) for r in table if (r["workload"], r["mode"]) == (w, mode)]
            if not pts:
                continue
            ranks, ips = zip(*pts)
            ax.plot(ranks, ips, marker="o", color=colour, label=f"{mode} (measured)")
            ax.plot(ranks, [ips[0] * n / ranks[0] for n in ranks], "--", color=colour, label=f"{mode}: linear")
        first = next(r for r in table if r["workload"] == w)
        ax.set(xlabel="ranks", ylabel="global images/s", title=f"{w} ({first['network']}, {first['size']})",
               xticks=sorted({r["ranks"] for r in table}))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_tables(args):
    path = os.path.join(args.out, "metrics.jsonl")
    if not os.path.exists(path):
        sys.exit(f"{path} not found: run the study first (without --tables-only), or pass its --out")
    study = read_events(path, "study")[-1]
    records = read_events(path, "benchmark")
    if not records:
        sys.exit(f"{path} holds no benchmark record: the study ran nothing")
    table = rows(records, {**study["epoch_images"], **args.epoch_images})
    allreduce = read_events(path, "allreduce")
    md = "\n".join(measured_table(table, study, records) + projection(table, allreduce, study)) + "\n"
    for ext, text in ((".md", md), (".csv", csv_text(table))):
        with open(args.out + ext, "w", encoding="utf-8") as fh:
            fh.write(text)
    plot(table, args.out + ".png")
    print(md, flush=True)


def main(argv=None):
    args = parse_args(argv)
    # A SIGTERM (scancel, kill) becomes an exception, so that sh() ends the running mpirun and its ranks first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("scaling study: stopped by SIGTERM"))
    if not args.tables_only:
        run_all(args, start_stream(args))
    write_tables(args)


if __name__ == "__main__":
    main()
