"""The user's own image and mask folders (dataprep.mask_set): pairing, foreground, split, the writer's records."""
import csv
import json
import os

import cv2
import numpy as np
import pytest

from dataprep.mask_set import pairs as maskpairs, tfrecords as masks_writer
from dataprep.shards import Rejected
from helpers import one_line_refusal, run_job
from runtime.errors import UserError

SIDE = 40  # the folders' images are SIDE x (SIDE + 8); records are stored at 32


def square_mask(value=255, background=0):
    m = np.full((SIDE, SIDE + 8), background, np.uint8)
    m[4:24, 6:30] = value
    return m


def picture(seed):
    return np.random.default_rng(seed).integers(0, 255, (SIDE, SIDE + 8, 3), dtype=np.uint8)


def write_folders(root, good=6, suffix="_mask"):
    """Images and masks of every kind the writer must place; returns (images, masks) folders."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i in range(good):
        cv2.imwrite(str(images / f"g{i}.png"), picture(i))
        cv2.imwrite(str(masks / f"g{i}{suffix}.png"), square_mask(255 if i % 2 else 1))
    cv2.imwrite(str(images / "empty.png"), picture(90))
    cv2.imwrite(str(masks / f"empty{suffix}.png"), square_mask(0))            # all background: valid
    cv2.imwrite(str(images / "nomask.png"), picture(91))
    cv2.imwrite(str(masks / f"noimage{suffix}.png"), square_mask())
    cv2.imwrite(str(images / "small.png"), picture(92))
    cv2.imwrite(str(masks / f"small{suffix}.png"), square_mask()[:20])        # other size than its image
    (images / "broken.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(masks / f"broken{suffix}.png"), square_mask())
    cv2.imwrite(str(images / "full.png"), picture(93))
    cv2.imwrite(str(masks / f"full{suffix}.png"), square_mask(255, background=255))
    cv2.imwrite(str(images / "labels.png"), picture(94))
    label_map = square_mask(3)
    label_map[30:, :] = 4
    cv2.imwrite(str(masks / f"labels{suffix}.png"), label_map)
    cv2.imwrite(str(images / "colour.png"), picture(95))
    cv2.imwrite(str(masks / f"colour{suffix}.png"), picture(96))
    cv2.imwrite(str(masks / "g0.png"), square_mask())                           # lacks the suffix
    (images / "notes.txt").write_text("not an image")
    return images, masks


def write_masks(*args, expect_rc=0):
    return run_job(["bash", "write_tfrecords.sh", "--dataset", "masks", *args], timeout=120, expect_rc=expect_rc)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-masks")
    images, masks = write_folders(root)
    write_masks("--images", str(images), "--masks", str(masks), "--mask-suffix", "_mask", "--out", str(root / "out"),
                "--image-size", "32", "--processes", "1", "--val-fraction", "0.2", "--test-fraction", "0.2")
    folder = root / "out" / "masks" / "tfrecords"
    return folder, json.loads((folder / "manifest.json").read_text())


def test_every_file_is_written_or_rejected_with_its_reason(written):
    folder, manifest = written
    reasons = {r["name"]: r["reason"] for r in manifest["rejected"]}
    assert "image without a mask" in reasons["nomask"]
    assert "mask without an image" in reasons["noimage"]
    assert "image is 48x40 but its mask 48x20" in reasons["small"]
    assert "image unreadable" in reasons["broken"]
    assert "every pixel of the mask is foreground" in reasons["full"]
    assert "mask holds values 0, 3, 4: a label map?" in reasons["labels"]
    assert "colour image" in reasons["colour"]
    assert "does not end in --mask-suffix '_mask'" in reasons["masks/g0.png"]
    assert "not an image" in reasons["images/notes.txt"]
    sides = [json.loads(p.read_text()) for p in (folder / ".shards").glob("*.json")]
    assert sorted(n for s in sides for n in s["written"]) == ["empty", *(f"g{i}" for i in range(6))]
    counts = manifest["counts"]
    assert counts["written"] == 7 and counts["accounted"] == counts["named_images"] == 7 + len(reasons)
    assert sum(s["empty_masks"] for s in manifest["splits"].values()) == 1  # the all-background mask is kept
    assert manifest["dataset"] == "masks" and manifest["split"]["kind"] == "random"


def test_a_record_holds_the_resized_image_and_its_0_1_mask(written):
    import tensorflow as tf
    from dataprep import records
    folder, _ = written
    found = {}
    for path in folder.glob("*.tfrecord"):
        for blob in tf.data.TFRecordDataset(str(path)):
            image, mask, name = records.parse_segmentation(blob)
            found[name.numpy().decode()] = (image.numpy(), mask.numpy()[..., 0])
    expected = cv2.resize((square_mask(1) > 0).astype(np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST)
    for name in ("g0", "g1"):  # a 0/1 mask and a 0/255 mask give the same record mask
        np.testing.assert_array_equal(found[name][1], expected)
    rgb = cv2.cvtColor(cv2.resize(picture(1), (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(found["g1"][0], rgb)
    assert not found["empty"][1].any()


def test_segmentation_train_takes_the_records_and_chexnet_refuses_them(written, tmp_path):
    from training import workload
    from training.preflight import preflight
    folder, _ = written
    argv = ["--data-dir", str(folder), "--runs-dir", str(tmp_path)]
    _, manifest = preflight(workload.get("segmentation"), argv)
    assert manifest.dataset == "masks" and manifest.stored_size == 32
    for split in ("train", "val", "test"):
        manifest.check_counts(split)
    with pytest.raises(UserError, match="holds masks records; chexnet.train trains on"):
        preflight(workload.get("chexnet"), argv)


def test_label_map_foreground_picks_the_given_classes(tmp_path):
    image, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    cv2.imwrite(str(image), picture(0))
    label_map = square_mask(3)
    label_map[30:, :] = 4
    label_map[0, :] = 7
    cv2.imwrite(str(mask), label_map)
    paths = {"image": str(image), "mask": str(mask)}
    _, picked = maskpairs.read_pair(paths, foreground=(3, 4))
    np.testing.assert_array_equal(picked, np.isin(label_map, (3, 4)))
    _, only4 = maskpairs.read_pair(paths, foreground=(4,))
    assert only4.sum() == (label_map == 4).sum() and not only4[4:24, 6:30].any()
    with pytest.raises(Rejected, match="label map"):
        maskpairs.read_pair(paths)
    wide = (label_map.astype(np.uint16) * 1000)  # a 16-bit label map
    cv2.imwrite(str(mask), wide)
    _, picked = maskpairs.read_pair(paths, foreground=(4000,))
    np.testing.assert_array_equal(picked, label_map == 4)


def test_jpeg_masks_are_thresholded_as_kvasir_seg_masks_are():
    noisy = square_mask(250)
    noisy[0, 0], noisy[1, 1] = 3, 140  # lossy edges
    picked = maskpairs.foreground_of(noisy, (), lossy=True)
    assert picked[0, 0] == 0 and picked[1, 1] == 1 and picked[10, 10] == 1
    with pytest.raises(Rejected):
        maskpairs.foreground_of(noisy, (), lossy=False)


def options(images, masks, **kw):
    return masks_writer.Options(data_dir="unused", out_dir="unused", images=str(images), masks=str(masks),
                                mask_suffix="_mask", **kw)


def test_random_split_is_seeded_and_covers_every_pair(tmp_path):
    images, masks = write_folders(tmp_path, good=20)
    first = masks_writer.prepare(options(images, masks, seed=3))[0]
    assert first == masks_writer.prepare(options(images, masks, seed=3))[0]
    other = masks_writer.prepare(options(images, masks, seed=4))[0]
    assert other != first and sorted(sum(other.values(), [])) == sorted(sum(first.values(), []))
    # 26 pairs by name (the 20 good and 6 rejected only once read): 10% each to val and test, rounded
    assert [len(first[s]) for s in ("train", "val", "test")] == [20, 3, 3]
    assert not set(first["train"]) & set(first["val"]) and not set(first["val"]) & set(first["test"])


def test_split_csv_places_each_image_or_rejects_it(tmp_path):
    images, masks = write_folders(tmp_path, good=4)
    split_csv = tmp_path / "split.csv"
    with open(split_csv, "w", newline="") as fh:
        csv.writer(fh).writerows([["name", "split"], ["g0.png", "train"], ["g1", "train"], ["g2", "val"],
                                  ["g3", "holdout"], ["ghost", "test"], ["g1", "val"], ["empty", "test"]])
    splits, rejected, info = masks_writer.prepare(options(images, masks, split_csv=str(split_csv)))[:3]
    assert sorted(splits["train"]) == ["g0", "g1"] and splits["val"] == ["g2"] and info["kind"] == "csv"
    reasons = {r["name"]: r["reason"] for r in rejected}
    assert "split 'holdout' is not train, val or test" in reasons["g3"]
    assert "on disk neither as image nor as mask" in reasons["ghost"]
    assert "listed again in val" in reasons["g1"]
    assert "in neither split list" in reasons["labels"]
    assert sorted(splits["test"]) == ["empty"]


def test_split_lists_place_each_image_or_reject_it(tmp_path):
    images, masks = write_folders(tmp_path, good=4)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("g0.png\ng1\nempty\n")
    (lists / "val.txt").write_text("g2\ng1\n")
    splits, rejected, info = masks_writer.prepare(options(images, masks, split_lists=str(lists)))[:3]
    assert sorted(splits["train"]) == ["empty", "g0", "g1"] and splits["val"] == ["g2"] and info["kind"] == "lists"
    reasons = {r["name"]: r["reason"] for r in rejected}
    assert "listed again in val" in reasons["g1"] and "in neither split list" in reasons["g3"]
    (lists / "train.txt").unlink()
    with pytest.raises(UserError, match="--split-lists .*: no train.txt"):
        masks_writer.prepare(options(images, masks, split_lists=str(lists)))


@pytest.mark.parametrize("args, expected", [
    (["--foreground", "3,x"], "--foreground 3,x: 'x' is not an integer"),
    (["--foreground", "70000"], "from 0 to 65535"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "must be below 1"),
    (["--val-fraction", "1.5"], "argument --val-fraction: must be a number >= 0 and < 1"),
    (["--split-csv", "/nonexistent.csv"], "--split-csv /nonexistent.csv: no such file"),
    (["--split-lists", "/nonexistent"], "--split-lists /nonexistent: no such folder"),
])
def test_bad_flags_are_one_line_before_any_work(tmp_path, capsys, args, expected):
    images, masks = write_folders(tmp_path, good=1)
    with pytest.raises(SystemExit) as stop:
        masks_writer.main(["--data-dir", str(tmp_path / "out"), "--images", str(images), "--masks", str(masks),
                           *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_other_records_is_refused(written, tmp_path):
    images, masks = write_folders(tmp_path, good=1)
    out = tmp_path / "out" / "masks" / "tfrecords"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"dataset": "kvasir-seg"}))
    proc = write_masks("--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "out"),
                       expect_rc=2)
    one_line_refusal(proc, "holds the records of kvasir-seg")
    assert os.listdir(out) == ["manifest.json"]
