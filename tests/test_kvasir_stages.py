"""Kvasir-SEG stages end to end on a small synthetic set: download --synthetic, extract, write."""
import glob
import hashlib
import json
import os
import re
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from dataprep.kvasir_seg import facts
from helpers import run_job, run_ranks

N_PAIRS, LARGEST, STORED = 60, 120, 48


def stage(*args, expect_rc=0, timeout=300):
    return run_job(["bash", *args], timeout=timeout, expect_rc=expect_rc)


def synthetic(out, seed=0, n=N_PAIRS):
    stage("download_dataset.sh", "--dataset", "kvasir-seg", "--out", str(out), "--synthetic", str(n),
          "--image-size", str(LARGEST), "--seed", str(seed))
    return out / "kvasir-seg"


def read_records(tf_dir):
    """{split: {name: (image RGB uint8, mask uint8)}} read back from the shards."""
    import tensorflow as tf
    from dataprep import records
    out = {}
    for path in sorted(glob.glob(os.path.join(tf_dir, "*.tfrecord"))):
        split = os.path.basename(path).split("-")[0]
        for raw in tf.data.TFRecordDataset(path):
            image, mask, name = records.parse_segmentation(raw)
            out.setdefault(split, {})[name.numpy().decode()] = (image.numpy(), mask.numpy())
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """synthetic -> extract -> damage a few pairs and the lists -> write."""
    out = tmp_path_factory.mktemp("kv")
    folder = synthetic(out)
    stage("extract_images.sh", "--dataset", "kvasir-seg", "--out", str(out))
    images, masks = folder / facts.TOP / facts.IMAGES, folder / facts.TOP / facts.MASKS
    train = (folder / "train.txt").read_text().split()
    damaged = {"no_mask": train[0], "corrupt": train[1], "size": train[2], "unlisted": train[3],
               "orphan_mask": "cjzzzzzzzzzzzzzzzzzzzzzzz", "listed_missing": "cjyyyyyyyyyyyyyyyyyyyyyyy"}
    (masks / f"{damaged['no_mask']}.jpg").unlink()
    (images / f"{damaged['corrupt']}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 40)
    small = cv2.imread(str(masks / f"{damaged['size']}.jpg"))
    cv2.imwrite(str(masks / f"{damaged['size']}.jpg"), cv2.resize(small, (20, 20)))
    shutil.copy(masks / f"{train[5]}.jpg", masks / f"{damaged['orphan_mask']}.jpg")
    kept = [n for n in train if n != damaged["unlisted"]] + [damaged["listed_missing"]]
    (folder / "train.txt").write_text("".join(n + "\n" for n in kept))
    proc = stage("write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(out), "--image-size", str(STORED),
                 "--images-per-shard", "15")
    tf_dir = folder / "tfrecords"
    return {"root": out, "dir": folder, "tf_dir": tf_dir, "damaged": damaged, "log": proc.stdout + proc.stderr,
            "manifest": json.loads((tf_dir / "manifest.json").read_text())}


def test_synthetic_layout_matches_the_real_one(tmp_path):
    folder = synthetic(tmp_path)
    with zipfile.ZipFile(folder / facts.ZIP_NAME) as z:
        names = z.namelist()
        boxes = json.loads(z.read(f"{facts.TOP}/{facts.BBOXES}"))
        images = sorted(n for n in names if n.startswith(f"{facts.TOP}/{facts.IMAGES}/"))
        masks = sorted(n for n in names if n.startswith(f"{facts.TOP}/{facts.MASKS}/"))
        assert len(images) == len(masks) == N_PAIRS and len(names) == 2 * N_PAIRS + 1
        ids = [os.path.basename(n)[:-len(".jpg")] for n in images]
        assert [os.path.basename(n) for n in masks] == [os.path.basename(n) for n in images]
        assert all(len(i) == 25 and i.isalnum() and i.islower() for i in ids) and set(boxes) == set(ids)
        for i in ids[:10]:
            img = cv2.imdecode(np.frombuffer(z.read(f"{facts.TOP}/{facts.IMAGES}/{i}.jpg"), np.uint8), cv2.IMREAD_COLOR)
            mask = cv2.imdecode(np.frombuffer(z.read(f"{facts.TOP}/{facts.MASKS}/{i}.jpg"), np.uint8), 0)
            assert img.shape[:2] == mask.shape == (boxes[i]["height"], boxes[i]["width"])
            assert 1.15 <= img.shape[1] / img.shape[0] <= 1.85 and img.shape[0] <= LARGEST
            assert 0 < ((mask > 10) & (mask < 245)).sum()  # JPEG masks: grey noise at the edges, as real ones
            binary = (mask > facts.MASK_THRESHOLD).astype(np.uint8)
            for box in boxes[i]["bbox"]:  # the boxes frame the polyps of the mask
                assert box["label"] == "polyp"
                inside = binary[box["ymin"]:box["ymax"], box["xmin"]:box["xmax"]]
                assert inside.mean() > 0.25
            ys, xs = np.nonzero(binary)
            assert ys.min() >= min(b["ymin"] for b in boxes[i]["bbox"]) - 2
            assert xs.max() <= max(b["xmax"] for b in boxes[i]["bbox"]) + 2
    train, val = (folder / "train.txt").read_text().split(), (folder / "val.txt").read_text().split()
    assert sorted(train + val) == sorted(ids) and not set(train) & set(val)
    assert len(val) == round(0.12 * N_PAIRS)
    assert json.loads((folder / "SYNTHETIC.json").read_text())["synthetic"] is True


def test_synthetic_is_deterministic_per_seed(tmp_path):
    a, b, c = synthetic(tmp_path / "a"), synthetic(tmp_path / "b"), synthetic(tmp_path / "c", seed=1)
    digest = [hashlib.sha256((f / facts.ZIP_NAME).read_bytes()).hexdigest() for f in (a, b, c)]
    assert digest[0] == digest[1] != digest[2]
    assert (a / "val.txt").read_text() == (b / "val.txt").read_text()


def test_every_pair_written_once_or_rejected_with_reason(data):
    m, d = data["manifest"], data["damaged"]
    reasons = {r["name"]: r["reason"] for r in m["rejected"]}
    assert "image without a mask" in reasons[d["no_mask"]]
    assert "mask without an image" in reasons[d["orphan_mask"]]
    assert "unreadable or corrupt" in reasons[d["corrupt"]]
    assert "but its mask 20x20" in reasons[d["size"]]
    assert "on disk but in neither split list" in reasons[d["unlisted"]]
    assert "in the train list but on disk neither as image nor as mask" in reasons[d["listed_missing"]]
    written = {name for split in read_records(data["tf_dir"]).values() for name in split}
    assert not written & set(reasons)
    assert len(written) == m["counts"]["written"] == sum(s["images"] for s in m["splits"].values())
    assert m["counts"]["accounted"] == m["counts"]["named_images"] == N_PAIRS + 2  # + orphan mask, listed missing


def test_records_hold_area_resized_images_and_binary_nearest_masks(data):
    folder = data["dir"] / facts.TOP
    recs = read_records(data["tf_dir"])
    assert set(recs) == {"train", "val"} and data["manifest"]["split"]["kind"] == "official"
    for name, (image, mask) in list(recs["val"].items())[:5]:
        src = cv2.imread(str(folder / facts.IMAGES / f"{name}.jpg"))
        src_mask = cv2.imread(str(folder / facts.MASKS / f"{name}.jpg"), 0)
        assert image.shape == (STORED, STORED, 3) and mask.shape == (STORED, STORED, 1)
        expected = cv2.resize(src, (STORED, STORED), interpolation=cv2.INTER_AREA)
        assert np.array_equal(image, cv2.cvtColor(expected, cv2.COLOR_BGR2RGB))  # stored as RGB
        binary = (src_mask > facts.MASK_THRESHOLD).astype(np.uint8)
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(mask[..., 0], cv2.resize(binary, (STORED, STORED), interpolation=cv2.INTER_NEAREST))
    fractions = [m.mean() for _, m in recs["train"].values()]
    assert data["manifest"]["splits"]["train"]["foreground_fraction"] == pytest.approx(np.mean(fractions))


def test_rerun_skips_complete_shards(data):
    proc = stage("write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(data["root"]), "--image-size",
                 str(STORED), "--images-per-shard", "15")
    assert "already complete, skipped" in proc.stdout + proc.stderr and "rewriting" not in proc.stdout + proc.stderr


def test_random_split_is_a_seeded_80_10_10(data, tmp_path):
    def split(seed, out):
        stage("write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(data["root"]), "--split", "random",
              "--seed", str(seed), "--image-size", "32", "--out-dir", str(out))
        m = json.loads((out / "manifest.json").read_text())
        return m, {s: sorted(v) for s, v in ((s, read_records(out).get(s, {})) for s in ("train", "val", "test"))}

    m, a = split(3, tmp_path / "a")
    _, b = split(3, tmp_path / "b")
    _, c = split(4, tmp_path / "c")
    assert a == b and a != c and m["split"] == {"kind": "random", "shares": [0.8, 0.1, 0.1], "seed": 3}
    # Assigned = written + rejected while writing (corrupt or mismatched pairs), per split.
    assigned = {s: m["splits"][s]["images"] + sum(r.get("split") == s for r in m["rejected"]) for s in a}
    n = sum(assigned.values())
    assert n == N_PAIRS - 1  # every pair with both files; the image without a mask is not a pair
    assert (assigned["train"], assigned["val"]) == (round(0.8 * n), round(0.1 * n)) and assigned["test"] > 0


def test_two_ranks_write_the_same_records_as_one(data, tmp_path):
    run_ranks(2, ["-m", "dataprep.kvasir_seg.tfrecords", "--data-dir", str(data["dir"]), "--image-size",
                  str(STORED), "--images-per-shard", "15", "--out-dir", str(tmp_path)], timeout=300)
    two = json.loads((tmp_path / "manifest.json").read_text())
    assert two["splits"] == data["manifest"]["splits"] and two["rejected"] == data["manifest"]["rejected"]


def test_official_lists_ship_with_the_project():
    train, val = facts.official_split("train"), facts.official_split("val")
    assert (len(train), len(val)) == (880, 120) and not set(train) & set(val)
    assert all(len(i) == 25 for i in train + val)


def test_an_edited_mask_rewrites_exactly_its_shard(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data["root"], root)  # copy2 keeps the files' times: the copy's shards are complete
    name = sorted((root / "kvasir-seg" / "val.txt").read_text().split())[0]
    mask = root / "kvasir-seg" / facts.TOP / facts.MASKS / f"{name}.jpg"
    img = cv2.imread(str(mask), 0)
    cv2.imwrite(str(mask), np.flipud(img))  # a corrected mask under the same name
    proc = stage("write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(root), "--image-size", str(STORED),
                 "--images-per-shard", "15")
    log = proc.stdout + proc.stderr
    assert log.count("rewriting ") == 1 and "an image or mask file of it changed on disk" in log
    recs = read_records(root / "kvasir-seg" / "tfrecords")
    expected = cv2.resize((np.flipud(img) > facts.MASK_THRESHOLD).astype(np.uint8), (STORED, STORED),
                          interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(recs["val"][name][1][..., 0], expected)


def test_one_pair_read_keeps_label_map_masks_and_rejects_bad_files_with_reasons(tmp_path):
    """read_pair on its own: every answer the writer lists in the manifest, and the inputs it accepts."""
    from dataprep.kvasir_seg.tfrecords import read_pair
    from dataprep.shards import Rejected
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "img.jpg"), image)
    label_map = np.zeros((64, 80), np.uint8)
    label_map[10:30, 20:50] = 1  # a 0/1 PNG mask, as other tools export them
    cv2.imwrite(str(tmp_path / "01.png"), label_map)
    _, mask = read_pair({"image": str(tmp_path / "img.jpg"), "mask": str(tmp_path / "01.png")})
    assert mask.sum() == 20 * 30  # not all background under the 0/255 threshold

    rgba16 = np.concatenate([image.astype(np.uint16) * 257, np.full((64, 80, 1), 65535, np.uint16)], axis=2)
    cv2.imwrite(str(tmp_path / "rgba16.png"), rgba16)  # 16-bit with alpha: read as 8-bit colour
    img, _ = read_pair({"image": str(tmp_path / "rgba16.png"), "mask": str(tmp_path / "01.png")})
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8 and abs(int(img[5, 5, 0]) - int(image[5, 5, 0])) <= 1

    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not a jpeg at all" * 10)
    cv2.imwrite(str(tmp_path / "small.png"), label_map[:32])
    for mask, reason in (("empty.jpg", "mask is an empty file (0 bytes)"),
                         ("garbage.jpg", "mask unreadable or corrupt"),
                         ("small.png", "image is 80x64 but its mask 80x32"),
                         ("absent.png", "mask missing")):
        with pytest.raises(Rejected, match=re.escape(reason)):
            read_pair({"image": str(tmp_path / "img.jpg"), "mask": str(tmp_path / mask)})


def test_a_full_disk_is_one_line_and_a_rerun_with_space_completes(tmp_path):
    """Extraction, then the shard writer, each onto a small file system that fills up: one line that
    says so, nothing partial left under a final name, and the same command finishes once there is room."""
    from helpers import small_disk
    folder = synthetic(tmp_path / "out", n=60)
    dest = folder / facts.TOP
    with small_disk(dest, 200):  # the 60 pairs take about 600 KB
        proc = stage("extract_images.sh", "--dataset", "kvasir-seg", "--out", str(tmp_path / "out"), expect_rc=1)
        assert not list(dest.rglob("*.part"))
    assert "no space left on the device of" in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    stage("extract_images.sh", "--dataset", "kvasir-seg", "--out", str(tmp_path / "out"))

    out_dir = tmp_path / "records"
    write = ["write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(tmp_path / "out"), "--image-size", "48",
             "--images-per-shard", "10", "--out-dir", str(out_dir)]
    with small_disk(out_dir, 64):  # one shard of 10 pairs at 48 px is about 70 KB
        proc = stage(*write, expect_rc=None)
        left = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(r"error: .*\.tfrecord: no space left on the device of .*free space or write elsewhere",
                     proc.stderr), proc.stderr[-3000:]
    # No shard stands under its final name half written (a writer process the pool stopped may leave
    # its temporary file: the rerun removes it).
    assert not [name for name in left if name.endswith(".tfrecord") and not name.startswith(".tmp-")]
    stage(*write)
    assert json.loads((out_dir / "manifest.json").read_text())["counts"]["written"] == 60
    assert not list(out_dir.glob(".tmp-*"))


def test_duplicate_ids_and_stray_files_are_each_rejected_once_with_a_reason(tmp_path):
    from dataprep.kvasir_seg.tfrecords import assign_official, pair_files
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for f in ("a.jpg", "a.png", "b.jpg", "notes.txt"):
        (images / f).write_bytes(b"x")
    for f in ("a.jpg", "b.jpg", "c.jpg"):
        (masks / f).write_bytes(b"x")
    pairs, rejected = pair_files(str(images), str(masks))
    assert sorted(pairs) == ["a", "b"] and pairs["a"]["image"].endswith("a.jpg")
    assert sorted((r["name"], r["reason"]) for r in rejected) == [
        ("c", "mask without an image in images/"),
        ("images/a.png", "a second image for id a; a.jpg is used"),
        ("images/notes.txt", "not an image (.jpg, .jpeg, .png)")]
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "val.txt").write_text("b\n")
    splits, more, _ = assign_official(pairs, str(tmp_path), unpaired={"c"})
    assert splits == {"train": ["a", "b"], "val": []}
    assert more == [{"name": "b", "reason": "listed again in val (first in train)"}]


def test_the_writer_refuses_the_other_data_sets_records_and_rewrites_its_own_with_other_options(data, tmp_path):
    """ChestX-ray14's writer pointed at Kvasir-SEG records: one line, every file byte-identical. Kvasir-SEG's
    own writer, with another --image-size, still rewrites them."""
    from helpers import one_line_refusal, snapshot
    records = tmp_path / "records"
    shutil.copytree(data["tf_dir"], records)
    cx = ["--out", str(tmp_path / "cx")]
    stage("download_dataset.sh", *cx, "--synthetic", "12", "--image-size", "32")
    stage("extract_images.sh", *cx)
    before = snapshot(records)
    proc = stage("write_tfrecords.sh", *cx, "--out-dir", str(records), "--image-size", "32", expect_rc=2)
    one_line_refusal(proc, f"{records} holds the records of kvasir-seg", "nothing was changed")
    assert snapshot(records) == before
    proc = stage("write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(data["root"]), "--out-dir",
                 str(records), "--image-size", "32", "--images-per-shard", "15")
    assert "written with other options" in proc.stdout
    assert json.loads((records / "manifest.json").read_text())["options"]["image_size"] == 32


def test_own_images_the_shipped_lists_do_not_name_are_refused_suggesting_a_random_split(data, tmp_path):
    """A user's own folder without train.txt/val.txt: the shipped official lists name none of its ids."""
    folder = tmp_path / "kvasir-seg"
    shutil.copytree(data["dir"] / facts.TOP / facts.IMAGES, folder / facts.TOP / facts.IMAGES)
    shutil.copytree(data["dir"] / facts.TOP / facts.MASKS, folder / facts.TOP / facts.MASKS)
    proc = stage("write_tfrecords.sh", "--dataset", "kvasir-seg", "--out", str(tmp_path), expect_rc=2)
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and "official lists shipped with the project" in last
    assert re.search(r"name none of the \d+ image/mask pairs on disk", last) and "use --split random" in last
    assert not (folder / "tfrecords").exists()
