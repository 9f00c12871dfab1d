"""Benchmark: which --lr-scaling rule keeps the validation AUC as ranks grow.

    .venv/bin/python benchmarks/lr_scaling.py [--seeds 0,1]

1. Makes (or reuses) a synthetic ChestX-ray14 with the project's own stages
   (download --synthetic, extract, write_tfrecords) at 64x64.
2. Trains CheXNet with ``mpirun -np N --oversubscribe`` for 1 rank (sqrt; at 1
   rank every rule gives base_lr) and for each of --ranks > 1 with each of
   --rules, for each seed: same per-rank batch, so the global batch grows with N.
   A run whose metrics.jsonl already holds every epoch is reused, not retrained.
3. Builds the table only from each run's metrics.jsonl: global batch, peak
   learning rate, validation mean AUC per epoch, final and best, and the final
   AUC minus the 1-rank final AUC of the same seed.

Every run's row is a record in <out>/metrics.jsonl, after the study's record (command, date, machine,
settings); <out>.md is built from that file alone (``--tables-only`` rebuilds it).
Tiny check: ``--images 200 --epochs 1 --ranks 1,2 --rules sqrt --out /tmp/lr``.
Ranks may outnumber cores: this measures learning, not speed.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    mpi_env, output_flags, ranks_command, refuse_unless_noted, sh, start_records, study_records, synthetic_data,
    write_outputs, write_run_note)
from runtime.metrics import read_events  # noqa: E402

MARK = "benchmarks/lr_scaling.py"
SETTINGS = ("images", "image_size", "crop", "epochs", "per_rank_batch", "ranks", "rules", "seeds")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1200, help="synthetic images (default 1200)")
    p.add_argument("--image-size", type=int, default=64, help="stored image side (default 64)")
    p.add_argument("--crop", type=int, default=56, help="training crop (default 56)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (default 4)")
    p.add_argument("--per-rank-batch", type=int, default=16, help="images per rank per step (default 16)")
    p.add_argument("--ranks", default="1,2,4", help="comma list; 1 is always run, with sqrt (default 1,2,4)")
    p.add_argument("--rules", default="linear,sqrt,none", help="rules for ranks > 1 (default linear,sqrt,none)")
    p.add_argument("--seeds", default="0", help="training seeds, comma list (default 0)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "lr-scaling"),
                   help="data and run folders; reused across invocations (default: $TMPDIR/lr-scaling)")
    output_flags(p, "lr_scaling")
    args = p.parse_args(argv)
    if args.tables_only:
        return args
    args.ranks = sorted({1} | {int(n) for n in args.ranks.split(",")})
    args.rules = args.rules.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def make_data(args):
    """The project's three data stages at --image-size; reused where the TFRecords for these settings exist."""
    out = os.path.join(args.workdir, f"data-{args.images}-{args.image_size}")
    return os.path.join(synthetic_data("chestxray14", out, args.images, args.image_size, args.image_size), "tfrecords")


def plan(args):
    """(seed, ranks, rule) of every run: 1 rank once per seed, then every rule for each N > 1."""
    return [(seed, n, rule) for seed in args.seeds for n in args.ranks
            for rule in (["sqrt"] if n == 1 else args.rules)]


def run_dir(args, seed, ranks, rule):
    return os.path.join(args.workdir, f"runs-{args.images}-e{args.epochs}", f"seed{seed}", f"lr-{rule}-np{ranks}")


def finished(path, epochs):
    metrics = os.path.join(path, "metrics.jsonl")
    return os.path.exists(metrics) and len(read_events(metrics, "epoch")) >= epochs


def train(args, tfrecords, seed, ranks, rule):
    """One ``mpirun -np N python -m chexnet.train`` run; a half-finished folder of the study's is started afresh."""
    path = run_dir(args, seed, ranks, rule)
    if finished(path, args.epochs):
        return 0.0
    shutil.rmtree(path, ignore_errors=True)  # the study's own (main refused any other), never user data
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_run_note(path, {"made_by": MARK})  # first: a stopped run stays the study's
    cmd = ranks_command(ranks, [
        "-m", "chexnet.train", "--data-dir", tfrecords, "--runs-dir", os.path.dirname(path),
        "--run-name", os.path.basename(path), "--epochs", str(args.epochs), "--crop", str(args.crop),
        "--per-rank-batch", str(args.per_rank_batch), "--bn-momentum", "0.9", "--warmup-epochs", "1",
        "--precision", "float32", "--weights", "none", "--no-tensorboard", "--progress", "log",
        "--lr-scaling", rule, "--seed", str(seed)])
    t0 = time.perf_counter()
    sh(cmd, path + ".log", mpi_env())
    return time.perf_counter() - t0


def summarise_run(path):
    """One row, from the run's metrics.jsonl only."""
    metrics = os.path.join(path, "metrics.jsonl")
    config = read_events(metrics, "config")[0]
    epochs = read_events(metrics, "epoch")
    aucs = [e["val_mean_auc"] for e in epochs]
    return {"seed": config["config"]["seed"], "ranks": config["ranks"], "rule": config["config"]["lr_scaling"],
            "per_rank_batch": config["config"]["per_rank_batch"],
            "global_batch": config["ranks"] * config["config"]["per_rank_batch"],
            "base_lr": config["config"]["base_lr"], "peak_lr": max(e["lr"] for e in epochs),
            "lr_per_epoch": [e["lr"] for e in epochs], "val_mean_auc_per_epoch": aucs,
            "train_images_seen_per_epoch": [e["train_images_seen"] for e in epochs],
            "final_auc": aucs[-1], "best_auc": max(aucs),
            "train_time_s": sum(e["epoch_time_s"] for e in epochs)}


def add_deltas(rows):
    """Final AUC minus the 1-rank final AUC of the same seed."""
    reference = {r["seed"]: r["final_auc"] for r in rows if r["ranks"] == 1}
    for r in rows:
        r["delta_final_vs_1rank"] = r["final_auc"] - reference[r["seed"]] if r["seed"] in reference else None
    return rows


def aggregate(rows):
    """Per (ranks, rule): mean and range over seeds of final AUC and its difference to 1 rank."""
    groups = {}
    for r in rows:
        groups.setdefault((r["ranks"], r["rule"]), []).append(r)
    out = []
    for (ranks, rule), rs in groups.items():
        finals, deltas = [r["final_auc"] for r in rs], [r["delta_final_vs_1rank"] for r in rs]
        out.append({"ranks": ranks, "rule": rule, "global_batch": rs[0]["global_batch"],
                    "peak_lr": rs[0]["peak_lr"], "seeds": [r["seed"] for r in rs],
                    "final_auc_mean": statistics.mean(finals), "final_auc_min": min(finals),
                    "final_auc_max": max(finals), "best_auc_mean": statistics.mean(r["best_auc"] for r in rs),
                    "delta_final_vs_1rank_mean": statistics.mean(deltas),
                    "delta_final_vs_1rank_per_seed": deltas})
    return out



def markdown(study, rows, summary):
    """The per-run table (one row per seed) and, with several seeds, the mean over seeds."""
    epochs = study["epochs"]
    head = ("| seed | ranks | rule | global batch | peak LR | " + " | ".join(f"AUC e{i + 1}" for i in range(epochs))
            + " | final | best | final - 1 rank |\n|" + "---|" * (epochs + 8))
    lines = [head]
    for r in rows:
        aucs = " | ".join(f"{a:.4f}" for a in r["val_mean_auc_per_epoch"])
        lines.append(f"| {r['seed']} | {r['ranks']} | {r['rule']} | {r['global_batch']} | {r['peak_lr']:.2e} | "
                     f"{aucs} | {r['final_auc']:.4f} | {r['best_auc']:.4f} | {r['delta_final_vs_1rank']:+.4f} |")
    if len(study["seeds"]) > 1:
        lines += ["", "| ranks | rule | global batch | peak LR | final AUC, mean (min - max) | best, mean "
                  "| final - 1 rank, mean (per seed) |", "|---|---|---|---|---|---|---|"]
        for g in summary:
            per_seed = ", ".join(f"{d:+.4f}" for d in g["delta_final_vs_1rank_per_seed"])
            lines.append(f"| {g['ranks']} | {g['rule']} | {g['global_batch']} | {g['peak_lr']:.2e} | "
                         f"{g['final_auc_mean']:.4f} ({g['final_auc_min']:.4f} - {g['final_auc_max']:.4f}) | "
                         f"{g['best_auc_mean']:.4f} | {g['delta_final_vs_1rank_mean']:+.4f} ({per_seed}) |")
    m = study["machine"]
    lines += ["", f"{m['cpu']}, {m['cores']} cores; Python {m['python']}, TensorFlow {m['tensorflow']}, "
              f"tf_keras {m['tf_keras']}, horovod {m['horovod']}; {study['date']}.",
              f"Command: `{study['command']}`"]
    return "\n".join(lines) + "\n"


def write_tables(out):
    path = study_records(out)
    rows = add_deltas(read_events(path, "run"))
    write_outputs(out, {".md": markdown(read_events(path, "study")[-1], rows, aggregate(rows))})


def main(argv=None):
    args = parse_args(argv)
    if not args.tables_only:
        for key in plan(args):  # before any work: a folder in a run's place that the study did not make
            refuse_unless_noted(run_dir(args, *key), {"made_by": MARK})
        os.makedirs(args.workdir, exist_ok=True)
        t0 = time.perf_counter()
        tfrecords = make_data(args)
        stream = start_records(args.out, **{k: getattr(args, k) for k in SETTINGS})
        for seed, ranks, rule in plan(args):
            took = train(args, tfrecords, seed, ranks, rule)
            print(f"seed {seed} np {ranks} {rule}: " + (f"{took:.0f} s" if took else "reused"), flush=True)
            stream.write("run", **summarise_run(run_dir(args, seed, ranks, rule)))
        stream.write("study_end", wall_s=time.perf_counter() - t0)
    write_tables(args.out)


if __name__ == "__main__":
    main()
