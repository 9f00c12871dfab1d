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
from dataprep.chestxray14.metadata import split_patients
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
    cv2.imwrite(str(images / damaged["oblong"]), np.zeros((SIZE, SIZE + 10), np.uint8))  # padded, written
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
    proc = stage("extract_images.sh", "--out", str(tmp_path), "--allow-partial", expect_rc=1)  # one archive of 12
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
    assert m["counts"] == {"named_images": N_IMAGES + 1, "written": N_IMAGES - 2, "rejected": 3,
                           "accounted": N_IMAGES + 1}
    assert "corrupt" in rejected[damaged["corrupt"]]
    assert "empty file (0 bytes)" == rejected[damaged["empty"]]
    assert "missing" in rejected[damaged["missing"]]
    assert damaged["oblong"] in written  # padded to square (dataprep.images), not rejected
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


def csv_labels(folder):
    """{name: 14-hot tuple} parsed here from Data_Entry_2017.csv, not by the stage's code."""
    rows = csv.reader((folder / facts.CSV_NAME).read_text().splitlines()[1:])
    return {r[0]: tuple(int(c in r[1].split("|")) for c in facts.CLASSES) for r in rows}


def count(labels_by_split):
    """{split: (images, {class: positives}, no_finding)} from {split: [14-hot tuple]}."""
    out = {}
    for split, rows in labels_by_split.items():
        arr = np.array(rows, dtype=np.int64).reshape(-1, len(facts.CLASSES))
        out[split] = (len(rows), dict(zip(facts.CLASSES, arr.sum(0).tolist())), int((arr.sum(1) == 0).sum()))
    return out


def assert_manifest_counts(manifest, expected):
    for split, (images, positives, no_finding) in expected.items():
        info = manifest["splits"][split]
        assert info["images"] == images, split
        assert info["positives"] == positives, split
        assert info["no_finding"] == no_finding, split
        assert info["prevalence"] == pytest.approx({c: p / images for c, p in positives.items()}), split


def test_manifest_counts_match_the_records_and_the_csv(data):
    m, d = data["manifest"], data["dir"]
    recs = read_records(data["tf_dir"])
    from_records = count({split: [r[2] for r in rows] for split, rows in recs.items()})
    # The same counts from the CSV and the split lists, without the records: the
    # lists give test and train_val, the seeded patient draw splits val off.
    labels = csv_labels(d)
    bad = {data["damaged"][k] for k in ("corrupt", "empty", "missing")}
    tv = (d / facts.TRAIN_VAL_LIST).read_text().split()
    val_patients = split_patients([n[:8] for n in tv], val_fraction=0.1, seed=0)  # drawn before writing
    tv = [n for n in tv if n not in bad]
    test = [n for n in (d / facts.TEST_LIST).read_text().split() if n not in bad]
    names = {"train": [n for n in tv if n[:8] not in val_patients],
             "val": [n for n in tv if n[:8] in val_patients], "test": test}
    from_csv = count({split: [labels[n] for n in ns] for split, ns in names.items()})
    assert {split: sorted(r[0] for r in rows) for split, rows in recs.items()} == \
           {split: sorted(ns) for split, ns in names.items()}
    assert from_records == from_csv
    images, positives, no_finding = from_csv["train"]
    assert 0 < no_finding < images and sum(p > 0 for p in positives.values()) >= 10  # counts worth comparing
    assert_manifest_counts(m, from_records)
    # The writing speed covers every image of every shard, written or rejected.
    rejected_by_shards = [r for r in m["rejected"] if "split" in r]  # the CSV's own rejections never reach one
    assert rejected_by_shards and m["writing"]["images"] == m["counts"]["written"] + len(rejected_by_shards)
    assert m["writing"]["shards"] == sum(len(info["shards"]) for info in m["splits"].values())
    assert m["writing"]["images_per_s"] == pytest.approx(m["writing"]["images"] / m["writing"]["seconds"])


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
    rerun = json.loads((data["tf_dir"] / "manifest.json").read_text())
    assert rerun["writing"] is None  # nothing written: no speed to report


def _copy_extracted(data, dst):
    """The fixture's extracted set and shards (no archives), to change without touching it."""
    shutil.copytree(data["dir"], dst / "chestxray14", ignore=shutil.ignore_patterns("*.tar.gz"))
    return dst / "chestxray14"


def _set_labels(folder, name, field):
    path = folder / facts.CSV_NAME
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(name + ",")]
    assert len(hits) == 1
    first, _, rest = lines[hits[0]].split(",", 2)
    lines[hits[0]] = f"{first},{field},{rest}"
    path.write_text("".join(lines))


def test_rerun_rewrites_exactly_the_shards_whose_labels_changed(data, tmp_path):
    d = _copy_extracted(data, tmp_path)
    tf_dir = d / "tfrecords"
    sides = {p.name[:-len(".json")]: json.loads(p.read_text()) for p in (tf_dir / ".shards").glob("*.json")}
    victim = sides[next(f for f in sorted(sides) if f.startswith("test-"))]["written"][0]
    old = csv_labels(d)[victim]
    new_field = "Hernia|Mass" if not old[facts.CLASSES.index("Hernia")] else "No Finding"
    _set_labels(d, victim, new_field)
    holding = {f for f, side in sides.items() if victim in side["planned"]}
    assert len(holding) == 1

    def state():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, sha(p)) for p in tf_dir.glob("*.tfrecord")}
    before = state()
    proc = stage("write_tfrecords.sh", "--out", str(tmp_path), "--images-per-shard", "40")
    after = state()
    assert {f for f in before if before[f] != after[f]} == holding
    assert set(after) == set(before)
    log = proc.stdout + proc.stderr
    (shard,) = holding
    assert f"rewriting {shard}: labels or patient ids of its images changed" in log
    assert log.count("rewriting ") == 1
    assert "rewriting " not in data["write_log"]  # a first write warns about nothing
    recs = read_records(tf_dir)
    labels = csv_labels(d)
    assert labels[victim] != old
    assert [r[2] for r in recs["test"] if r[0] == victim] == [labels[victim]]
    assert all(r[2] == labels[r[0]] for rows in recs.values() for r in rows)
    manifest = json.loads((tf_dir / "manifest.json").read_text())
    assert_manifest_counts(manifest, count({split: [r[2] for r in rows] for split, rows in recs.items()}))
    hernia = facts.CLASSES.index("Hernia")
    assert manifest["splits"]["test"]["positives"]["Hernia"] == \
        data["manifest"]["splits"]["test"]["positives"]["Hernia"] + labels[victim][hernia] - old[hernia]


def test_patient_in_both_split_lists_stops_with_a_one_line_error(data, tmp_path):
    d = tmp_path / "chestxray14"
    d.mkdir()
    for name in (facts.CSV_NAME, facts.TRAIN_VAL_LIST, facts.TEST_LIST):
        shutil.copy(data["dir"] / name, d / name)
    # A user's edited lists: one follow-up image of a test patient moved to train_val.
    test = (d / facts.TEST_LIST).read_text().split()
    patient = next(p for p in sorted({n[:8] for n in test}) if sum(n[:8] == p for n in test) > 1)
    moved = next(n for n in test if n[:8] == patient)
    (d / facts.TEST_LIST).write_text("".join(n + "\n" for n in test if n != moved))
    with open(d / facts.TRAIN_VAL_LIST, "a") as fh:
        fh.write(moved + "\n")
    proc = stage("write_tfrecords.sh", "--out", str(tmp_path), expect_rc=2)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: patient {patient} has images in two splits: ")
    assert f"{moved} in " in last and f"({facts.TRAIN_VAL_LIST})" in last and f"({facts.TEST_LIST})" in last
    assert f"move all of a patient's images into either {facts.TRAIN_VAL_LIST} or {facts.TEST_LIST}" in last
    assert not (d / "tfrecords").exists()


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


def test_csv_with_a_missing_column_is_refused_and_bad_rows_are_rejected_with_reasons(tmp_path):
    from dataprep.chestxray14.metadata import read_entries
    from runtime.errors import UserError
    rows = ["00000001_000.png,Effusion|Mass,0,1,58,M,PA,2682,2749,0.143,0.143",
            "00000002_000.png,Dragon,0,2,81,M,PA,2500,2048,0.171,0.171",
            "00000001_000.png,No Finding,0,1,58,M,PA,2682,2749,0.143,0.143",
            "00000003_000.png,Mass,0,3,28,F,PA,2500"]
    (tmp_path / facts.CSV_NAME).write_text(facts.CSV_HEADER + ",\n" + "\n".join(rows) + "\n")
    entries, rejected = read_entries(str(tmp_path))
    assert list(entries) == ["00000001_000.png"] and entries["00000001_000.png"].labels[
        facts.CLASSES.index("Effusion")] == 1
    assert [r["reason"] for r in rejected] == ["CSV line 3: unknown label(s) ['Dragon']",
                                               "CSV line 4: duplicate row, first kept",
                                               "CSV line 5 has 8 fields, expected 11"]
    without_view = facts.CSV_HEADER.replace("View Position,", "")
    (tmp_path / facts.CSV_NAME).write_text(without_view + "\n" + rows[0] + "\n")
    with pytest.raises(UserError, match="a column is missing, renamed or added"):
        read_entries(str(tmp_path))


def _metadata(folder, rows, train_val, test):
    """Data_Entry_2017.csv of (name, patient column) rows, and the two split lists."""
    lines = [f"{name},Mass,0,{patient},40,M,PA,64,64,0.143,0.143" for name, patient in rows]
    (folder / facts.CSV_NAME).write_text(facts.CSV_HEADER + "\n" + "\n".join(lines) + "\n")
    (folder / facts.TRAIN_VAL_LIST).write_text("".join(f"{n}\n" for n in train_val))
    (folder / facts.TEST_LIST).write_text("".join(f"{n}\n" for n in test))


def test_names_without_a_patient_prefix_split_by_the_csv_patient_column(tmp_path):
    from dataprep.chestxray14 import metadata
    from runtime.errors import UserError
    rows = [(f"p{p}_xray{k}.png", f"p{p}") for p in range(8) for k in range(4)]
    names = [n for n, _ in rows]
    _metadata(tmp_path, rows, train_val=names[4:], test=names[:4])
    entries, rejected = metadata.read_entries(str(tmp_path))
    splits = metadata.assign_splits(entries, rejected, str(tmp_path), val_fraction=0.5, seed=0)
    metadata.check_no_patient_leak(splits)
    where = {}
    for split, items in splits.items():
        for e in items:
            where.setdefault(e.patient, set()).add(split)
    assert rejected == [] and sorted(where) == [f"p{p}" for p in range(8)]
    assert all(len(s) == 1 for s in where.values()) and {"train", "val", "test"} == set().union(*where.values())
    # One follow-up of test patient p0 listed in train_val: the leak check sees it through the column.
    _metadata(tmp_path, rows, train_val=names[3:], test=names[:3])
    entries, rejected = metadata.read_entries(str(tmp_path))
    with pytest.raises(UserError, match="^patient p0 has images in two splits: "):
        metadata.check_no_patient_leak(metadata.assign_splits(entries, rejected, str(tmp_path), 0.5, 0))


def test_a_patient_column_that_disagrees_with_the_name_is_a_one_line_error(tmp_path):
    from dataprep.chestxray14.metadata import read_entries
    from runtime.errors import UserError
    rows = [("00000013_000.png", "13"), ("00000013_001.png", "00000013"), ("x1.png", ""), ("00000014_000.png", "15")]
    _metadata(tmp_path, rows[:3], train_val=[], test=[])
    entries, rejected = read_entries(str(tmp_path))
    assert [e.patient for e in entries.values()] == ["00000013", "00000013"]  # an int column, as NIH writes it
    assert rejected == [{"name": "x1.png", "reason": "CSV line 4: empty Patient ID"}]
    _metadata(tmp_path, rows, train_val=[], test=[])
    with pytest.raises(UserError) as err:
        read_entries(str(tmp_path))
    assert str(err.value) == (f"{tmp_path / facts.CSV_NAME} line 5: 00000014_000.png is named for patient 00000014 "
                              f"but its Patient ID column says '15': correct the column or the name, then rerun")


def test_a_data_set_whose_every_image_is_rejected_fails_the_stage(tmp_path):
    """All images gone after extraction: the stage says so and exits non-zero, with the manifest kept."""
    stage = ["--dataset", "chestxray14", "--out", str(tmp_path)]
    run_job(["bash", "download_dataset.sh", *stage, "--synthetic", "30", "--image-size", "32"], timeout=300)
    run_job(["bash", "extract_images.sh", *stage], timeout=300)
    for png in glob.glob(str(tmp_path / "chestxray14" / "images_all" / "images" / "*.png")):
        os.remove(png)
    proc = run_job(["bash", "write_tfrecords.sh", *stage, "--image-size", "32"], timeout=300, expect_rc=2)
    assert "error: no image was written: all 30 were rejected (the first because: missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "chestxray14" / "tfrecords" / "manifest.json").read_text())["counts"]["written"] == 0


def _tar_with(path, member):
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("images/00000001_000.png")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        tar.addfile(member, io.BytesIO(b"abc") if member.isfile() else None)


def _zip_with(path, name, symlink=False):
    import stat
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("Kvasir-SEG/images/a.jpg", b"abc")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, b"/etc/passwd" if symlink else b"abc")


def _member(name, kind):
    info = tarfile.TarInfo(name)
    if kind == "file":
        info.size = 3
    else:
        info.type, info.linkname = (tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE), "/etc/passwd"
    return info


@pytest.mark.parametrize("archive,why", [
    ("tar-absolute", "absolute path '/tmp/evil.png'"),
    ("tar-symlink", "not a regular file 'images/link.png' (link or device)"),
    ("tar-hardlink", "not a regular file 'images/hard.png' (link or device)"),
    ("zip-absolute", "absolute path '/tmp/evil.jpg'"),
    ("zip-dotdot", "path with '..' 'Kvasir-SEG/../../evil.jpg'"),
    ("zip-symlink", "not a regular file 'Kvasir-SEG/images/link.jpg' (link or device)"),
])
def test_unsafe_archive_members_are_refused_by_name(tmp_path, archive, why):
    """Absolute paths, '..' and links, in tar.gz and zip: the archive fails with the member named,
    and nothing lands outside the destination."""
    from dataprep.extract import ArchiveError, extract_one
    kind, case = archive.split("-")
    path = tmp_path / ("a.tar.gz" if kind == "tar" else "a.zip")
    if kind == "tar":
        name = {"absolute": "/tmp/evil.png", "symlink": "images/link.png", "hardlink": "images/hard.png"}[case]
        _tar_with(path, _member(name, "file" if case == "absolute" else case))
    else:
        name = {"absolute": "/tmp/evil.jpg", "dotdot": "Kvasir-SEG/../../evil.jpg",
                "symlink": "Kvasir-SEG/images/link.jpg"}[case]
        _zip_with(path, name, symlink=case == "symlink")
    with pytest.raises(ArchiveError, match=re.escape(f"refused member: {why}")):
        extract_one(str(path), str(tmp_path / "dest"))
    assert not os.path.exists("/tmp/evil.png") and not os.path.exists("/tmp/evil.jpg")
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("link*")) and not list(tmp_path.rglob("hard*"))


def test_one_image_read_converts_rgba_and_pads_non_square_and_rejects_tiny_with_reasons(tmp_path):
    from dataprep.chestxray14.tfrecords import load_gray
    from dataprep.shards import Rejected
    gray = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    assert np.array_equal(load_gray(str(tmp_path / "rgba.png"), 64), gray)
    cv2.imwrite(str(tmp_path / "wide.png"), gray[:, 8:56])
    assert np.array_equal(load_gray(str(tmp_path / "wide.png"), 64), np.pad(gray[:, 8:56], ((0, 0), (8, 8))))
    cv2.imwrite(str(tmp_path / "tiny.png"), gray[:20, :40])
    with pytest.raises(Rejected, match=re.escape("unexpected size 40x20: smaller than 32x32")):
        load_gray(str(tmp_path / "tiny.png"), 64)
