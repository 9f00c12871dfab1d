"""predict and evaluate never destroy a user's file, read images as the TFRecord writers do, and refuse bad
checkpoints, flags and output folders in one line before any work.

Unit tests on the checking functions, then one real-process test per entry point on tiny checkpoints: an
untrained CheXNet at crop 32 (built here, no training) and the suite's trained ResUNet++ (conftest.py).
"""
import concurrent.futures
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dataprep.chestxray14.tfrecords import load_gray
from dataprep.shards import Rejected
from dicom_files import write_dicom
from helpers import run_job
from runtime.errors import UserError
from training import paths

FLOAT32 = ["--precision", "float32"]  # no test may depend on the CPU's bfloat16 units


def _one_line_error(proc, rc=2):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == rc and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    return lines[-1]


@contextlib.contextmanager
def read_only_folder(path, files=()):
    """``path`` as a read-only tmpfs holding copies of ``files``: unwritable even for root."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.strip() or 'mount failed'}): run as root with mount "
                    f"rights")
    try:
        for f in files:
            shutil.copy(f, path)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------ outputs
def test_an_output_that_is_an_input_is_refused_under_any_name_even_with_overwrite(tmp_path):
    scan = tmp_path / "scan1.png"
    scan.write_bytes(b"x-ray")
    os.link(scan, tmp_path / "hard.png")
    os.symlink(scan, tmp_path / "soft.png")
    relative = os.path.relpath(scan)
    for name in (str(scan), relative, str(tmp_path / "hard.png"), str(tmp_path / "soft.png"),
                 str(tmp_path / "sub" / ".." / "scan1.png")):
        with pytest.raises(UserError, match="is one of the input images"):
            paths.check_targets([(name, "--out")], [str(scan)], overwrite=True)
    assert scan.read_bytes() == b"x-ray"


def test_an_existing_output_needs_overwrite_and_a_folder_or_a_clash_never_passes(tmp_path):
    old = tmp_path / "preds.csv"
    old.write_text("image,A\n")
    new = str(tmp_path / "new.csv")
    paths.check_targets([(new, "--out")], [], overwrite=False)
    with pytest.raises(UserError, match=r"preds.csv \(--out\) already exists: pass --overwrite"):
        paths.check_targets([(new, "--out"), (str(old), "--out")], [], overwrite=False)
    paths.check_targets([(str(old), "--out")], [], overwrite=True)
    with pytest.raises(UserError, match="is a folder"):
        paths.check_targets([(str(tmp_path), "--out")], [], overwrite=True)
    with pytest.raises(UserError, match="would also be"):
        paths.check_targets([(new, "--out"), (str(tmp_path / "x" / ".." / "new.csv"), "the table")], [], True)


def test_outputs_of_inputs_with_one_name_are_numbered():
    names = paths.output_names("out", ["a/x.png", "b/x.jpg", "a/x.png", "y.png"], ".png",
                               lambda stem, n: f"{stem}_{n}")
    assert names == {"a/x.png": "out/x.png", "b/x.jpg": "out/x_2.png", "y.png": "out/y.png"}


def test_a_read_only_output_folder_stops_predict_before_tensorflow_loads(tmp_path, capsys):
    from segmentation import predict
    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), np.zeros((40, 40, 3), np.uint8))
    with read_only_folder(tmp_path / "ro") as ro:
        for folder in (ro, ro / "masks"):
            with pytest.raises(SystemExit) as stop:
                predict.main(["--checkpoint", str(tmp_path / "none.npz"), "--out-dir", str(folder), str(frame)])
            assert stop.value.code == 2
            assert capsys.readouterr().err == (f"error: --out-dir {folder}: {ro} is on a read-only file system: "
                                               f"pick a writable --out-dir\n")


# ------------------------------------------------------------------ checkpoints
def test_a_run_folder_stands_for_its_best_checkpoint_and_says_so(tmp_path):
    with pytest.raises(UserError, match="is a folder without best.npz"):
        paths.locate_checkpoint(str(tmp_path), "chexnet.train")
    with pytest.raises(UserError, match="no such file or folder"):
        paths.locate_checkpoint(str(tmp_path / "nope.npz"), "chexnet.train")
    (tmp_path / "best.npz").write_bytes(b"")
    path, note = paths.locate_checkpoint(str(tmp_path), "chexnet.train")
    assert path == str(tmp_path / "best.npz") and "is a run folder: using its best checkpoint" in note
    assert paths.locate_checkpoint(path, "chexnet.train") == (path, None)


def test_empty_truncated_and_foreign_checkpoints_are_one_line_errors(tmp_path):
    from training import checkpoint
    good = tmp_path / "good.npz"
    np.savez(good, weight_0000=np.ones(3), state_json=np.frombuffer(b'{"epoch": 1}', np.uint8))
    assert checkpoint.read(str(good))[2] == {"epoch": 1}
    blob = good.read_bytes()
    broken = {"empty": b"", "truncated": blob[:len(blob) // 2], "tail_cut": blob[:-20], "text": b"not an npz"}
    for name, data in broken.items():
        (tmp_path / f"{name}.npz").write_bytes(data)
    np.save(open(tmp_path / "array.npz", "wb"), np.ones(3))
    np.savez(tmp_path / "no_state.npz", weight_0000=np.ones(3))
    np.savez(tmp_path / "pickled.npz", state_json=np.array([{"epoch": 1}], dtype=object))
    for name in [*broken, "array", "no_state", "pickled"]:
        with pytest.raises(UserError, match=f"{name}.npz is not a readable checkpoint .*: empty, truncated"):
            checkpoint.read(str(tmp_path / f"{name}.npz"))


# ------------------------------------------------------------------ CSV
def _read(text):
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("device, environ, message", [
    ("gpu", {}, "--device gpu: TensorFlow sees no GPU on this node"),
    ("auto", {"CUDA_VISIBLE_DEVICES": "0"}, "this node has GPUs (CUDA_VISIBLE_DEVICES=0) but TensorFlow sees none"),
])
def test_predict_refuses_a_gpu_it_cannot_use_instead_of_running_on_the_cpu(tmp_path, monkeypatch, device, environ,
                                                                             message):
    """Predict chooses its device as the trainers do: no silent CPU fallback on a node with GPUs."""
    import argparse
    from training import prediction
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    good = tmp_path / "good.npz"
    np.savez(good, weight_0000=np.ones(3), state_json=np.frombuffer(b'{"epoch": 1}', np.uint8))
    args = argparse.Namespace(checkpoint=str(good), device=device, precision="checkpoint")
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        prediction.read_checkpoint(args, argparse.Namespace(check_checkpoint=lambda state, path: None))


def test_every_csv_quotes_names_with_commas_and_quotes(tmp_path):
    from chexnet import auc
    from chexnet.grading import write_predictions
    from segmentation import metrics
    name = 'scan, "left".png'
    assert _read(paths.csv_text(["image", "p"], [[name, "0.5"]])) == [["image", "p"], [name, "0.5"]]
    labels, probs = np.array([[0, 1], [1, 0], [1, 1]]), np.array([[0.2, 0.9], [0.7, 0.1], [0.6, 0.8]])
    write_predictions(str(tmp_path / "p.csv"), [name, "b", "c"], probs, labels, ["A,1", "B"])
    rows = _read((tmp_path / "p.csv").read_text())
    assert rows[0] == ["image", "p_A,1", "p_B", "y_A,1", "y_B"] and rows[1][0] == name and len(rows[1]) == 5
    roc = _read(auc.roc_csv(labels, probs, ["A,1", "B"]))
    assert {r[0] for r in roc[1:]} == {"A,1", "B"} and {len(r) for r in roc} == {4}
    table = _read(auc.csv_text(auc.auc_table(labels, probs, ["A,1", "B"], n_boot=5)))
    assert [r[0] for r in table[1:]] == ["A,1", "B", "Mean (2 classes)"]
    header, per_image = metrics.per_image_rows([name], np.array([[2, 1, 1, 5]]))
    assert _read(paths.csv_text(header, per_image))[1][:2] == [name, f"{2 / 3:.6f}"]
    assert _read(metrics.csv_text(metrics.table(np.array([[2, 1, 1, 5]]), n_boot=5)))[1][0] == "dice"


# ------------------------------------------------------------------ reading images as the writers do
def test_predict_reads_an_x_ray_with_the_writers_function_and_rejects_what_it_rejects(tmp_path):
    from chexnet.preprocess import read_stored
    gray = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    files = {"gray.png": gray, "rgba.png": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA), "gray.tif": gray,
             "deep.png": gray.astype(np.uint16) * 200, "deep.tif": gray.astype(np.uint16) * 200,
             "wide.png": np.zeros((64, 80), np.uint8), "tiny.png": np.zeros((16, 16), np.uint8)}
    for name, img in files.items():
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    for name in ("gray.png", "rgba.png", "gray.tif"):
        stored = read_stored(str(tmp_path / name), 32)
        assert stored.shape == (32, 32, 1) and np.array_equal(stored[..., 0], load_gray(str(tmp_path / "gray.png"), 32))
    for name in ("deep.png", "deep.tif", "wide.png"):  # 16-bit and non-square: by the writers' rule
        assert np.array_equal(read_stored(str(tmp_path / name), 32)[..., 0], load_gray(str(tmp_path / name), 32))
    for name in ("tiny.png", "empty.png", "notes.png"):
        with pytest.raises(Rejected) as writer:
            load_gray(str(tmp_path / name), 32)
        with pytest.raises(Rejected) as predictor:
            read_stored(str(tmp_path / name), 32)
        assert str(predictor.value) == str(writer.value), name
    with pytest.raises(Rejected, match="^missing: no such file$"):
        read_stored(str(tmp_path / "gone.png"), 32)


def test_predict_reads_a_frame_as_the_kvasir_writer_does(tmp_path):
    from dataprep.kvasir_seg.tfrecords import read_pair
    from segmentation.predict import read_frame
    frame = np.random.default_rng(1).integers(0, 255, (20, 30, 4), dtype=np.uint8).astype(np.uint16) * 250
    cv2.imwrite(str(tmp_path / "f.png"), frame)  # 16-bit BGRA: the writer reads it as 8-bit BGR
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((20, 30), np.uint8))
    image, _ = read_pair({"image": str(tmp_path / "f.png"), "mask": str(tmp_path / "m.png")})
    assert np.array_equal(read_frame(str(tmp_path / "f.png")), image)
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((8, 30, 3), np.uint8))
    with pytest.raises(Rejected, match="^too small: 30x8$"):
        read_frame(str(tmp_path / "small.png"))
    (tmp_path / "bad.jpg").write_text("no")
    with pytest.raises(Rejected, match="unreadable or corrupt"):
        read_frame(str(tmp_path / "bad.jpg"))


# ------------------------------------------------------------------ flags
@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "--batch must be 1 to 65536, got 0"),
    (["--batch", "65537"], "--batch must be 1 to 65536, got 65537"),
    (["--cam", "--cam-top-k", "0"], "--cam-top-k must be >= 1, got 0"),
    (["--out", "p.txt"], "the predictions are a CSV table; give a file name ending in .csv"),
])
def test_predict_flags_are_bounded_in_one_line(tmp_path, capsys, flags, message):
    from chexnet import predict
    scan = tmp_path / "scan.png"
    cv2.imwrite(str(scan), np.zeros((40, 40), np.uint8))
    out = ["--out", str(tmp_path / "p.csv")] if "--out" not in flags else []
    with pytest.raises(SystemExit) as stop:
        predict.main(["--checkpoint", str(tmp_path / "none.npz"), *out, *flags, str(scan)])
    assert stop.value.code == 2 and capsys.readouterr().err.strip().endswith(message)


def _fake_run(tmp_path, name="run"):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"data_dir": str(tmp_path / "no-data")}}))
    return run


def test_a_read_only_run_folder_stops_evaluate_while_parsing_its_flags(tmp_path):
    """Before Horovod starts or a split is graded (the flags' ranges are tests/test_flag_bounds.py's)."""
    from runtime.config import parse_args
    from training.evaluation import EvalConfig
    run = _fake_run(tmp_path)
    parse_args(EvalConfig, ["--run", str(run), "--split", "val,test"])
    with read_only_folder(tmp_path / "ro", [run / "config.json"]) as ro:
        with pytest.raises(UserError, match=f"^--run {ro}: {ro} is on a read-only file system: pick a writable "
                                            f"--run$"):
            parse_args(EvalConfig, ["--run", str(ro)])


@pytest.mark.parametrize("trainer", ["chexnet", "segmentation"])
def test_evaluate_refuses_a_bad_flag_before_tensorflow_loads(tmp_path, trainer):
    run = _fake_run(tmp_path)
    code = (f"import sys\nfrom {trainer} import evaluate\ntry:\n    evaluate.main(sys.argv[1:])\n"
            "except SystemExit:\n    print('tensorflow' in sys.modules)\n")
    proc = run_job([sys.executable, "-c", code, "--run", str(run), "--split", "bogus"], timeout=120)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr[-2000:]
    assert proc.stderr.startswith("error: --split 'bogus': give train, val or test"), proc.stderr[-2000:]


def test_evaluate_takes_its_checkpoint_from_the_run_then_a_path_and_a_folder_for_its_best(tmp_path):
    from runtime.config import parse_args
    from training.evaluation import EvalConfig, locate
    run, other = _fake_run(tmp_path), _fake_run(tmp_path, "other")
    (run / "best.npz").write_bytes(b"")
    (other / "best.npz").write_bytes(b"")
    assert locate(parse_args(EvalConfig, ["--run", str(run)]), "t") == (str(run / "best.npz"), None)
    path, note = locate(parse_args(EvalConfig, ["--run", str(run), "--checkpoint", str(other)]), "t")
    assert path == str(other / "best.npz") and note.startswith(f"--checkpoint {other} is a run folder")
    with pytest.raises(UserError, match=f"^--checkpoint last.npz: neither {run / 'last.npz'} nor last.npz exists"):
        locate(parse_args(EvalConfig, ["--run", str(run), "--checkpoint", "last.npz"]), "t")


# ------------------------------------------------------------------ real processes
@pytest.fixture(scope="module")
def cx_checkpoint(tmp_path_factory):
    """An untrained CheXNet at crop 32 of 40 px records, saved as chexnet.train saves (float32): predict's
    checks and files do not depend on what it learned."""
    import tf_keras as keras
    from chexnet import model as cx_model
    from dataprep.chestxray14.facts import CLASSES
    from training import checkpoint
    run = tmp_path_factory.mktemp("cx-run")
    model = cx_model.build_model(32, len(CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    checkpoint.save(str(run / "best.npz"), model, {
        "epoch": 1, "step": 0, "lr": 1e-3, "classes": list(CLASSES), "stored_size": 40, "crop": 32,
        "output": cx_model.OUTPUT_KIND, "precision": "float32"})
    return run


def _predict(*args, expect_rc=None):
    return run_job([sys.executable, "-m", "chexnet.predict", *FLOAT32, *args], timeout=300, expect_rc=expect_rc)


NO_TF = ("import sys\nfrom chexnet import predict\ntry:\n    predict.main(sys.argv[1:])\nexcept SystemExit:\n"
         "    print('tensorflow loaded' if 'tensorflow' in sys.modules else 'tensorflow not loaded')\n")


@pytest.mark.slow
def test_chexnet_predict_keeps_the_inputs_accounts_for_every_image_and_replaces_only_when_told(cx_checkpoint,
                                                                                              tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(2)
    for name in ("scan1.png", "scan2.png", "a, b.png"):
        cv2.imwrite(str(scans / name), rng.integers(0, 255, (80, 80), dtype=np.uint8))
    cv2.imwrite(str(scans / "deep.tif"), rng.integers(0, 4000, (80, 80), dtype=np.uint16))
    cv2.imwrite(str(scans / "wide.png"), rng.integers(0, 255, (80, 100), dtype=np.uint8))
    cv2.imwrite(str(scans / "tiny.png"), rng.integers(0, 255, (20, 100), dtype=np.uint8))
    write_dicom(scans / "IM0001", rng.integers(0, 4000, (90, 80)).astype(np.uint16), "MONOCHROME1")
    write_dicom(scans / "frames.dcm", rng.integers(0, 4000, (2, 80, 80)).astype(np.uint16))
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    images = [str(scans)]  # the folder: its image files, the DICOM without extension too
    # The CSV name forgotten: the first scan would be the CSV. Refused before TensorFlow loads.
    forgot = run_job([sys.executable, "-c", NO_TF, "--checkpoint", str(cx_checkpoint), "--out",
                      str(scans / "scan1.png"), str(scans / "scan1.png"), str(scans / "scan2.png")], timeout=120)
    assert forgot.stdout.strip() == "tensorflow not loaded"
    assert forgot.stderr.strip() == (f"error: {scans / 'scan1.png'} (--out) is one of the input images: writing it "
                                     "would destroy the image; write the outputs elsewhere (nothing was done)")
    out = tmp_path / "new" / "preds.csv"
    proc = _predict("--checkpoint", str(cx_checkpoint), "--out", str(out), *images, expect_rc=1)
    assert f"is a run folder: using its best checkpoint, {cx_checkpoint / 'best.npz'}" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == [str(scans / n) for n in ("IM0001", "a, b.png", "deep.tif", "scan1.png",
                                                                   "scan2.png", "wide.png")]
    assert all(len(r) == 15 and 0 < float(r["Hernia"]) < 1 for r in rows)
    assert proc.stderr.strip().splitlines()[-2:] == [
        f"error: {scans / 'frames.dcm'}: multi-frame DICOM (2 frames): give one X-ray per file",
        f"error: {scans / 'tiny.png'}: unexpected size 100x20: smaller than 32x32"]
    again = _predict("--checkpoint", str(cx_checkpoint), "--out", str(out), str(scans / "scan1.png"), expect_rc=2)
    assert _one_line_error(again).endswith("(--out) already exists: pass --overwrite to replace, or write elsewhere "
                                           "(nothing was done)")
    _predict("--checkpoint", str(cx_checkpoint), "--out", str(out), "--overwrite", str(scans / "scan1.png"),
             expect_rc=0)
    assert [r["image"] for r in csv.DictReader(out.open())] == [str(scans / "scan1.png")]
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before
    assert sorted(os.listdir(out.parent)) == ["preds.csv"]  # no temporary file left


@pytest.mark.slow
def test_segmentation_predict_never_writes_over_a_frame_and_takes_a_run_folder(resunetpp_run, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("f1.png", "f2.png", "x, y.jpg"):
        cv2.imwrite(str(frames / name), np.random.default_rng(3).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    pngs = [str(frames / "f1.png"), str(frames / "f2.png")]
    base = [sys.executable, "-m", "segmentation.predict", *FLOAT32, "--checkpoint", str(resunetpp_run["run"])]
    over = run_job([*base, "--out-dir", str(frames), *pngs], timeout=120, expect_rc=2)
    assert _one_line_error(over) == (f"error: {frames / 'f1.png'} (the mask of {frames / 'f1.png'}) is one of the "
                                     "input images: writing it would destroy the image; write the outputs "
                                     "elsewhere (nothing was done)")
    out = tmp_path / "masks" / "new"
    proc = run_job([*base, "--out-dir", str(out), *pngs, str(frames / "x, y.jpg")], timeout=300)
    assert "is a run folder: using its best checkpoint" in proc.stdout
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [(r["image"], r["mask"]) for r in rows] == [
        (str(frames / n), str(out / m)) for n, m in (("f1.png", "f1.png"), ("f2.png", "f2.png"),
                                                     ("x, y.jpg", "x, y.png"))]
    assert cv2.imread(str(out / "x, y.png"), cv2.IMREAD_GRAYSCALE).shape == (40, 56)
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before


def _evaluate(module, run, *flags, expect_rc=2):
    return run_job([sys.executable, "-m", module, "--run", str(run), *FLOAT32, *flags], timeout=300,
                   expect_rc=expect_rc)


@pytest.mark.slow
def test_evaluate_refuses_bad_checkpoints_and_a_read_only_run_before_any_work(resunetpp_run, cx_checkpoint,
                                                                              tmp_path):
    seg_run = resunetpp_run["run"]
    broken = _fake_run(tmp_path, "broken")
    (broken / "best.npz").write_bytes((seg_run / "last.npz").read_bytes()[:5000])
    foreign = _fake_run(tmp_path, "foreign")
    shutil.copy(cx_checkpoint / "best.npz", foreign / "best.npz")
    with read_only_folder(tmp_path / "ro", [seg_run / "config.json", seg_run / "last.npz"]) as ro, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {"broken": pool.submit(_evaluate, "segmentation.evaluate", broken),
                "foreign": pool.submit(_evaluate, "segmentation.evaluate", foreign),
                "cx foreign": pool.submit(_evaluate, "chexnet.evaluate", broken, "--checkpoint", str(seg_run)),
                "read-only": pool.submit(_evaluate, "segmentation.evaluate", ro, "--checkpoint", "last.npz",
                                         "--split", "val")}
        lines = {name: _one_line_error(job.result()) for name, job in jobs.items()}
    assert lines["broken"].startswith(f"error: {broken / 'best.npz'} is not a readable checkpoint (")
    assert lines["foreign"] == (f"error: {foreign / 'best.npz'} is not a checkpoint of segmentation.train: pass a "
                                "run of that trainer")
    assert lines["cx foreign"].startswith(f"error: {seg_run / 'best.npz'} is not a checkpoint of chexnet.train")
    assert lines["read-only"] == f"error: --run {ro}: {ro} is on a read-only file system: pick a writable --run"
    assert sorted(os.listdir(broken)) == ["best.npz", "config.json"]  # no eval folder, no metrics.jsonl
