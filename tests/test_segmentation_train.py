"""Segmentation end to end on 2 real ranks: synthetic Kvasir-SEG -> stages -> ResUNet++ -> evaluate -> predict.

Also the skeleton's promises on this trainer: the validated model is the saved
one, every epoch uses all but less than one global batch, and benchmark mode
on the records (stopping and resuming: test_stopping.py).
"""
import csv
import json
import os
import re
import sys

import cv2
import pytest

from helpers import run_job, run_ranks
from runtime.metrics import read_events

FAST = ["--precision", "float32"]  # no test may depend on the CPU's bfloat16 units


@pytest.fixture
def trained(resunetpp_run):
    """ResUNet++ on 2 ranks over uneven shards, no warm-up; then evaluate train and val (last.npz): conftest.py."""
    return resunetpp_run


def _epochs(trained):
    return read_events(str(trained["run"] / "metrics.jsonl"), "epoch")


def _eval(trained, split="val"):
    return [r for r in read_events(str(trained["run"] / "metrics.jsonl"), "eval") if r["split"] == split][0]


def test_two_rank_resunetpp_learns_the_polyps(trained):
    dice = [e["val_dice"] for e in _epochs(trained)]
    assert len(dice) == trained["epochs"]
    # A model that predicts nothing scores 0 here; one that marks the whole frame about 0.2.
    assert max(dice) >= 0.8, dice


def test_logged_validation_figures_are_the_saved_checkpoints(trained):
    last, ev = _epochs(trained)[-1], _eval(trained)
    assert ev["checkpoint"] == "last.npz" and ev["epoch"] == trained["epochs"]
    for figure in ("dice", "iou", "precision", "recall"):
        assert ev[f"mean_{figure}"] == pytest.approx(last[f"val_{figure}"], abs=1e-9), figure
    assert ev["loss"] == pytest.approx(last["val_loss"], rel=1e-5)


def test_every_validation_image_is_counted_once_and_every_epoch_uses_the_train_split(trained):
    split = trained["manifest"]["splits"]
    assert _eval(trained)["images"] == split["val"]["images"]
    with open(trained["run"] / "eval-val" / "per_image.csv") as fh:
        names = [row["image"] for row in csv.DictReader(fh)]
    assert len(names) == len(set(names)) == split["val"]["images"]
    n = split["train"]["images"]
    assert len({s["records"] for s in split["train"]["shards"]}) > 1  # files of unequal length
    for e in _epochs(trained):
        assert n - 2 * 8 < e["train_images_seen"] <= n


def test_one_evaluate_job_grades_each_split_asked_for_once(trained):
    """--split train,val (the official Kvasir-SEG lists have no test split): a record and a folder per split,
    each split's images counted once, none in both."""
    assert sorted(r["split"] for r in read_events(str(trained["run"] / "metrics.jsonl"), "eval")) == ["train", "val"]
    names = {}
    for split in ("train", "val"):
        with open(trained["run"] / f"eval-{split}" / "per_image.csv") as fh:
            names[split] = [row["image"] for row in csv.DictReader(fh)]
        assert len(names[split]) == len(set(names[split])) == _eval(trained, split)["images"] == \
            trained["manifest"]["splits"][split]["images"]
        assert _eval(trained, split)["epoch"] == trained["epochs"]
    assert not set(names["train"]) & set(names["val"])


def test_evaluation_writes_tables_and_panels(trained):
    out = trained["run"] / "eval-val"
    table = (out / "metrics.md").read_text()
    assert all(f"| {f} |" in table for f in ("dice", "iou", "precision", "recall"))
    assert os.path.getsize(out / "panels.png") > 10_000
    ev = _eval(trained)
    assert ev["mean_dice_ci"][0] <= ev["mean_dice"] <= ev["mean_dice_ci"][1] and ev["inference_images_per_s"] > 0
    config = json.loads((trained["run"] / "config.json").read_text())
    assert config["precision"]["policy"] == "float32" and config["config"]["model"] == "resunetpp"


def test_predict_gives_the_mask_evaluation_scored(trained, tmp_path):
    """A stored-size frame through predict: its mask's counts against the truth equal evaluate's for it."""
    import tensorflow as tf
    from dataprep import records
    shard = os.path.join(trained["data"], "tfrecords", trained["manifest"]["splits"]["val"]["shards"][0]["file"])
    image, mask, name = records.parse_segmentation(next(iter(tf.data.TFRecordDataset(shard))))
    name = name.numpy().decode()
    frame = tmp_path / f"{name}.png"
    cv2.imwrite(str(frame), cv2.cvtColor(image.numpy(), cv2.COLOR_RGB2BGR))  # lossless, at the stored size
    run_job([os.path.join(os.path.dirname(os.sys.executable), "python"), "-m", "segmentation.predict",
             "--checkpoint", str(trained["run"] / "last.npz"), "--out-dir", str(tmp_path / "masks"), str(frame)],
            timeout=300)
    predicted = cv2.imread(str(tmp_path / "masks" / f"{name}.png"), 0) > 127
    truth = mask.numpy()[..., 0] == 1
    counts = [int((truth & predicted).sum()), int((~truth & predicted).sum()), int((truth & ~predicted).sum()),
              int((~truth & ~predicted).sum())]
    with open(trained["run"] / "eval-val" / "per_image.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["image"] == name)
    assert counts == [int(row[k]) for k in ("tp", "fp", "fn", "tn")]


def test_benchmark_mode_on_the_records(trained, tmp_path):
    """Also with --nvtx: the real nvtx package's ranges on 2 ranks (no profiler here: they record nothing)."""
    proc = run_ranks(2, ["-m", "segmentation.train", "--model", "unet", "--data-dir",
                         str(trained["data"] / "tfrecords"), "--runs-dir", str(tmp_path), "--run-name", "b",
                         "--benchmark", "--per-rank-batch", "4", "--benchmark-steps", "4",
                         "--throughput-warmup-steps", "2", "--nvtx", *FAST], timeout=600)
    rec = read_events(str(tmp_path / "b" / "metrics.jsonl"), "benchmark")[0]
    assert rec["input"] == "tfrecords" and rec["ranks"] == 2 and rec["timed_steps"] == 4
    assert rec["network"] == "unet" and rec["image_size"] == trained["manifest"]["options"]["image_size"]
    assert rec["images"] == 2 * 4 * 4
    assert "benchmark: " in proc.stdout
    assert read_events(str(tmp_path / "b" / "metrics.jsonl"), "config")[0]["config"]["nvtx"] is True


def test_xla_trains_one_rank_on_the_records(trained, tmp_path):
    """--xla compiles the train step (one rank: Horovod's allreduce has no XLA kernel, so no wrapper);
    with --elastic it is refused in one line."""
    common = ["-m", "segmentation.train", "--model", "unet", "--data-dir", str(trained["data"] / "tfrecords"),
              "--runs-dir", str(tmp_path), "--xla", *FAST]
    run_job([sys.executable, *common, "--run-name", "x", "--benchmark", "--per-rank-batch", "4",
             "--benchmark-steps", "2", "--throughput-warmup-steps", "1"], timeout=600)
    rec = read_events(str(tmp_path / "x" / "metrics.jsonl"), "benchmark")[0]
    assert rec["xla"] is True and rec["ranks"] == 1 and rec["timed_steps"] == 2
    proc = run_job([sys.executable, *common, "--run-name", "e", "--elastic"], expect_rc=2, timeout=300)
    assert proc.stderr.strip().splitlines()[-1].endswith("cannot join an elastic job: drop --xla or --elastic")


def test_resume_without_a_checkpoint_stops_every_rank_with_one_line(trained, tmp_path):
    """Rank 0 finds no last.npz; the other rank must not wait for it in a broadcast."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text('{"event": "config", "time": 0}\n')  # died before epoch 1
    proc = run_ranks(2, ["-m", "segmentation.train", "--model", "unet", "--data-dir",
                         str(trained["data"] / "tfrecords"), "--runs-dir", str(tmp_path), "--run-name", "r",
                         "--resume", *FAST], timeout=300, expect_rc=None)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("holds no run to resume (its start stopped before the first checkpoint): run the same "
                             "command without --resume") == 2


def test_a_split_the_records_lack_stops_evaluate_before_any_split_is_graded(trained):
    """--split val,test on records with the official lists (no test split): one line naming the manifest and
    its splits, and val is not graded first (no new eval record)."""
    metrics = str(trained["run"] / "metrics.jsonl")
    before = len(read_events(metrics, "eval"))
    proc = run_job([sys.executable, "-m", "segmentation.evaluate", "--run", str(trained["run"]), "--split", "val,test"],
                   timeout=120, expect_rc=2)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {trained['data'] / 'tfrecords'}/manifest.json has no test images (its splits: train, val): pick "
        "one of those, or rewrite the TFRecords with that split")
    assert "Traceback" not in proc.stderr and len(read_events(metrics, "eval")) == before


def test_a_fine_tuned_run_starts_from_the_given_runs_weights(trained, tmp_path):
    """--init-from RUN: every layer of the same network is loaded (a line says so), the optimizer and the
    position are not (a new run: epoch 1 of 1); at a vanishing learning rate the weights stay the source's."""
    import numpy as np
    proc = run_job([sys.executable, "-m", "segmentation.train", "--data-dir", str(trained["data"] / "tfrecords"),
                    "--runs-dir", str(tmp_path), "--run-name", "tuned", "--init-from", str(trained["run"]),
                    "--epochs", "1", "--per-rank-batch", "32", "--base-lr", "1e-12", "--min-lr", "1e-12",
                    "--warmup-epochs", "0",
                    "--no-tensorboard", *FAST], timeout=300)
    assert re.search(r"--init-from \S+best.npz: loaded the weights of (\d+) of \1 layers\n", proc.stderr + proc.stdout)
    with np.load(trained["run"] / "best.npz") as source, np.load(tmp_path / "tuned" / "last.npz") as tuned:
        kernels = sorted(k for k in source.files if k.startswith("weight_"))
        assert np.allclose(source[kernels[0]], tuned[kernels[0]], atol=1e-9)
        assert json.loads(tuned["state_json"].tobytes())["epoch"] == 1
        steps = trained["manifest"]["splits"]["train"]["images"] // 32
        assert int(tuned["optimizer_0000"]) == steps  # its own updates only, from 0
