"""The user's own X-rays from a CSV: the reader, the split, the flags and the writer (dataprep.csv_set)."""
import csv
import json

import numpy as np
import pytest

from chexnet import auc
from chexnet.losses import weighted_bce_numpy
from dataprep.csv_set import example, labels as csvlabels
from helpers import one_line_refusal, run_job
from runtime.errors import UserError


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def columns(**kw):
    return csvlabels.Columns(**dict(dict(image="Path", label_columns=("A", "B"), patient="Pt"), **kw))


@pytest.mark.parametrize("policy, expected", [("zeros", (0, 0)), ("ones", (1, 1)), ("ignore", (-1, -1))])
def test_uncertain_policy_maps_minus_one_and_blank(tmp_path, policy, expected):
    path = write_csv(tmp_path / "l.csv", ["Path", "Pt", "A", "B"], [["a.png", "p1", "-1", ""], ["b.png", "p1", "1", "0.0"]])
    entries, rejected, classes = csvlabels.read_csv(path, columns(uncertain=policy))
    assert classes == ["A", "B"] and not rejected
    assert entries[0].labels == expected and entries[1].labels == (1, 0)


def test_bad_rows_are_rejected_with_line_and_reason(tmp_path):
    path = write_csv(tmp_path / "l.csv", ["Path", "Pt", "A", "B"],
                     [["a.png", "p1", "1", "0"], ["a.png", "p1", "0", "0"], ["c.png", "", "1", "0"],
                      ["d.png", "p2", "maybe", "0"], ["", "p3", "1", "1"]])
    entries, rejected, _ = csvlabels.read_csv(path, columns())
    assert [e.name for e in entries] == ["a.png"]
    reasons = {r["name"]: r["reason"] for r in rejected}
    assert "line 3: duplicate row" in reasons["a.png"]
    assert "line 4: empty 'Pt'" in reasons["c.png"]
    assert "column 'A' holds 'maybe'" in reasons["d.png"]
    assert "line 6: empty 'Path'" in reasons["<CSV line 6>"]


def test_separated_labels_give_the_class_list_and_refuse_unknown_names(tmp_path):
    path = write_csv(tmp_path / "l.csv", ["Path", "Pt", "Findings"],
                     [["a.png", "p1", "Mass|Edema"], ["b.png", "p2", "No Finding"], ["c.png", "p3", "Odd"]])
    entries, _, classes = csvlabels.read_csv(path, columns(label_columns=(), label_column="Findings"))
    assert classes == ["Edema", "Mass", "Odd"] and entries[0].labels == (1, 1, 0) and entries[1].labels == (0, 0, 0)
    entries, rejected, classes = csvlabels.read_csv(
        path, columns(label_columns=(), label_column="Findings", classes=("Mass", "Edema")))
    assert classes == ["Mass", "Edema"] and entries[0].labels == (1, 1)
    assert rejected[0]["name"] == "c.png" and "['Odd'] not among the classes" in rejected[0]["reason"]


def test_missing_column_is_named(tmp_path):
    path = write_csv(tmp_path / "l.csv", ["Path", "Pt", "A"], [["a.png", "p1", "1"]])
    with pytest.raises(UserError, match="no column 'B'"):
        csvlabels.read_csv(path, columns())


def test_patient_split_is_seeded_and_keeps_each_patient_in_one_split():
    entries = [csvlabels.Entry(f"{p}-{k}.png", p, (0,), None) for p in map(str, range(40)) for k in range(3)]
    a = csvlabels.split_by_patient(entries, 0.2, 0.1, seed=3)
    assert a == csvlabels.split_by_patient(entries, 0.2, 0.1, seed=3) != csvlabels.split_by_patient(entries, 0.2, 0.1, 4)
    patients = {s: {e.patient for e in v} for s, v in a.items()}
    assert [len(patients[s]) for s in ("train", "val", "test")] == [28, 8, 4]
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    csvlabels.check_no_patient_leak(a, "l.csv")


def test_split_column_that_leaks_a_patient_is_refused(tmp_path):
    path = write_csv(tmp_path / "l.csv", ["Path", "Pt", "A", "B", "Fold"],
                     [["a.png", "p1", "1", "0", "train"], ["b.png", "p1", "0", "0", "test"],
                      ["c.png", "p2", "0", "0", "holdout"]])
    entries, rejected, _ = csvlabels.read_csv(path, columns(split="Fold"))
    assert "split 'holdout' is not train, val or test" in rejected[0]["reason"]
    with pytest.raises(UserError, match="patient p1 has images in two splits"):
        csvlabels.check_no_patient_leak(csvlabels.split_by_patient(entries, 0.1, 0.1, 0), "l.csv")


def test_ignored_labels_add_no_loss_and_no_auc_term():
    y = np.array([[1, 0], [0, -1], [1, 1], [0, 0], [-1, 1]], dtype=np.float64)
    p = np.array([[0.9, 0.1], [0.2, 0.99], [0.8, 0.7], [0.1, 0.3], [0.01, 0.6]])
    assert auc.per_class_auc(y, p)[0] == auc.per_class_auc(y[[0, 1, 2, 3]], p[[0, 1, 2, 3]])[0] == 1.0
    assert auc.per_class_auc(y, p)[1] == auc.per_class_auc(y[[0, 2, 3, 4]], p[[0, 2, 3, 4]])[1]
    logits = np.log(p / (1 - p))
    w = np.full(2, 0.5)
    moved = logits.copy()
    moved[y < 0] = [5.0, -5.0]  # another prediction where the label is ignored: the same loss
    assert weighted_bce_numpy(y, logits, w, w) == weighted_bce_numpy(y, moved, w, w)
    assert weighted_bce_numpy(np.clip(y, 0, 1), logits, w, w) != weighted_bce_numpy(np.clip(y, 0, 1), moved, w, w)
    # DeLong over the known labels of class 0 alone equals DeLong with the ignored row left in
    lo, hi, _ = auc.delong_ci(y, p)
    lo0, hi0, _ = auc.delong_ci(y[:4, :1], p[:4, :1])
    assert (lo[0], hi[0]) == (lo0[0], hi0[0])
    rows = auc.auc_table(y, p, ["a", "b"], n_boot=20)
    assert [r["positives"] for r in rows] == [2, 2, 4]  # -1 is not counted as -1 positive


def write(*args, expect_rc=0):
    return run_job(["bash", "write_tfrecords.sh", "--dataset", "csv", *args], timeout=120, expect_rc=expect_rc)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    example.generate(str(root / "xrays"), 14, 40, seed=1)
    return root


BASE = ["--image-column", "Path", "--label-columns", "Cardiomegaly,Edema,Effusion"]


@pytest.mark.parametrize("extra, expected", [
    ([], "--patient-column is required"),
    (["--patient-column", "Patient", "--label-column", "Edema"], "exactly one of --label-column"),
    (["--patient-column", "Ward"], "no column 'Ward'"),
    (["--patient-column", "Patient", "--val-fraction", "0.6", "--test-fraction", "0.5"], "must be below 1"),
    (["--patient-column", "Patient", "--uncertain", "half"], "argument --uncertain: invalid choice"),
    (["--patient-column", "Patient", "--test-fraction", "1"], "argument --test-fraction: must be a number >= 0"),
])
def test_flags_refused_in_one_line(own, extra, expected):
    proc = write("--csv", str(own / "xrays" / "labels.csv"), "--images", str(own / "xrays"), "--out",
                 str(own / "refused"), *BASE, *extra, expect_rc=2)
    one_line_refusal(proc, expected)
    assert not (own / "refused").exists()


def test_writer_accounts_for_every_row_and_records_classes(own):
    xrays = own / "xrays"
    with open(xrays / "labels.csv", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    (xrays / "more.csv").write_text("\n".join(lines + ["patients/none.png,pat-99,1,0,0"]) + "\n")
    (xrays / "patients" / "pat-01" / "study1.png").write_bytes(b"")  # an empty file: rejected
    write("--csv", str(xrays / "more.csv"), "--images", str(xrays), "--out", str(own / "out"), "--name", "mine",
          *BASE, "--patient-column", "Patient", "--uncertain", "ignore", "--image-size", "32", "--processes", "1",
          "--val-fraction", "0.25", "--test-fraction", "0.25")
    m = json.loads((own / "out" / "mine" / "tfrecords" / "manifest.json").read_text())
    assert m["dataset"] == "csv" and m["class_order"] == list(example.CLASSES)
    reasons = {r["name"]: r["reason"] for r in m["rejected"]}
    assert reasons == {"patients/none.png": "missing: no such file under --images",
                       "patients/pat-01/study1.png": "empty file (0 bytes)"}
    assert m["counts"] == {"named_images": 15, "written": 13, "rejected": 2, "accounted": 15}
    assert sum(s["images"] for s in m["splits"].values()) == 13
    assert sum(sum(s["ignored"].values()) for s in m["splits"].values()) == sum(
        line.split(",")[2:].count("-1") + line.split(",")[2:].count("") for line in lines[1:]
        if not line.startswith("patients/pat-01/study1.png"))
