"""Exports leave the repository: the graph reads images as OpenCV does; each workload's trained fixture run
is exported, loaded in a fresh process that has neither this project nor tf-keras (tests/export_client.py:
plain TensorFlow, ONNX Runtime), fed the files predict gets, and found equal to predict; bad flags and a
user's folder are refused in one line before TensorFlow loads.

The ONNX halves skip with "onnxruntime not installed" where tf2onnx or onnxruntime is missing.
"""
import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import ROOT, one_line_refusal, run_job, snapshot, without_project

CLIENT = os.path.join(ROOT, "tests", "export_client.py")
HAS_ONNX = all(importlib.util.find_spec(p) for p in ("tf2onnx", "onnxruntime"))
FORMATS = "savedmodel,onnx,keras" if HAS_ONNX else "savedmodel,keras"
NO_ONNX = "onnxruntime not installed"
TOLERANCE = 1e-4


def export(module, checkpoint, out, *flags, expect_rc=0):
    return run_job([sys.executable, "-m", module, "--checkpoint", str(checkpoint), "--out", str(out), *flags],
                   timeout=600, expect_rc=expect_rc)


def fresh_client(folder, images, tmp_path):
    """The outputs of tests/export_client.py, run by this venv's python without the project (helpers'
    without_project, which holds even beside make setup's editable install), from an empty folder, without
    TF_USE_LEGACY_KERAS: neither the project nor tf-keras is there to be imported by accident."""
    work = tmp_path / "client"
    work.mkdir()
    python, env = without_project()
    out = work / "outputs.npz"
    proc = subprocess.run([*python, CLIENT, str(folder), str(out), *map(str, images)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(out))
    assert not got.pop("tf_keras_loaded")
    return got


def rejections(stderr):
    """{path: reason} of predict's "error: PATH: REASON" lines."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("error: ") and ": " in line[7:]:
            path, reason = line[7:].split(": ", 1)
            found[path] = reason
    return found


# ------------------------------------------------------------------ the graph reads as OpenCV does
def _photo(rng, h, w, c):
    smooth = cv2.resize(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, c), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC).reshape(h, w, c)
    return np.clip(smooth.astype(int) + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8)


# (height, width, stored size): equal, 2x, whole factors, table shrinks, enlarging, one side each way
SIZES = [(64, 64, 64), (128, 128, 64), (192, 128, 64), (100, 100, 64), (333, 250, 64), (48, 48, 64),
         (40, 90, 64), (90, 40, 64), (300, 300, 48)]


def test_the_graph_reads_and_resizes_images_as_opencv_does(tmp_path):
    """Every resize path and decoder: the graph's pixels equal chexnet's and segmentation's readers', exactly."""
    import tensorflow as tf
    from dataprep.chestxray14.tfrecords import load_gray
    from segmentation.preprocess import to_stored_form
    from training import image_graph
    rng = np.random.default_rng(0)
    read = {c: tf.function(lambda data, size, c=c: image_graph.area_resize(image_graph.decode(data, c)[0], size))
            for c in (1, 3)}
    for i, (h, w, size) in enumerate(SIZES):
        for channels, ext in ((1, ".png"), (3, ".jpg"), (4, ".png"), (1, ".jpg")):
            path = str(tmp_path / f"{i}-{channels}{ext}")
            cv2.imwrite(path, _photo(rng, h, w, channels), [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else [])
            data = tf.constant(open(path, "rb").read())
            colour = read[3](data, size).numpy()
            assert np.array_equal(colour, to_stored_form(cv2.imread(path, cv2.IMREAD_COLOR), size)), (path, size)
            if h == w:
                gray = read[1](data, size).numpy()[..., 0]
                assert np.array_equal(gray, load_gray(path, size)), (path, size)


def test_nearest_neighbour_in_a_graph_takes_opencvs_source_pixels():
    """In a graph too (constant folding once turned 1 / (dst / 48) into 48 / dst, moving 2 mask pixels of 41x68
    frames); every frame size up to 700 from the stored sides the tests use."""
    import tensorflow as tf
    from training import image_graph
    for src in (32, 48, 64):
        index = tf.function(lambda dst, src=src: image_graph.nearest_index(dst, src))
        grid = np.arange(src * src, dtype=np.int32).reshape(src, src)
        for dst in range(16, 700, 13):
            want = cv2.resize(grid.astype(np.float32), (dst, src), interpolation=cv2.INTER_NEAREST)[0]
            assert np.array_equal(grid[0][index(tf.constant(dst)).numpy()], want), (src, dst)


def test_a_16_bit_png_is_flagged_and_read_by_its_high_byte_as_opencv_does(tmp_path):
    import tensorflow as tf
    from training import image_graph
    deep = np.random.default_rng(1).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    data = tf.constant((tmp_path / "deep.png").read_bytes())
    assert int(image_graph.png_bit_depth(data)) == 16 and int(image_graph.png_bit_depth(tf.constant(b""))) == 8
    image, known = image_graph.decode(data, 3)
    assert bool(known) and np.array_equal(image.numpy(), cv2.imread(str(tmp_path / "deep.png"))[..., ::-1])


# ------------------------------------------------------------------ refusals before TensorFlow loads
NO_TF = ("import sys\nfrom segmentation import export\ntry:\n    export.main(sys.argv[1:])\nexcept SystemExit:\n"
         "    print('tensorflow loaded' if 'tensorflow' in sys.modules else 'tensorflow not loaded')\n")
NO_TF_CHEXNET = NO_TF.replace("from segmentation import export", "from chexnet import export")


SAVEDMODEL = ["--format", "savedmodel"]  # a format every venv can write


def _refused(args, *expected, code=NO_TF):
    proc = run_job([sys.executable, "-c", code, *map(str, args)], expect_rc=None, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "tensorflow not loaded", proc.stdout
    return one_line_refusal(proc, *expected)


def test_a_users_folder_is_refused_before_tensorflow_loads_and_left_as_it_was(tmp_path):
    ckpt = tmp_path / "best.npz"
    ckpt.write_bytes(b"not read: the flags are checked first")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    before = snapshot(mine)
    _refused([*SAVEDMODEL, "--checkpoint", ckpt, "--out", mine], "is not empty (notes.txt)", "--overwrite")
    _refused([*SAVEDMODEL, "--checkpoint", ckpt, "--out", mine, "--overwrite"], "holds notes.txt, which export did not write")
    assert snapshot(mine) == before
    (mine / "notes.txt").unlink()
    (mine / "model.onnx").write_text("a file named as export's, without an export's card beside it")
    before = snapshot(mine)
    _refused([*SAVEDMODEL, "--checkpoint", ckpt, "--out", mine, "--overwrite"], "no model_card.json of an earlier export")
    _refused([*SAVEDMODEL, "--checkpoint", ckpt, "--out", mine / "model.onnx"], "is a file")
    assert snapshot(mine) == before


def test_bad_formats_and_checkpoints_are_refused_before_tensorflow_loads(tmp_path):
    _refused(["--checkpoint", tmp_path, "--out", tmp_path / "x", "--format", "savedmodel,tflite"],
             "--format 'savedmodel,tflite': choose among savedmodel, onnx, keras")
    _refused(["--checkpoint", tmp_path / "none.npz", "--out", tmp_path / "x", "--format", "savedmodel"],
             "none.npz: no such file or folder")
    if not HAS_ONNX:
        _refused(["--checkpoint", tmp_path, "--out", tmp_path / "x", "--format", "onnx"],
                 "--format onnx needs", "make setup", "--format savedmodel,keras")
    assert not (tmp_path / "x").exists()


def test_the_client_stops_where_the_project_can_be_imported(tmp_path):
    """The guard behind every "without this project" check: the same client, the checkout on its path, stops."""
    python, env = without_project(extra_path=[ROOT])
    proc = subprocess.run([*python, CLIENT, str(tmp_path), str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip() == "the project is importable here: this client must run without it", proc.stderr
    assert not (tmp_path / "out.npz").exists()


def test_an_operating_point_needs_evaluates_choice_for_this_very_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.npz").write_bytes(b"not read: the flags are checked first")
    args = ["--checkpoint", run / "best.npz", "--out", tmp_path / "x", *SAVEDMODEL, "--operating-point", "youden"]
    _refused(args, "--operating-point youden: no operating_points.json beside", "--split val,test",
             code=NO_TF_CHEXNET)
    (run / "operating_points.json").write_text(json.dumps({"checkpoint": "best.npz", "checkpoint_sha256": "0" * 64}))
    _refused(args, "was chosen for another checkpoint (best.npz)", "--checkpoint best.npz", code=NO_TF_CHEXNET)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ the files predict gets
def _write(folder, name, image, *params):
    path = folder / name
    assert cv2.imwrite(str(path), image, list(params))
    return path


def _chexnet_files(images, stored, folder):
    """Three fixture X-rays, copies of the first through each reader path (RGBA, gray and colour JPEG, 2x,
    3x, a fractional shrink, an enlargement, not square), a 16-bit one (predict reads it, the export refuses
    it), and two files predict refuses (too small, not an image)."""
    names = sorted(os.listdir(images))[:3]
    gray = cv2.imread(str(images / names[0]), cv2.IMREAD_GRAYSCALE)
    tinted = np.clip(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR).astype(int) + (30, 0, -30), 0, 255).astype(np.uint8)
    resized = lambda side: cv2.resize(gray, (side, side), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    jpeg = (cv2.IMWRITE_JPEG_QUALITY, 90)
    files = [images / n for n in names] + [
        _write(folder, "rgba.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)),
        _write(folder, "gray.jpg", gray, *jpeg), _write(folder, "colour.jpg", tinted, *jpeg),
        _write(folder, "double.png", np.kron(gray, np.ones((2, 2), np.uint8))),
        _write(folder, "triple.png", resized(3 * stored)), _write(folder, "fraction.png", resized(stored * 5 // 3)),
        _write(folder, "enlarged.png", resized(stored * 3 // 4)),
        _write(folder, "wide.png", np.pad(gray, ((0, 0), (8, 8)))),
        _write(folder, "deep.png", gray.astype(np.uint16) * 257), _write(folder, "tiny.png", resized(24))]
    (folder / "notes.png").write_text("not an image")
    return [*map(str, files), str(folder / "notes.png")]


def _segmentation_files(frames, folder):
    """Six fixture frames (several narrower or shorter than the stored 48 px), a 16-bit PNG, RGBA and gray
    copies, a 96x96 one (the 2x path), and two files predict refuses (too small, not an image)."""
    names = sorted(os.listdir(frames))[:6]
    frame = cv2.imread(str(frames / names[0]), cv2.IMREAD_COLOR)
    noise = np.random.default_rng(2).integers(0, 256, frame.shape)
    files = [frames / n for n in names] + [
        _write(folder, "deep.png", (frame.astype(np.uint16) * 256 + noise).astype(np.uint16)),
        _write(folder, "rgba.png", cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)),
        _write(folder, "gray.png", cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)),
        _write(folder, "square96.png", cv2.resize(frame, (96, 96), interpolation=cv2.INTER_CUBIC)),
        _write(folder, "tiny.png", frame[:12, :20])]
    (folder / "notes.png").write_text("not an image")
    return [*map(str, files), str(folder / "notes.png")]


# ------------------------------------------------------------------ CheXNet: the trained fixture run
def chexnet_comparison(run, data, manifest, root):
    """Export ``run``'s best.npz; predict's CSV and refusals and the fresh client's outputs, same files."""
    best, out = run / "best.npz", root / "export"
    export("chexnet.export", best, out, "--format", FORMATS, "--operating-point", "youden")
    (root / "files").mkdir()
    files = _chexnet_files(data / "images_all" / "images", manifest["options"]["image_size"], root / "files")
    proc = run_job([sys.executable, "-m", "chexnet.predict", "--precision", "float32", "--checkpoint", str(best),
                    "--out", str(root / "pred.csv"), *files], expect_rc=1, timeout=600)
    with open(root / "pred.csv") as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    return {"out": out, "files": files, "rows": rows, "refused": rejections(proc.stderr),
            "card": json.loads((out / "model_card.json").read_text()), "got": fresh_client(out, files, root)}


@pytest.fixture(scope="module")
def chexnet_compared(chexnet_run, tmp_path_factory):
    compared = chexnet_comparison(chexnet_run["run"], chexnet_run["data"], chexnet_run["manifest"],
                                  tmp_path_factory.mktemp("cx-export"))
    return {**compared, "fixture": chexnet_run}


def _chexnet_worst(compared, key):
    """The largest difference between predict's probabilities and the client's ``key`` on valid images."""
    got, classes, worst = compared["got"], compared["card"]["classes"], 0.0
    for i, path in enumerate(compared["files"]):
        if path in compared["rows"] and got["valid"][i]:  # deep.png: predicted, refused by the export
            want = np.array([float(compared["rows"][path][k]) for k in classes])
            worst = max(worst, float(np.abs(got[key][i] - want).max()))
    return worst


def check_chexnet_savedmodel(c):
    got, refused = c["got"], c["refused"]
    from chexnet.export import SIXTEEN_BIT
    assert sorted(os.path.basename(p) for p in refused) == ["notes.png", "tiny.png"]
    for i, path in enumerate(c["files"]):
        deep = path.endswith("deep.png")  # predict's 16-bit rule is not in the graph: refused there
        assert bool(got["valid"][i]) == (path in c["rows"] and not deep), path
        assert not deep or str(got["reason"][i]) == SIXTEEN_BIT
        if path in refused and not path.endswith("notes.png"):  # predict's own words, from the graph
            assert str(got["reason"][i]) == refused[path], path
            assert np.isnan(got["probabilities"][i]).all()
    assert str(got["reason"][-1]).startswith("not a PNG or JPEG image")
    worst = _chexnet_worst(c, "probabilities")
    print(f"chexnet: SavedModel against predict, largest difference {worst:.3g} over {len(c['rows'])} images")
    assert worst <= TOLERANCE
    keras = 1 / (1 + np.exp(-got["keras_logits"].astype(np.float64)))
    assert np.abs(keras - got["probabilities"])[got["valid"]].max() <= TOLERANCE


def test_chexnet_savedmodel_gives_predicts_probabilities_and_refusals_without_this_project(chexnet_compared):
    assert chexnet_compared["card"]["classes"] == chexnet_compared["fixture"]["manifest"]["class_order"]
    check_chexnet_savedmodel(chexnet_compared)


@pytest.mark.skipif(not HAS_ONNX, reason=NO_ONNX)
def test_chexnet_onnx_gives_predicts_probabilities_from_the_preprocess_tensor(chexnet_compared):
    worst = _chexnet_worst(chexnet_compared, "onnx_probabilities")
    print(f"chexnet: ONNX Runtime against predict, largest difference {worst:.3g}")
    assert worst <= TOLERANCE


def test_chexnet_model_card_names_the_classes_data_figures_and_precision(chexnet_compared):
    card, fixture = chexnet_compared["card"], chexnet_compared["fixture"]
    manifest = fixture["data"] / "tfrecords" / "manifest.json"
    assert card["intended_use"] == "research; not for clinical use"
    assert card["training_data"]["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert card["training_data"]["splits"]["test"]["images"] == fixture["manifest"]["splits"]["test"]["images"]
    assert {"test", "val"} <= set(card["figures"]["evaluations"])
    assert len(card["figures"]["evaluations"]["test"]["mean_auc_ci"]) == 2
    assert card["precision"]["trained"] == card["precision"]["exported"] == "float32"
    assert set(card["checks"]["max_abs_difference"]) == set(FORMATS.split(","))
    assert all(v <= TOLERANCE for v in card["checks"]["max_abs_difference"].values())
    assert "not for clinical use" in (chexnet_compared["out"] / "MODEL_CARD.md").read_text()


def test_chexnet_thresholded_output_is_the_val_youden_point_of_the_card(chexnet_compared):
    """--operating-point youden: ``positive`` is probability >= evaluate's val-chosen threshold, in the
    SavedModel and in the ONNX file, and the card carries the thresholds and test's rates at them."""
    card, got = chexnet_compared["card"], chexnet_compared["got"]
    saved = json.loads((chexnet_compared["fixture"]["run"] / "operating_points.json").read_text())
    op = card["operating_points"]
    assert op["found"] and op["output"] == "youden" and op["points"] == saved["points"]
    assert [r["pathology"] for r in op["measured"]["test"]] == card["classes"]
    thresholds = np.array([np.nan if p["youden"] is None else p["youden"] for p in op["points"]], np.float32)
    valid = got["valid"]
    assert np.array_equal(got["positive"][valid], got["probabilities"][valid] >= thresholds)
    assert not got["positive"][~valid].any()
    onnx = got.get("onnx_positive")
    if onnx is not None:
        assert np.array_equal(onnx[valid], got["onnx_probabilities"][valid] >= thresholds)
    assert "The `positive` output uses the youden threshold." in (chexnet_compared["out"] / "MODEL_CARD.md").read_text()


# ------------------------------------------------------------------ segmentation: the trained fixture run
def segmentation_comparison(checkpoint, data, root):
    """Export ``checkpoint``; predict's masks and refusals and the fresh client's outputs, same files."""
    out = root / "export"
    export("segmentation.export", checkpoint, out, "--format", FORMATS)
    (root / "files").mkdir()
    files = _segmentation_files(data / "Kvasir-SEG" / "images", root / "files")
    proc = run_job([sys.executable, "-m", "segmentation.predict", "--precision", "float32", "--checkpoint",
                    str(checkpoint), "--out-dir", str(root / "masks"), *files], expect_rc=1, timeout=600)
    with open(root / "masks" / "predictions.csv") as fh:
        masks = {r["image"]: cv2.imread(r["mask"], cv2.IMREAD_GRAYSCALE) for r in csv.DictReader(fh)}
    return {"out": out, "files": files, "masks": masks, "refused": rejections(proc.stderr),
            "card": json.loads((out / "model_card.json").read_text()), "got": fresh_client(out, files, root)}


@pytest.fixture(scope="module")
def segmentation_compared(resunetpp_run, tmp_path_factory):
    """The fixture's last.npz: the checkpoint its evaluate graded."""
    return segmentation_comparison(resunetpp_run["run"] / "last.npz", resunetpp_run["data"],
                                   tmp_path_factory.mktemp("seg-export"))


def _mask_mismatches(compared, key):
    """(pixels where the client's mask ``key``, at each frame's size, differs from predict's PNG; the largest
    distance from 0.5 of the SavedModel's probability at those pixels)."""
    got, wrong, margin = compared["got"], 0, 0.0
    for i, path in enumerate(compared["files"]):
        if path in compared["masks"]:
            want = compared["masks"][path] > 0
            h, w = want.shape
            assert (got["height"][i], got["width"][i]) == (h, w), path
            differ = got[key][i, :h, :w].astype(bool) != want
            wrong += int(differ.sum())
            if differ.any():
                margin = max(margin, float(np.abs(got["probability"][i, :h, :w][differ] - 0.5).max()))
    return wrong, margin


def _check_masks(compared, key, what):
    """Predict's masks, but where a logit is so near 0 that float rounding of another batch or runtime may
    fall on either side: there the probability must be within TOLERANCE of 0.5."""
    wrong, margin = _mask_mismatches(compared, key)
    pixels = sum(m.size for m in compared["masks"].values())
    print(f"segmentation: {what} against predict, {wrong} of {pixels} mask pixels differ (probability within "
          f"{margin:.2g} of 0.5 there)")
    assert margin <= TOLERANCE and wrong <= pixels // 10_000, (wrong, margin)


def check_segmentation_savedmodel(c):
    got = c["got"]
    assert sorted(os.path.basename(p) for p in c["refused"]) == ["notes.png", "tiny.png"]
    for i, path in enumerate(c["files"]):
        assert bool(got["valid"][i]) == (path in c["masks"]), path
    tiny = next(i for i, p in enumerate(c["files"]) if p.endswith("tiny.png"))
    assert str(got["reason"][tiny]) == c["refused"][c["files"][tiny]] == "too small: 20x12"
    _check_masks(c, "mask", "SavedModel")
    _check_masks(c, "keras_mask_at_size", "Keras file")


def test_segmentation_savedmodel_gives_predicts_masks_at_each_frames_size_without_this_project(
        segmentation_compared):
    card = segmentation_compared["card"]
    assert card["classes"] == ["polyp"] and card["training_data"]["found"]
    assert {"train", "val"} <= set(card["figures"]["evaluations"])
    check_segmentation_savedmodel(segmentation_compared)


@pytest.mark.skipif(not HAS_ONNX, reason=NO_ONNX)
def test_segmentation_onnx_gives_predicts_masks_from_the_preprocess_tensor(segmentation_compared):
    _check_masks(segmentation_compared, "onnx_mask_at_size", "ONNX Runtime")


# ------------------------------------------------------------------ other settings, --overwrite
def _untrained(folder, model, state):
    """``model`` saved as the trainers save it (float32): export's checks do not depend on what it learned."""
    import tf_keras as keras
    from training import checkpoint
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    folder.mkdir()
    checkpoint.save(str(folder / "best.npz"), model, {"epoch": 1, "step": 0, "lr": 1e-3, "precision": "float32",
                                                      "output": "logits", **state})
    return folder / "best.npz"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A CheXNet of 3 classes at crop 32 of 40 px records, a U-Net and a SegNet at 32 px."""
    from chexnet.model import build_model as chexnet
    from segmentation.model import build_model as segmentation
    root = tmp_path_factory.mktemp("untrained")
    return {"cx3": _untrained(root / "cx3", chexnet(32, 3), {"classes": ["A", "B", "C"], "stored_size": 40,
                                                             "crop": 32}),
            "unet": _untrained(root / "unet", segmentation("unet", 32), {"model": "unet", "stored_size": 32}),
            "segnet": _untrained(root / "segnet", segmentation("segnet", 32), {"model": "segnet", "stored_size": 32})}


@pytest.mark.slow
def test_export_takes_the_checkpoints_own_classes_and_sizes(untrained, tmp_path):
    import tensorflow as tf
    out = tmp_path / "export"
    export("chexnet.export", untrained["cx3"], out, "--format", "savedmodel")
    card = json.loads((out / "model_card.json").read_text())
    assert card["classes"] == ["A", "B", "C"] and not card["figures"]["found"]
    loaded = tf.saved_model.load(str(out / "savedmodel"))
    assert loaded.signatures["serving_tensor"].structured_input_signature[1]["image"].shape.as_list() == \
        [None, 32, 32, 3]
    image = cv2.imencode(".png", np.random.default_rng(3).integers(0, 256, (80, 80), dtype=np.uint8))[1].tobytes()
    result = loaded.signatures["serving_default"](image_bytes=tf.constant([image]))
    assert result["probabilities"].shape == (1, 3) and bool(result["valid"][0])


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_export_and_only_that(untrained, tmp_path):
    out = tmp_path / "export"
    export("segmentation.export", untrained["unet"], out, "--format", "savedmodel,keras")
    refused = export("segmentation.export", untrained["unet"], out, "--format", "savedmodel", expect_rc=2)
    assert "is not empty" in one_line_refusal(refused)
    export("segmentation.export", untrained["unet"], out, "--format", "savedmodel", "--overwrite")
    assert sorted(os.listdir(out)) == ["MODEL_CARD.md", "model_card.json", "savedmodel"]  # the old Keras file too


@pytest.mark.slow
def test_a_keras_file_of_segnet_is_refused_in_one_line_before_any_file_is_written(untrained, tmp_path):
    proc = export("segmentation.export", untrained["segnet"], tmp_path / "out", "--format", "savedmodel,keras",
                  expect_rc=2)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --format keras: segnet has a layer of this project's own (PoolSwitch)"), last
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
