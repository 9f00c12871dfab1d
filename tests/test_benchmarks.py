"""The benchmark commands on tiny sizes: each runs end to end and builds its table from its records."""
import csv
import json
import os
import pathlib
import shutil
import statistics
import sys

import pytest

from helpers import make_kvasir, run_job
from runtime.metrics import read_events


def test_allreduce_study_tables_come_from_its_records(tmp_path):
    out = tmp_path / "ar"
    run_job([sys.executable, "benchmarks/allreduce.py", "--sizes", "1K,64K", "--repeats", "3",
             "--fusion", f"0:1,{64 << 20}:1", "--out", str(out)], timeout=600)
    records = read_events(str(out / "metrics.jsonl"), "allreduce")
    assert sorted((r["impl"], r["controller"], r["bytes"]) for r in records if r["impl"] != "horovod grouped") == \
        sorted((i, c, n) for i, c in (("mpi4py", "mpi"), ("horovod", "mpi"), ("horovod", "gloo"))
               for n in (1024, 65536))
    assert sorted(r["fusion_threshold"] for r in records if r["impl"] == "horovod grouped") == ["0", str(64 << 20)]
    assert all(r["ranks"] == 2 and r["repeats"] == 3 and r["seconds_p50"] > 0 for r in records)
    with open(str(out) + ".csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(records)
    def key(r):
        return r["impl"], r["controller"], int(r["bytes"]), str(r.get("fusion_threshold", "")), \
            str(r.get("cycle_time_ms", ""))

    by = {key(r): r for r in records}
    for row in rows:  # every figure of the table is its record's
        r = by[key(row)]
        assert float(row["busbw_GBps"]) == float(f"{r['busbw_GBps']:.6g}")
    md = open(str(out) + ".md").read()
    assert "| 1 KB |" in md and "| 64 KB |" in md and "| off (0) | 1 ms |" in md
    assert os.path.getsize(str(out) + ".png") > 5_000
    # Rebuilt from the records alone, the tables come out the same.
    run_job([sys.executable, "benchmarks/allreduce.py", "--tables-only", "--out", str(out)], timeout=120)
    assert open(str(out) + ".md").read() == md


def test_segmentation_model_comparison_has_a_row_per_network_built_from_its_runs_records(tmp_path,
                                                                                        small_kvasir):
    """U-Net trained and graded by the study (one process, one epoch) on the shared small records, with train
    and val only (so val is graded), then on other records in the same --workdir, which have a test split, with
    SegNet beside it (every network's forward pass is in test_segmentation_model.py): a new run, not the first
    one's; a row per network, every figure its run's own record, the table naming the split graded and its
    image count, and the same table from the records alone."""
    out, work = tmp_path / "cmp", tmp_path / "work"
    study = [sys.executable, "benchmarks/segmentation_models.py", "--panels", "2", "--workdir", str(work),
             "--out", str(out), "--epochs", "1", "--np", "1", "--batches", "1,2", "--repeats", "2", "--precision",
             "float32", "--bootstrap", "50", "--train-args", "--throughput-warmup-steps 1"]
    first = small_kvasir
    run_job([*study, "--data-dir", str(first / "tfrecords"), "--models", "unet"], timeout=900)
    val = json.loads((first / "tfrecords" / "manifest.json").read_text())["splits"]["val"]["images"]
    assert open(str(out) + ".md").read().startswith(f"val split of {val} images, 32x32, 1 epochs on 1 rank(s), ")
    other = make_kvasir(tmp_path / "other", pairs=50, largest=96, stored=32, split="random")
    test_images = json.loads((other / "tfrecords" / "manifest.json").read_text())["splits"]["test"]["images"]
    assert test_images != val
    proc = run_job([*study, "--data-dir", str(other / "tfrecords"), "--models", "unet,segnet"], timeout=900)
    meta = json.loads(open(str(out) + ".json").read())
    assert meta["split"] == {"name": "test", "images": test_images} and meta["data"] == str(other / "tfrecords")
    runs = {m: meta["runs"][m]["folder"] for m in ("unet", "segnet")}
    assert f"U-Net: training and grading in {runs['unet']}" in proc.stdout
    assert len([f for f in os.listdir(work / "runs") if f.startswith("unet-") and f.endswith(".study.json")]) == 2
    with open(str(out) + ".csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["segnet", "unet"]
    for model, row in rows.items():
        metrics = os.path.join(runs[model], "metrics.jsonl")
        assert read_events(metrics, "config")[0]["config"]["data_dir"] == str(other / "tfrecords")
        ev = read_events(metrics, "eval")
        assert [(r["split"], r["checkpoint"], r["images"]) for r in ev] == [("test", "last.npz", test_images)]
        assert (row["split"], row["images"]) == ("test", str(test_images))
        assert float(row["dice"]) == ev[0]["mean_dice"] and float(row["iou_ci_high"]) == ev[0]["mean_iou_ci"][1]
        timings = {r["batch"]: r for r in read_events(metrics, "inference")}
        assert sorted(timings) == [1, 2] and int(row["parameters"]) == timings[1]["parameters"]
        assert float(row["best_images_per_s"]) == max(r["images_per_s"] for r in timings.values())
        trained = [e["throughput"]["images_per_s"] for e in read_events(metrics, "epoch")]
        assert float(row["train_images_per_s_per_rank"]) == statistics.median(trained) > 0
    md = open(str(out) + ".md").read()
    assert md.startswith(f"test split of {test_images} images, 32x32, 1 epochs on 1 rank(s), graded at last.npz; ")
    assert [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ") and "---" not in line] == \
        ["| network", "| U-Net", "| SegNet"]
    assert os.path.getsize(str(out) + ".png") > 5_000
    run_job([*study, "--models", "unet,segnet", "--tables-only"], timeout=300)
    assert open(str(out) + ".md").read() == md


def test_segmentation_model_comparison_refuses_a_run_folder_it_did_not_make(tmp_path, resunetpp_run):
    """A folder where the study would put its run, without the study's note of the settings beside it (a user's
    run, or one of an earlier layout): refused in one line naming it, before any training, and left as it was."""
    work = tmp_path / "work"
    study = [sys.executable, "benchmarks/segmentation_models.py", "--data-dir", str(resunetpp_run["data"] / "tfrecords"),
             "--models", "resunetpp", "--epochs", str(resunetpp_run["epochs"]), "--np", "2", "--workdir", str(work),
             "--out", str(tmp_path / "cmp")]
    from benchmarks import segmentation_models
    args = segmentation_models.parse_args(study[2:])
    run, _ = segmentation_models.claim_run(args, str(resunetpp_run["data"] / "tfrecords"), "resunetpp")
    shutil.copytree(resunetpp_run["run"], run)
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in pathlib.Path(run).iterdir())
    proc = run_job(study, expect_rc=1, timeout=120)
    assert proc.stderr.strip().splitlines() == [
        f"{run} exists but this study did not make it for these settings (no matching {run}.study.json): it is left "
        f"as it is; pass another --workdir, or move it away"]
    assert sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in pathlib.Path(run).iterdir()) == before
    assert sorted(os.listdir(work / "runs")) == [os.path.basename(run)]


def test_scaling_study_builds_every_row_from_its_runs_records(tmp_path):
    """Weak and strong scaling at 1 and 2 ranks on the segmentation trainer's U-Net at 32x32 (CheXNet's
    DenseNet121 takes most of a minute to build per run: the same code path, too slow here). Three runs: the
    2-rank batch-2 command serves both modes. Every figure is its record's, and --tables-only rebuilds it."""
    out = tmp_path / "scaling"
    study = [sys.executable, "benchmarks/scaling.py", "--workloads", "segmentation", "--seg-model", "unet",
             "--seg-size", "32", "--out", str(out)]
    proc = run_job([*study, "--global-batch", "3"], expect_rc=1, timeout=60)
    assert proc.stderr.strip().splitlines() == ["--global-batch 3 (segmentation) does not divide over 2 ranks: "
                                                "pick a multiple of 2 for --ranks 1,2"]
    run_job([*study, "--ranks", "1,2", "--per-rank-batch", "2", "--global-batch", "4", "--steps", "2",
             "--warmup-steps", "1", "--repeats", "1", "--workdir", str(tmp_path / "work")], timeout=600)
    records = read_events(str(out / "metrics.jsonl"), "benchmark")
    assert sorted((r["ranks"], r["per_rank_batch"], r["modes"]) for r in records) == \
        [(1, 2, ["weak"]), (1, 4, ["strong"]), (2, 2, ["weak", "strong"])]
    for r in records:  # the run's own record, copied, with its peak memory on every rank
        own = read_events(os.path.join(r["run"], "metrics.jsonl"), "benchmark")[-1]
        assert (r["images_per_s"], r["peak_rss_mb"]) == (own["images_per_s"], own["peak_rss_mb"])
        assert len(r["peak_rss_mb_per_rank"]) == r["ranks"] and r["peak_rss_mb"] == max(r["peak_rss_mb_per_rank"]) > 0
        assert r["precision"] == "float32" and r["input"] == "synthetic" and r["timed_steps"] == 2
    with open(str(out) + ".csv") as fh:
        rows = {(row["mode"], int(row["ranks"])): row for row in csv.DictReader(fh)}
    assert sorted(rows) == [("strong", 1), ("strong", 2), ("weak", 1), ("weak", 2)]
    by = {(r["ranks"], r["per_rank_batch"]): r for r in records}
    for (mode, ranks), row in rows.items():
        rec, base = by[ranks, int(row["per_rank_batch"])], float(rows[mode, 1]["images_per_s"])
        assert int(row["global_batch"]) == (2 * ranks if mode == "weak" else 4) == rec["global_batch"]
        assert float(row["images_per_s"]) == rec["images_per_s"]
        assert float(row["images_per_s_per_rank"]) == pytest.approx(rec["images_per_s"] / ranks)
        assert float(row["speedup"]) == pytest.approx(rec["images_per_s"] / base)
        assert float(row["efficiency_pct"]) == pytest.approx(100 * float(row["speedup"]) / ranks)
        assert float(row["epoch_time_s"]) == pytest.approx(880 / rec["images_per_s"])  # the official train list
        assert float(row["peak_rss_mb"]) == rec["peak_rss_mb"]
    md = open(str(out) + ".md").read()
    assert len([line for line in md.splitlines() if line.startswith("| segmentation (unet, 32) |")]) == 4
    assert "## PROJECTION" in md and os.path.getsize(str(out) + ".png") > 5_000
    csv_text = open(str(out) + ".csv").read()
    run_job([sys.executable, "benchmarks/scaling.py", "--tables-only", "--out", str(out)], timeout=120)
    assert (open(str(out) + ".md").read(), open(str(out) + ".csv").read()) == (md, csv_text)


def test_inference_study_builds_its_tables_from_its_records_and_prunes_to_the_target(tmp_path):
    """Both models at 32x32 (batches 1 and 2, 2 warm-up + 3 timed calls), each trained for a step on a tiny
    synthetic set, then pruned to 80% while fine-tuning for one more, beside a dense control fine-tuned by the
    same steps. Float32 and one target only: bfloat16 adds 7 s of CPU and a second target 17 s: a table row per
    configuration measured, every figure its record's, the stripped kernels as sparse as asked (zeros counted
    here, in the weights file), pruning's cost taken against the control, and --tables-only rebuilds the same
    tables."""
    import h5py
    import numpy as np

    out = tmp_path / "inference"
    study = [sys.executable, "benchmarks/inference.py", "--out", str(out)]
    proc = run_job([*study, "--batches", "1,0"], expect_rc=1, timeout=60)
    assert proc.stderr.strip().splitlines() == ["--batches takes comma-separated ints >= 1, e.g. 1,8,32; got '1,0'"]
    run_job([*study, "--chexnet-sizes", "32", "--segmentation-sizes", "32", "--batches", "1,2", "--warmup", "2",
             "--precisions", "float32",
             "--iters", "3", "--train-images", "40", "--train-pairs", "16", "--train-size", "32", "--train-crop", "32",
             "--train-epochs", "1", "--fine-tune-epochs", "1", "--sparsities", "0.8", "--prune-batches", "1,2",
             "--bootstrap", "10", "--workdir", str(tmp_path / "work")], timeout=600)
    records = read_events(str(out / "metrics.jsonl"))
    assert all(r["peak_rss_mb"] > 0 and r["cpu_model"] and r["versions"]["tfmot"] == "0.8.1" for r in records)
    assert not [r for r in records if r["event"] == "skipped"]
    md = open(f"{out}.md").read()
    latency_md, pruning_md = md.split("## Magnitude pruning")

    def table(suffix):
        with open(f"{out}{suffix}") as fh:
            return list(csv.DictReader(fh))

    latency = {(r["model"], r["precision"], r["batch"]): r for r in records if r["event"] == "latency"}
    assert sorted(latency) == sorted((m, "float32", b) for m in ("chexnet", "segmentation") for b in (1, 2))
    rows = table("-latency.csv")
    assert len(rows) == len(latency) == len([line for line in latency_md.splitlines() if "| 32x32 |" in line])
    for row in rows:
        r = latency[row["model"], row["precision"], int(row["batch"])]
        assert r["iters"] == 3 and r["latency_p50_ms"] <= r["latency_p99_ms"]
        for key in ("images_per_s", "latency_mean_ms", "latency_p50_ms", "latency_p99_ms", "peak_rss_mb"):
            assert float(row[key]) == r[key]
        assert f"| {r['batch']} | {r['images_per_s']:.1f} | {r['images_per_s_p50']:.1f} | " in latency_md

    pruned = {(r["model"], r["variant"]): r for r in records if r["event"] == "pruning"}
    assert sorted(pruned) == sorted((m, v) for m in ("chexnet", "segmentation") for v in ("dense", "dense-ft", "80%"))
    timed = {(r["model"], r["variant"], r["batch"]): r for r in records if r["event"] == "pruned_latency"}
    assert sorted(timed) == sorted((m, v, b) for m, v in pruned for b in (1, 2))
    rows = table("-pruning.csv")
    assert len(rows) == len(pruned) == len([line for line in pruning_md.splitlines()
                                            if line.startswith(("| CheXNet", "| ResUNet++"))])
    for row in rows:
        r = pruned[row["model"], row["variant"]]
        quality = ("mean_auc",) if r["model"] == "chexnet" else ("dice", "iou")
        for key in ("sparsity_pruned_kernels", "gzip_mb", "weights_mb", *quality):
            assert float(row[key]) == r[key]
        for b in (1, 2):
            assert float(row[f"latency_b{b}_p50_ms"]) == timed[r["model"], r["variant"], b]["latency_p50_ms"]
        with h5py.File(r["weights_file"], "r") as f:
            kernels = []
            for name in r["pruned_layers"]:
                f[name].visititems(lambda key, item: kernels.append(np.asarray(item)) if key.endswith("kernel:0")
                                   else None)
        assert len(kernels) == len(r["pruned_layers"]) and sum(k.size for k in kernels) == r["pruned_weights"]
        zeros = sum(int((k == 0).sum()) for k in kernels)
        assert abs(zeros / r["pruned_weights"] - r["target_sparsity"]) < 0.01
        # Layer by layer too, where rounding to whole weights moves the share by under a point (50 or more).
        assert all(abs((k == 0).mean() - r["target_sparsity"]) < 0.01 for k in kernels if k.size >= 50)
    for model in ("chexnet", "segmentation"):  # 80% zeros: the weights file compresses to under 60%
        assert pruned[model, "80%"]["gzip_mb"] < 0.6 * pruned[model, "dense"]["gzip_mb"]
    for model, label in (("chexnet", "CheXNet (DenseNet121)"), ("segmentation", "ResUNet++")):
        control, cut, dense = (pruned[model, v] for v in ("dense-ft", "80%", "dense"))
        # The control fine-tunes as the pruned variant does: same steps, batch, rate and mode; only no pruning.
        assert {k: v for k, v in control["fine_tune"].items() if k != "schedule"} == \
            {k: cut["fine_tune"][k] for k in ("epochs", "steps", "batch", "lr", "mode")}
        assert control["fine_tune"]["schedule"] is None and control["sparsity_pruned_kernels"] < 0.01
        with h5py.File(dense["weights_file"], "r") as a, h5py.File(control["weights_file"], "r") as b:
            name = dense["pruned_layers"][-1]
            read = [[], []]
            a[name].visititems(lambda key, item: read[0].append(np.asarray(item)) if key.endswith("kernel:0") else None)
            b[name].visititems(lambda key, item: read[1].append(np.asarray(item)) if key.endswith("kernel:0") else None)
        assert not np.array_equal(*read)  # the control was trained, not copied
        figures = ("mean_auc",) if model == "chexnet" else ("dice", "iou")
        line = next(line for line in pruning_md.splitlines() if line.startswith(f"| {label} | 80% |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        labels = ("AUC",) if model == "chexnet" else ("Dice", "IoU")
        assert cells[5] == "; ".join(f"{lab} {cut[f] - control[f]:+.3f}" for lab, f in zip(labels, figures))
        assert cells[6] == "; ".join(f"{lab} {cut[f] - dense[f]:+.3f}" for lab, f in zip(labels, figures))
    assert os.path.getsize(f"{out}.png") > 5_000
    texts = [open(f"{out}{suffix}").read() for suffix in (".md", "-latency.csv", "-pruning.csv")]
    run_job([*study, "--tables-only"], timeout=120)
    assert [open(f"{out}{suffix}").read() for suffix in (".md", "-latency.csv", "-pruning.csv")] == texts


def test_input_pipeline_study_measures_every_input_and_sizes_the_buffer_in_bytes(tmp_path):
    from training.config import Pipeline
    out, work = tmp_path / "ip", tmp_path / "work"
    run_job([sys.executable, "benchmarks/input_pipeline.py", "--images", "24", "--source-size", "128",
             "--stored-size", "64", "--crop", "56", "--chexnet-batch", "4", "--pairs", "12", "--seg-source-size", "240",
             "--seg-size", "64", "--seg-batch", "2", "--encodings", "raw", "--threads", "1,auto", "--batches", "3",
             "--warmup", "1", "--repeats", "1", "--shuffle-mb", "0.05,0.2", "--shuffle-images", "0",
             "--workdir", str(work), "--out", str(out)], timeout=900)
    path = str(out / "metrics.jsonl")
    runs = read_events(path, "pipeline")
    assert sorted((r["workload"], r["input"], r["threads"]) for r in runs) == sorted(
        (w, i, t) for w in ("chexnet", "segmentation") for i in ("raw", "sources") for t in (1, 0))
    assert all(r["images_per_s"] > 0 and r["peak_rss_mb"] >= r["rss_after_import_mb"] > 0 for r in runs)
    limits = read_events(path, "limit")
    assert sorted((r["workload"], r["input"]) for r in limits) == sorted(
        (w, i) for w in ("chexnet", "segmentation") for i in ("raw", "sources"))
    assert all(r["processes"] == os.cpu_count() and r["images_per_s"] > 0 for r in limits)
    # The buffer holds the megabytes asked for, in records of the set's measured size.
    shuffle = sorted(read_events(path, "shuffle"), key=lambda r: r["shuffle_mb"])
    assert [r["shuffle_mb"] for r in shuffle] == [0.05, 0.2]
    assert all(r["buffer_records"] == Pipeline(r["shuffle_mb"]).records_for(r["record_kb"] * 1024) for r in shuffle)
    assert shuffle[0]["buffer_records"] < shuffle[1]["buffer_records"]
    text = (tmp_path / "ip.md").read_text()
    assert "**chexnet**" in text and "**segmentation**" in text and "**shuffle buffer**" in text
    with open(str(out) + ".csv") as fh:
        rows = list(csv.DictReader(fh))
    by = {(r["workload"], r["input"], r["threads"]): r for r in rows}
    for r in runs:  # every figure of the table is its record's (one round: the median is the sample)
        assert float(by[(r["workload"], r["input"], "auto" if r["threads"] == 0 else "1")]["images_per_s_median"]) \
            == pytest.approx(r["images_per_s"], abs=0.01)
    assert (tmp_path / "ip.png").stat().st_size > 0
    (tmp_path / "ip.md").unlink()
    run_job([sys.executable, "benchmarks/input_pipeline.py", "--tables-only", "--out", str(out)], timeout=120)
    assert (tmp_path / "ip.md").read_text() == text
