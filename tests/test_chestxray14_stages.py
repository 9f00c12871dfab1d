"""ChestX-ray14 stages end to end on a small synthetic set: download, extract, write."""
import csv
import glob
import hashlib
import io
import json
import os
import re
import shutil
import tarfile

import cv2
import numpy as np
import pytest

from dataprep.chestxray14 import facts
from helpers import run_job, run_ranks

N_IMAGES, SIZE = 240, 64


def stage(*args, expect_rc=0, timeout=300):
    return run_job(["bash", *args], timeout=timeout, expect_rc=expect_rc)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def read_records(tfrecord_dir):
    """{split: [(name, patient, labels tuple, image sha)]} read back from the shards."""
    import tensorflow as tf
    from dataprep import records
    out = {}
    for path in sorted(glob.glob(os.path.join(tfrecord_dir, "*.tfrecord"))):
        split = os.path.basename(path).split("-")[0]
        for raw in tf.data.TFRecordDataset(path):
            img, labels, name, patient = records.parse(raw, len(facts.CLASSES))
            out.setdefault(split, []).append((name.numpy().decode(), patient.numpy().decode(),
                                              tuple(int(x) for x in labels.numpy()),
                                              hashlib.sha256(img.numpy().tobytes()).hexdigest()))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """download --synthetic -> extract -> damage a few images -> write (6 shards a split max)."""
    out = tmp_path_factory.mktemp("data")
    stage("download_dataset.sh", "--out", str(out), "--synthetic", str(N_IMAGES), "--image-size", str(SIZE))
    stage("extract_images.sh", "--out", str(out))
    images = out / "chestxray14" / "images_all" / "images"
    names = sorted(os.listdir(images))
    damaged = {"corrupt": names[3], "empty": names[10], "missing": "99999999_000.png",
               "rgba": names[30], "oblong": names[40]}
    (images / damaged["corrupt"]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    (images / damaged["empty"]).write_bytes(b"")
    # Named in the CSV and a split list, but in no archive.
    with open(out / "chestxray14" / facts.CSV_NAME, "a") as fh:
        fh.write(f"{damaged['missing']},Hernia,0,99999999,40,M,PA,{SIZE},{SIZE},0.143,0.143\n")
    with open(out / "chestxray14" / facts.TRAIN_VAL_LIST, "a") as fh:
        fh.write(damaged["missing"] + "\n")
    gray = cv2.imread(str(images / damaged["rgba"]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(images / damaged["rgba"]), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    cv2.imwrite(str(images / damaged["oblong"]), np.zeros((SIZE, SIZE + 10), np.uint8))
    proc = stage("write_tfrecords.sh", "--out", str(out), "--images-per-shard", "40")
    tf_dir = out / "chestxray14" / "tfrecords"
    manifest = json.loads((tf_dir / "manifest.json").read_text())
    return {"root": out, "dir": out / "chestxray14", "tf_dir": tf_dir, "manifest": manifest,
            "damaged": damaged, "write_log": proc.stdout + proc.stderr}


# ------------------------------------------------------------------ download (synthetic)
def test_synthetic_layout_matches_the_real_one(data):
    d = data["dir"]
    assert sorted(p.name for p in d.glob("*.tar.gz")) == [a.name for a in facts.ARCHIVES]
    members = []
    for a in facts.ARCHIVES:
        with tarfile.open(d / a.name) as tar:
            members += tar.getnames()
    assert len(members) == N_IMAGES
    assert all(re.fullmatch(r"images/\d{8}_\d{3}\.png", m) for m in members)
    lines = (d / facts.CSV_NAME).read_text().splitlines()
    assert lines[0] == facts.CSV_HEADER
    rows = list(csv.reader(lines[1:]))
    rows = rows[:N_IMAGES]  # the fixture appended one row for a missing image
    assert all(len(r) == 11 for r in rows)
    labels = [r[1] for r in rows]
    assert sum(l == "No Finding" for l in labels) > N_IMAGES * 0.4  # the majority label
    assert any("|" in l for l in labels)
    assert all(set(l.split("|")) <= set(facts.CLASSES) | {"No Finding"} for l in labels)
    per_patient = {}
    for r in rows:
        assert r[0].startswith(f"{int(r[3]):08d}_")
        per_patient.setdefault(r[3], []).append(r[0])
    assert max(len(v) for v in per_patient.values()) >= 3  # follow-up images
    listed = (d / facts.TRAIN_VAL_LIST).read_text().split() + (d / facts.TEST_LIST).read_text().split()
    assert sorted(listed) == sorted([r[0] for r in rows] + [data["damaged"]["missing"]])


def test_official_split_lists_are_split_by_patient(data):
    d = data["dir"]
    tv = {n[:8] for n in (d / facts.TRAIN_VAL_LIST).read_text().split()}
    test = {n[:8] for n in (d / facts.TEST_LIST).read_text().split()}
    assert tv and test and not tv & test


def test_synthetic_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        stage("download_dataset.sh", "--out", str(tmp_path / name), "--synthetic", "24",
              "--image-size", "32", "--seed", seed)
    digest = {n: [sha(tmp_path / n / "chestxray14" / a.name) for a in facts.ARCHIVES] +
              [sha(tmp_path / n / "chestxray14" / facts.CSV_NAME)] for n in "abc"}
    assert digest["a"] == digest["b"]
    assert digest["a"] != digest["c"]


def test_download_rejects_bad_arguments():
    proc = stage("download_dataset.sh", "--synthetic", "lots", expect_rc=2)
    assert "--synthetic must be a number of images, got 'lots'" in proc.stderr


# ------------------------------------------------------------------ extract
def test_extract_rerun_does_no_work(data):
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(data["dir"] / "images_all/images/*.png"))}
    proc = stage("extract_images.sh", "--out", str(data["root"]))
    assert proc.stdout.count("already extracted, skipped") == 12
    after = {p: os.stat(p).st_mtime_ns for p in before}
    assert before == after


def _copy_archives(src, dst):
    (dst / "chestxray14").mkdir(parents=True)
    for a in facts.ARCHIVES:
        shutil.copy(src / a.name, dst / "chestxray14" / a.name)
    return dst / "chestxray14"


def test_truncated_archive_is_named_and_the_rest_extracted(data, tmp_path):
    d = _copy_archives(data["dir"], tmp_path)
    victim = d / "images_05.tar.gz"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    proc = stage("extract_images.sh", "--out", str(tmp_path), expect_rc=1)
    assert "images_05.tar.gz" in proc.stderr and "truncated or corrupt" in proc.stdout + proc.stderr
    done = sorted(p.name for p in (d / "images_all" / ".extracted").glob("*.json"))
    assert done == sorted(f"{a.name}.json" for a in facts.ARCHIVES if a.name != "images_05.tar.gz")
    assert not list((d / "images_all").rglob("*.part"))


def test_path_traversal_member_is_refused(tmp_path):
    d = tmp_path / "chestxray14"
    d.mkdir()
    with tarfile.open(d / "images_01.tar.gz", "w:gz") as tar:
        for name in ("images/00000001_000.png", "../../escaped.png"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    proc = stage("extract_images.sh", "--out", str(tmp_path), expect_rc=1)
    assert "refused member" in proc.stdout + proc.stderr and "'..'" in proc.stdout + proc.stderr
    assert not list(tmp_path.parent.rglob("escaped.png"))


# ------------------------------------------------------------------ write
def test_no_patient_in_two_splits_in_the_written_records(data):
    recs = read_records(data["tf_dir"])
    patients = {split: {r[1] for r in rows} for split, rows in recs.items()}
    assert set(patients) == {"train", "val", "test"}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]


def test_every_image_written_once_or_rejected_with_reason(data):
    m, damaged = data["manifest"], data["damaged"]
    recs = read_records(data["tf_dir"])
    written = [r[0] for rows in recs.values() for r in rows]
    assert len(written) == len(set(written))
    rejected = {r["name"]: r["reason"] for r in m["rejected"]}
    csv_names = [row[0] for row in csv.reader((data["dir"] / facts.CSV_NAME).read_text().splitlines()[1:])]
    assert set(written) | set(rejected) == set(csv_names)
    assert not set(written) & set(rejected)
    assert m["counts"] == {"named_images": N_IMAGES + 1, "written": N_IMAGES - 3, "rejected": 4,
                           "accounted": N_IMAGES + 1}
    assert "corrupt" in rejected[damaged["corrupt"]]
    assert "empty file (0 bytes)" == rejected[damaged["empty"]]
    assert "missing" in rejected[damaged["missing"]]
    assert "unexpected size" in rejected[damaged["oblong"]]
    assert damaged["rgba"] in written  # RGBA copies are converted, not lost


def test_records_hold_the_csv_labels_and_resized_images(data):
    recs = read_records(data["tf_dir"])
    rows = csv.reader((data["dir"] / facts.CSV_NAME).read_text().splitlines()[1:])
    truth = {r[0]: r[1] for r in rows}
    for split_rows in recs.values():
        for name, patient, labels, _ in split_rows:
            found = [c for c, v in zip(facts.CLASSES, labels) if v]
            assert ("|".join(found) or "No Finding") == truth[name]
            assert patient == name[:8]


def test_manifest_shards_match_files(data):
    m = data["manifest"]
    assert m["class_order"] == list(facts.CLASSES)
    total = 0
    for split, info in m["splits"].items():
        assert info["images"] == sum(s["records"] for s in info["shards"])
        n = len(info["shards"])
        for i, s in enumerate(info["shards"]):
            assert s["file"] == f"{split}-{i:05d}-of-{n:05d}.tfrecord"
            assert sha(data["tf_dir"] / s["file"]) == s["sha256"]
        total += info["images"]
        assert set(info["prevalence"]) == set(facts.CLASSES)
    assert total == m["counts"]["written"]
    train = m["splits"]["train"]
    assert train["positives"]["Infiltration"] == round(train["prevalence"]["Infiltration"] * train["images"])


def test_remainder_is_kept_in_balanced_shards(data):
    # 40 images a shard: the train split needs ceil(n / 40) shards, none dropped.
    for split, info in data["manifest"]["splits"].items():
        planned = [len(json.loads((data["tf_dir"] / ".shards" / f"{s['file']}.json").read_text())["planned"])
                   for s in info["shards"]]
        assert max(planned) - min(planned) <= 1
        assert len(planned) == -(-sum(planned) // 40)


def test_rerun_skips_complete_shards(data):
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(data["tf_dir"] / "*.tfrecord"))}
    proc = stage("write_tfrecords.sh", "--out", str(data["root"]), "--images-per-shard", "40")
    assert "already complete, skipped" in proc.stdout
    assert before == {p: os.stat(p).st_mtime_ns for p in before}


def test_two_ranks_write_the_same_records_as_one(data, tmp_path):
    run_ranks(2, ["-m", "dataprep.chestxray14.tfrecords", "--data-dir", str(data["dir"]),
                  "--out-dir", str(tmp_path), "--images-per-shard", "40", "--processes", "1"], timeout=300)
    two = json.loads((tmp_path / "manifest.json").read_text())
    writers = {json.loads(p.read_text())["rank"] for p in (tmp_path / ".shards").glob("*.json")}
    assert writers == {0, 1}  # both ranks wrote shards
    one = data["manifest"]
    assert two["counts"] == one["counts"]
    for split in ("train", "val", "test"):
        assert [s["sha256"] for s in two["splits"][split]["shards"]] == \
               [s["sha256"] for s in one["splits"][split]["shards"]]
    assert read_records(tmp_path) == read_records(data["tf_dir"])


def test_missing_csv_is_a_one_line_error(tmp_path):
    (tmp_path / "chestxray14").mkdir()
    proc = stage("write_tfrecords.sh", "--out", str(tmp_path), expect_rc=2)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Data_Entry_2017.csv not found" in proc.stderr
