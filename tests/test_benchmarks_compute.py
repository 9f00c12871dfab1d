"""The compute studies on tiny sizes (a U-Net at 32x32): where the time goes when ranks split a node's
cores (benchmarks/core_split.py), and precision and compilation (benchmarks/precision.py). Each runs
end to end and builds its table from its records alone."""
import csv
import os
import statistics
import sys

import pytest

from helpers import run_job
from runtime.metrics import read_events


def test_core_split_table_comes_from_its_records(tmp_path):
    """The core-split study on a tiny U-Net: one row per configuration, each the median over rounds of
    the records' images/s (the apart processes' summed), as a share of the 1-process row."""
    out = tmp_path / "core_split"
    run_job([sys.executable, "benchmarks/core_split.py", "--workload", "segmentation", "--seg-model", "unet",
             "--size", "32", "--per-rank-batch", "2", "--steps", "2", "--warmup-steps", "1", "--repeats", "1",
             "--variants", "Gloo", "--workdir", str(tmp_path / "work"), "--out", str(out)], timeout=600)
    records = read_events(str(out / "metrics.jsonl"), "core_split")
    rows = [line for line in (tmp_path / "core_split.md").read_text().splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 3  # alone, apart, Gloo

    def median_of(kind, variant):
        rounds = {}
        for r in records:
            if (r["kind"], r["variant"]) == (kind, variant):
                rounds[r["repeat"]] = rounds.get(r["repeat"], 0.0) + r["images_per_s"]
        return statistics.median(rounds.values())
    alone = median_of("alone", None)
    assert sum(r["kind"] == "apart" for r in records) == os.cpu_count()  # a process per core
    for row, (kind, variant) in zip(rows, [("alone", None), ("apart", None), ("ranks", "Gloo")]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) == pytest.approx(median_of(kind, variant), abs=0.006)
        assert cells[2] == f"{median_of(kind, variant) / alone:.0%}"
    rebuilt = run_job([sys.executable, "benchmarks/core_split.py", "--tables-only", "--out", str(out)], timeout=120)
    assert rebuilt.returncode == 0 and (tmp_path / "core_split.md").read_text() in rebuilt.stdout


def test_precision_study_table_comes_from_its_records(tmp_path):
    """The precision study on tiny models: a row per workload and variant run, each the median of its
    records, GFLOP/s = images/s x the counted FLOPs, its share of the larger measured matmul peak."""
    out = tmp_path / "precision"
    run_job([sys.executable, "benchmarks/precision.py", "--workloads", "segmentation", "--seg-model", "unet",
             "--segmentation-size", "32", "--segmentation-batch", "2", "--steps", "2", "--warmup-steps", "1",
             "--repeats", "1", "--variants", "float32,2 ranks fp16 allreduce", "--matmul-n", "256",
             "--workdir", str(tmp_path / "work"), "--out", str(out)], timeout=600)
    path = str(out / "metrics.jsonl")
    runs = read_events(path, "precision")
    assert sorted((r["variant"], r["ranks"]) for r in runs) == [("2 ranks fp16 allreduce", 2), ("float32", 1)]
    flops = read_events(path, "flops")[0]["train_flop_per_image"]
    peak = max(r["gflop_per_s"] for r in read_events(path, "matmul_peak") if r["dtype"] == "float32")
    with open(str(out) + ".csv") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"float32", "2 ranks fp16 allreduce"}
    for variant, row in rows.items():
        rate = statistics.median(r["images_per_s"] for r in runs if r["variant"] == variant)
        assert float(row["images_per_s"]) == pytest.approx(rate, abs=1e-3)
        assert float(row["train_gflop_per_s"]) == pytest.approx(rate * flops / 1e9, abs=0.006)
        assert float(row["of_peak"]) == pytest.approx(rate * flops / 1e9 / peak, abs=1e-3)
    md = open(str(out) + ".md").read()
    assert "`--precision auto` chooses" in md and md.count("| segmentation |") == 2
    run_job([sys.executable, "benchmarks/precision.py", "--tables-only", "--out", str(out)], timeout=120)
    assert open(str(out) + ".md").read() == md


def test_step_overhead_study_times_the_same_steps_four_ways_and_tables_its_records(tmp_path, small_kvasir):
    """The step-overhead study on a tiny U-Net on 1 rank, one round, over the shared small records: a record
    per variant (bare loop, Keras fit, the trainer's benchmark and training modes), each timing the epoch's
    steps after the same warm-up, so the four are comparable; the table's medians and ratios to bare are the
    records', and --tables-only rebuilds it."""
    out = tmp_path / "step_overhead"
    study = [sys.executable, "benchmarks/step_overhead.py", "--out", str(out)]
    proc = run_job([*study, "--ranks", "2,0"], expect_rc=2, timeout=60)
    assert "--ranks '2,0': give rank counts 1 to 64" in proc.stderr
    proc = run_job([*study, "--data-dir", str(tmp_path)], expect_rc=2, timeout=60)
    assert f"--data-dir {tmp_path}: no manifest.json there" in proc.stderr
    run_job([*study, "--workload", "segmentation", "--seg-model", "unet", "--data-dir", str(small_kvasir / "tfrecords"),
             "--per-rank-batch", "4", "--warmup-steps", "2", "--ranks", "1", "--rounds", "1"], timeout=600)
    runs = read_events(str(out / "metrics.jsonl"), "run")
    assert sorted(r["variant"] for r in runs) == ["bare", "benchmark", "fit", "training"]
    steps = {r["timed_steps"] for r in runs}
    assert len(steps) == 1 and steps.pop() > 0 and all(r["ranks"] == 1 and r["images_per_s"] > 0 for r in runs)
    md = (tmp_path / "step_overhead.md").read_text()
    bare = next(r["images_per_s"] for r in runs if r["variant"] == "bare")
    for r in runs:
        assert f"| 1 | {r['variant']} | {r['images_per_s']:.2f} | {r['images_per_s']:.2f} | " \
               f"{r['images_per_s'] / bare:.3f} |" in md, md
    rebuilt = run_job([*study, "--tables-only"], timeout=120)
    assert rebuilt.returncode == 0 and (tmp_path / "step_overhead.md").read_text() == md
