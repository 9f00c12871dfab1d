"""Both own-data recipes of the README end to end, each trained and evaluated on 2 real ranks.

X-rays from a CSV: own file names (the patient only in the CSV), 16-bit PNGs, non-square PNGs, DICOMs in
MONOCHROME2 and MONOCHROME1, uncertain and blank labels kept out of the loss (``--uncertain ignore``),
fine-tuned from the shared ChestX-ray14 run (14 classes -> 3: a fresh head). Polyp frames from two folders:
own names, non-square, JPEG, PNG and 16-bit PNG frames, 0/255 and 0/1 masks. Each: every file written or
rejected with its reason, no patient in two splits (read back from the records), and predict on the original
files gives what evaluate gave for the same records.
"""
import csv
import json
import math
import os
import sys

import cv2
import numpy as np
import pytest

from dataprep.csv_set import example
from dicom_files import write_dicom
from helpers import run_job, run_ranks
from training.manifest import Manifest

CLASSES = ",".join(example.CLASSES)
# Adam moves a weight by at most lr * (1 - beta1) / sqrt(1 - beta2) per update (Kingma & Ba, section 2.1).
ADAM_STEP_BOUND = (1 - 0.9) / math.sqrt(1 - 0.999)


def stage(*args):
    return run_job(["bash", "write_tfrecords.sh", *args, "--processes", "1", "--val-fraction", "0.2",
                    "--test-fraction", "0.25", "--seed", "0"], timeout=180)


def read_records(folder, split, features):
    """{name: {feature: value}} of one split's records, as the trainers' manifest names its shards."""
    import tensorflow as tf
    spec = {f: tf.io.FixedLenFeature([], tf.string) for f in ("name", *features)}
    out = {}
    for record in tf.data.TFRecordDataset(Manifest.load(str(folder)).files(split)):
        parsed = tf.io.parse_single_example(record, spec)
        out[parsed["name"].numpy().decode()] = {f: parsed[f].numpy().decode() for f in features}
    return out


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def accounted(manifest, names):
    """Every named file is a record or a rejection with a reason, and nothing else is."""
    rejected = {r["name"]: r["reason"] for r in manifest["rejected"]}
    assert all(rejected.values())
    assert manifest["counts"]["accounted"] == manifest["counts"]["written"] + len(rejected) == len(names)
    return rejected


# --- X-rays from a CSV -------------------------------------------------------------------------------------

def own_xrays(folder):
    """The example set rewritten as a hospital's export: own names, 16-bit, non-square, DICOM (both
    photometric interpretations), a missing file and a multi-frame DICOM. Returns the CSV's rows."""
    table = example.generate(str(folder), 40, 48, seed=3)
    rows = []
    for i, (path, patient, values) in enumerate(table):
        img = cv2.imread(str(folder / path), cv2.IMREAD_GRAYSCALE)
        os.remove(folder / path)
        kind = ("png", "png16", "wide", "dicom", "dicom1")[i % 5]
        name = f"ward {'ab'[i % 2]}/scan {i:03d}.{'dcm' if kind.startswith('dicom') else 'png'}"
        (folder / name).parent.mkdir(exist_ok=True)
        if kind == "png":
            cv2.imwrite(str(folder / name), img)
        elif kind == "png16":
            cv2.imwrite(str(folder / name), img.astype(np.uint16) * 257)
        elif kind == "wide":
            cv2.imwrite(str(folder / name), cv2.resize(img, (64, 48), interpolation=cv2.INTER_AREA))
        elif kind == "dicom":
            write_dicom(folder / name, img.astype(np.uint16) * 257, patient=patient)
        else:
            write_dicom(folder / name, 65535 - img.astype(np.uint16) * 257, "MONOCHROME1", patient=patient)
        rows.append({"Path": name, "Patient": patient, **values})
    write_dicom(folder / "cine.dcm", np.zeros((2, 48, 48), np.uint16), patient="pat-90")
    rows += [{"Path": "cine.dcm", "Patient": "pat-90", **dict.fromkeys(example.CLASSES, "0")},
             {"Path": "ward a/lost.png", "Patient": "pat-91", **dict.fromkeys(example.CLASSES, "1")}]
    with open(folder / "export.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["Path", "Patient", *example.CLASSES])
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def xray_recipe(tmp_path_factory, chexnet_run):
    root = tmp_path_factory.mktemp("own-xrays")
    rows = own_xrays(root / "xrays")
    stage("--dataset", "csv", "--csv", str(root / "xrays" / "export.csv"), "--images", str(root / "xrays"),
          "--out", str(root / "data"), "--name", "own", "--image-column", "Path", "--label-columns", CLASSES,
          "--patient-column", "Patient", "--uncertain", "ignore", "--image-size", "40")
    records, runs = root / "data" / "own" / "tfrecords", root / "runs"
    trained = run_ranks(2, ["-m", "chexnet.train", "--data-dir", str(records), "--runs-dir", str(runs), "--run-name",
                            "own", "--init-from", str(chexnet_run["run"]), "--epochs", "1", "--crop", "32",
                            "--per-rank-batch", "4", "--warmup-epochs", "0", "--precision", "float32"], timeout=600)
    run = runs / "own"
    run_ranks(2, ["-m", "chexnet.evaluate", "--run", str(run), "--split", "test", "--checkpoint", "best.npz",
                  "--bootstrap", "20"], timeout=300)
    return {"root": root, "rows": rows, "records": records, "run": run, "log": trained.stderr + trained.stdout,
            "manifest": json.loads((records / "manifest.json").read_text())}


def test_csv_recipe_accounts_for_every_row_and_keeps_each_patient_in_one_split(xray_recipe):
    r = xray_recipe
    rejected = accounted(r["manifest"], [row["Path"] for row in r["rows"]])
    assert set(rejected) == {"cine.dcm", "ward a/lost.png"}
    assert "frames" in rejected["cine.dcm"] and "missing" in rejected["ward a/lost.png"]
    patient_of = {row["Path"]: row["Patient"] for row in r["rows"]}
    seen = {s: read_records(r["records"], s, ["patient"]) for s in ("train", "val", "test")}
    assert sorted(n for s in seen.values() for n in s) == sorted(set(patient_of) - set(rejected))
    for split in seen.values():
        assert all(v["patient"] == patient_of[name] for name, v in split.items())  # the CSV's, not the name's
    patients = {s: {v["patient"] for v in split.values()} for s, split in seen.items()}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    kinds = {name.rsplit(".", 1)[1] for name in seen["test"]} | {name.rsplit(".", 1)[1] for name in seen["train"]}
    assert kinds == {"png", "dcm"}


def test_fine_tuned_run_starts_from_the_given_run_with_a_fresh_head(xray_recipe, chexnet_run):
    from training import checkpoint
    from runtime.metrics import read_events
    r = xray_recipe
    assert "--init-from" in r["log"] and "loaded the weights of" in r["log"]
    source, _, _ = checkpoint.read(str(chexnet_run["run"] / "best.npz"))
    tuned, _, state = checkpoint.read(str(r["run"] / "best.npz"))
    assert state["classes"] == list(example.CLASSES)
    epochs = [e for e in read_events(str(r["run"] / "metrics.jsonl")) if e["event"] == "epoch"]
    updates = sum(math.ceil(e["train_images_seen"] / 8) for e in epochs)
    bound = ADAM_STEP_BOUND * max(e["lr"] for e in epochs) * updates
    kernels = [(a, b) for a, b in zip(source, tuned) if a.ndim >= 2 and a.shape == b.shape]
    assert len(kernels) >= 120  # DenseNet121's convolutions; the 14-class head is not among them
    moved = max(float(np.abs(a - b).max()) for a, b in kernels)
    assert 0 < moved <= bound, (moved, bound)  # a fresh start would sit far from the source's kernels
    assert source[-2].shape[-1] == 14 and tuned[-2].shape[-1] == 3


def test_csv_predict_on_the_original_files_gives_evaluates_probabilities(xray_recipe):
    r = xray_recipe
    evaluated = {row["image"]: row for row in read_csv(r["run"] / "eval-test" / "predictions.csv")}
    assert evaluated and {n.rsplit(".", 1)[1] for n in evaluated} <= {"png", "dcm"}
    out = r["root"] / "predict" / "p.csv"
    run_job([sys.executable, "-m", "chexnet.predict", "--checkpoint", str(r["run"]), "--out", str(out),
             *(str(r["root"] / "xrays" / name) for name in sorted(evaluated))], timeout=300)
    predicted = {os.path.relpath(row["image"], r["root"] / "xrays"): row for row in read_csv(out)}
    assert set(predicted) == set(evaluated)
    for name, row in predicted.items():
        for c in example.CLASSES:
            assert abs(float(row[c]) - float(evaluated[name][f"p_{c}"])) < 1e-5, (name, c)


# --- Polyp frames from folders ---------------------------------------------------------------------------

H, W, STORED = 64, 96, 32  # whole factors of the stored side: a mask upsampled by nearest keeps its counts


def frame_and_mask(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (int(rng.integers(24, 72)), int(rng.integers(20, 44))), (14, 10), 0, 0, 360, 1, -1)
    img[mask > 0] += np.uint8(100)
    return img, mask


def own_frames(folder, n=24):
    images, masks = folder / "frames", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i in range(n):
        img, mask = frame_and_mask(i)
        kind = ("png", "jpg", "png16")[i % 3]
        stem = f"case {i:02d}"
        if kind == "png16":
            cv2.imwrite(str(images / f"{stem}.png"), img.astype(np.uint16) * 256)
        else:
            cv2.imwrite(str(images / f"{stem}.{kind}"), img)
        cv2.imwrite(str(masks / f"{stem}_mask.png"), mask * (255 if i % 2 else 1))
    cv2.imwrite(str(images / "lonely.png"), frame_and_mask(99)[0])  # no mask
    return images, masks


@pytest.fixture(scope="module")
def polyp_recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-frames")
    images, masks = own_frames(root)
    stage("--dataset", "masks", "--images", str(images), "--masks", str(masks), "--mask-suffix", "_mask",
          "--out", str(root / "data"), "--name", "polyps", "--image-size", str(STORED))
    records, runs = root / "data" / "polyps" / "tfrecords", root / "runs"
    run_ranks(2, ["-m", "segmentation.train", "--data-dir", str(records), "--runs-dir", str(runs), "--run-name",
                  "seg", "--model", "unet", "--epochs", "1", "--per-rank-batch", "2", "--warmup-epochs", "0",
                  "--precision", "float32"], timeout=600)
    run = runs / "seg"
    run_ranks(2, ["-m", "segmentation.evaluate", "--run", str(run), "--split", "test", "--checkpoint", "best.npz",
                  "--bootstrap", "20"], timeout=300)
    return {"root": root, "images": images, "records": records, "run": run,
            "manifest": json.loads((records / "manifest.json").read_text())}


def test_folder_recipe_accounts_for_every_frame(polyp_recipe):
    r = polyp_recipe
    frames = sorted(os.listdir(r["images"]))
    rejected = accounted(r["manifest"], frames)
    assert list(rejected) == ["lonely"] and "without a mask" in rejected["lonely"]
    seen = {s: read_records(r["records"], s, []) for s in ("train", "val", "test")}
    assert sum(len(s) for s in seen.values()) == len(frames) - 1


def test_folder_predict_on_the_original_frames_gives_evaluates_masks(polyp_recipe):
    r = polyp_recipe
    evaluated = {row["image"]: row for row in read_csv(r["run"] / "eval-test" / "per_image.csv")}
    files = {os.path.splitext(f)[0]: f for f in os.listdir(r["images"])}
    assert evaluated and set(evaluated) <= set(files)
    out = r["root"] / "predicted"
    run_job([sys.executable, "-m", "segmentation.predict", "--checkpoint", str(r["run"]), "--out-dir", str(out),
             *(str(r["images"] / files[name]) for name in sorted(evaluated))], timeout=300)
    scale = (H // STORED) * (W // STORED)
    for row in read_csv(out / "predictions.csv"):
        name = os.path.splitext(os.path.basename(row["image"]))[0]
        mask = cv2.imread(row["mask"], cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (H, W)
        positives = int(evaluated[name]["tp"]) + int(evaluated[name]["fp"])
        assert int((mask > 0).sum()) == positives * scale, name
