"""Images as hospitals have them (dataprep.images): DICOM, 16-bit, non-square, by one rule for writers and predict."""
import glob
import json
import os

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from dataprep import images
from dataprep.shards import Rejected
from dicom_files import NAME, write_dicom
from helpers import run_job

def ramp(h=40, w=48):
    return (np.arange(h * w, dtype=np.uint16).reshape(h, w) * 7).astype(np.uint16)


# ------------------------------------------------------------------ the rule, file by file
def test_bundled_dicoms_are_read_with_modality_lut_and_window():
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    from pydicom.pixels import apply_voi_lut
    windowed = apply_voi_lut(mr.pixel_array, mr).astype(np.float64)  # pydicom's own windowing, its output range
    lo, hi = -(2 ** 15), 2 ** 15 - 1  # signed 16-bit: pydicom's y range
    expected = np.rint((windowed - lo) * 255 / (hi - lo))
    got = images.read_8bit(get_testdata_file("MR_small.dcm"))
    assert got.dtype == np.uint8 and got.shape == (64, 64)
    assert np.abs(got.astype(int) - expected).max() <= 1 and got.max() - got.min() > 150
    # The same pixels RLE-compressed (a bundled file): decoded by pydicom itself, identical.
    assert np.array_equal(images.read_8bit(get_testdata_file("MR_small_RLE.dcm")), got)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # rescale slope 1, intercept -1024, no window
    hu = ct.pixel_array.astype(np.float64) - 1024
    assert np.array_equal(images.read_8bit(get_testdata_file("CT_small.dcm")),
                          np.rint((hu - hu.min()) * 255 / (hu.max() - hu.min())).astype(np.uint8))
    assert images.dicom_patient(get_testdata_file("CT_small.dcm")) == "1CT1"


def test_written_dicom_window_rescale_monochrome1_and_rle(tmp_path):
    # stored 0..: modality value = 2 * stored - 100; window 1000 +- 500 covers stored 300..800
    stored = np.array([[0, 300, 550, 800, 5000] * 8] * 40, np.uint16)
    tags = dict(RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1000, WindowWidth=1001)
    write_dicom(tmp_path / "m2.dcm", stored, **tags)
    got = images.read_8bit(str(tmp_path / "m2.dcm"))
    assert got[0, :5].tolist() == [0, 0, 128, 255, 255]
    write_dicom(tmp_path / "m1", stored, "MONOCHROME1", **tags)  # no extension: known by its DICM marker
    assert np.array_equal(images.read_8bit(str(tmp_path / "m1")), 255 - got)
    ds = pydicom.dcmread(tmp_path / "m2.dcm")
    ds.compress(RLELossless)  # pydicom's own RLE encoder: no plugin needed
    ds.save_as(tmp_path / "rle.dcm")
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(images.read_8bit(str(tmp_path / "rle.dcm")), got)
    lut = pydicom.Dataset()  # a VOI LUT wins over the window: 4 entries from stored 100, 8 bits out
    lut.LUTDescriptor = [4, 100, 8]
    lut.add_new(0x00283006, "US", [0, 51, 204, 255])
    stored = np.tile(np.array([50, 100, 101, 102, 103, 500, 0, 0], np.uint16), (40, 5))
    write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[lut], WindowCenter=10, WindowWidth=4)
    assert images.read_8bit(str(tmp_path / "lut.dcm"))[0, :6].tolist() == [0, 0, 51, 204, 255, 255]
    write_dicom(tmp_path / "plain.dcm", ramp())  # no window: its own range
    plain = images.read_8bit(str(tmp_path / "plain.dcm"))
    assert plain.min() == 0 and plain.max() == 255


def test_refused_dicoms_and_images_have_reasons(tmp_path):
    write_dicom(tmp_path / "frames.dcm", np.stack([ramp(), ramp()]))
    write_dicom(tmp_path / "tiny.dcm", ramp(20, 60))
    write_dicom(tmp_path / "cut.dcm", ramp())
    (tmp_path / "cut.dcm").write_bytes((tmp_path / "cut.dcm").read_bytes()[:-1000])  # a transfer cut short
    (tmp_path / "header.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 20)
    reasons = {"frames.dcm": "multi-frame DICOM (2 frames): give one X-ray per file",
               "tiny.dcm": "unexpected size 60x20: smaller than 32x32",
               "cut.dcm": "DICOM pixel data not decodable (Explicit VR Little Endian: ",
               "header.dcm": "DICOM without pixel data (not an image)"}
    for name, reason in reasons.items():
        with pytest.raises(Rejected, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
            images.load_gray(str(tmp_path / name), 32)
    colour = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    assert colour.PhotometricInterpretation in ("RGB", "YBR_FULL")
    with pytest.raises(Rejected, match="expected a grayscale X-ray"):
        images.load_gray(get_testdata_file("SC_rgb_small_odd.dcm"), 32)


def test_16_bit_and_non_square_pngs_by_the_rule_and_8_bit_squares_unchanged(tmp_path):
    deep = np.tile(np.array([1000, 1001, 1500, 2000], np.uint16), (36, 9))
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert images.read_8bit(str(tmp_path / "deep.png"))[0, :4].tolist() == [0, 0, 128, 255]  # 0.255 -> 0, 127.5 -> 128
    wide = np.full((40, 47), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    padded = images.square(images.read_8bit(str(tmp_path / "wide.png")))
    assert padded.shape == (47, 47) and (padded[3:43] == 200).all() and not padded[:3].any() and not padded[43:].any()
    assert images.pad_offset(wide.shape) == (0, 3)
    gray = np.random.default_rng(0).integers(0, 256, (96, 96), np.uint8)  # ChestX-ray14's kind: as before
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    assert np.array_equal(images.load_gray(str(tmp_path / "gray.png"), 96), gray)
    assert np.array_equal(images.load_gray(str(tmp_path / "gray.png"), 32),
                          cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA))


def test_one_function_for_both_writers_and_predict(tmp_path):
    from chexnet import preprocess
    from dataprep.chestxray14 import tfrecords as cx
    from dataprep.csv_set import tfrecords as own
    assert cx.load_gray is own.load_gray is preprocess.load_gray is images.load_gray
    (tmp_path / "sub").mkdir()
    write_dicom(tmp_path / "sub" / "IM0001", ramp())
    for name in ("a.png", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert images.image_files([str(tmp_path), "given.txt"]) == [
        str(tmp_path / "a.png"), str(tmp_path / "sub" / "IM0001"), "given.txt"]


# ------------------------------------------------------------------ through the CSV writer
def test_csv_writer_writes_dicom_16_bit_and_non_square_as_predict_reads_them(tmp_path):
    import tensorflow as tf
    from chexnet.preprocess import read_stored
    from dataprep import records
    src = tmp_path / "xrays"
    src.mkdir()
    rng = np.random.default_rng(3)
    write_dicom(src / "a.dcm", rng.integers(0, 4096, (50, 40)).astype(np.uint16), "MONOCHROME1", patient="anon-1",
                WindowCenter=2048, WindowWidth=3000)
    write_dicom(src / "b.dcm", ramp(), patient="anon-1")
    write_dicom(src / "frames.dcm", np.stack([ramp(), ramp()]))
    cv2.imwrite(str(src / "deep.png"), rng.integers(0, 65536, (48, 48)).astype(np.uint16))
    cv2.imwrite(str(src / "wide.png"), rng.integers(0, 256, (40, 60)).astype(np.uint8))
    names = ["a.dcm", "b.dcm", "frames.dcm", "deep.png", "wide.png"]
    (src / "labels.csv").write_text("Path,Edema\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names)))
    run_job(["bash", "write_tfrecords.sh", "--dataset", "csv", "--csv", str(src / "labels.csv"), "--images", str(src),
             "--out", str(tmp_path / "out"), "--image-column", "Path", "--label-columns", "Edema", "--no-patient",
             "--image-size", "32", "--processes", "1", "--val-fraction", "0", "--test-fraction", "0"], timeout=120)
    tf_dir = tmp_path / "out" / "csv" / "tfrecords"
    text = (tf_dir / "manifest.json").read_text()
    m = json.loads(text)
    assert {r["name"]: r["reason"] for r in m["rejected"]} == {
        "frames.dcm": "multi-frame DICOM (2 frames): give one X-ray per file"}
    assert m["patients"] == "DICOM PatientID, else the image"
    assert m["counts"]["written"] == 4 and m["splits"]["train"]["patients"] == 3  # a.dcm, b.dcm: one patient
    held = {}
    for path in sorted(glob.glob(str(tf_dir / "*.tfrecord"))):
        raw = open(path, "rb").read()
        assert NAME.encode() not in raw  # only the pseudonymous PatientID travels
        for rec in tf.data.TFRecordDataset(path):
            img, _, name, patient = records.parse(rec, 1)
            held[name.numpy().decode()] = (img.numpy()[..., 0], patient.numpy().decode())
    assert NAME not in text
    assert held["a.dcm"][1] == held["b.dcm"][1] == "anon-1" and held["deep.png"][1] == "deep.png"
    for name in ("a.dcm", "deep.png", "wide.png"):  # predict's reader gives the record's pixels
        assert np.array_equal(read_stored(os.path.join(src, name), 32)[..., 0], held[name][0]), name


def test_the_export_graph_pads_non_square_images_as_the_writers_do(tmp_path):
    import tensorflow as tf
    from training import image_graph
    read = tf.function(lambda data, size: image_graph.area_resize(image_graph.pad_square(
        image_graph.decode(data, 1)[0]), size))
    rng = np.random.default_rng(4)
    for h, w, size in ((40, 47, 32), (90, 64, 48), (33, 100, 64), (64, 64, 32)):
        path = str(tmp_path / f"{h}x{w}.png")
        cv2.imwrite(path, rng.integers(0, 256, (h, w), np.uint8))
        got = read(tf.constant(open(path, "rb").read()), size).numpy()[..., 0]
        assert np.array_equal(got, images.load_gray(path, size)), (h, w, size)
