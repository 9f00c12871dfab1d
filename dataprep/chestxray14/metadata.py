"""Read Data_Entry_2017.csv and the official split lists; split validation by patient.

    entries, rejected = read_entries("data/chestxray14")
    splits = assign_splits(entries, rejected, "data/chestxray14", val_fraction=0.1, seed=0)
    splits["val"][0]   # Entry(name='00000013_005.png', patient='00000013', labels=(0, 1, ...))
    check_no_patient_leak(splits)

Every CSV row ends up in exactly one split or in ``rejected`` with a reason,
and so does every name of the split lists without a CSV row. The patient is
the CSV's ``Patient ID`` column (numbers written with 8 digits, as NIH's file
names carry them); a name that starts with an 8-digit patient must agree with
the column, or the read stops naming the line.
"""
import collections
import csv
import os

import numpy as np

from dataprep.chestxray14 import facts
from runtime.errors import UserError

Entry = collections.namedtuple("Entry", "name patient labels")


def parse_labels(field):
    """'Effusion|Mass' -> 14-hot tuple in class order; raises ValueError on an unknown label."""
    found = set(field.split("|")) - {facts.NO_FINDING, ""}
    unknown = found - set(facts.CLASSES)
    if unknown:
        raise ValueError(f"unknown label(s) {sorted(unknown)}")
    return tuple(int(c in found) for c in facts.CLASSES)


def check_header(path, header):
    """The columns the rows are read by: names up to View Position, then the count (the two last
    names differ between copies of the file, and some end with an empty column)."""
    expected = next(csv.reader([facts.CSV_HEADER]))
    found = next(csv.reader([header]))
    while found and found[-1].strip() in ("", "Unnamed: 11"):
        found.pop()
    if found[:7] != expected[:7] or len(found) != len(expected):
        raise UserError(f"{path}: header is {header[:160]!r}, expected {facts.CSV_HEADER!r}: a column is "
                        f"missing, renamed or added; use the NIH release's Data_Entry_2017.csv")


def patient_of(row, path, lineno):
    """The row's patient: its Patient ID column, checked against the 8-digit patient its name starts with."""
    name, column = row[0].strip(), row[3].strip()
    in_name = facts.patient_in_name(name)
    if in_name is not None and not (column.isdigit() and int(column) == int(in_name)):
        raise UserError(f"{path} line {lineno}: {name} is named for patient {in_name} but its Patient ID column "
                        f"says {column!r}: correct the column or the name, then rerun")
    return f"{int(column):08d}" if column.isdigit() else column


def read_entries(folder):
    """CSV rows -> ({name: Entry}, [rejections]). Rejected: bad row, unknown label, no patient, duplicate."""
    path = os.path.join(folder, facts.CSV_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: place Data_Entry_2017.csv from the NIH release beside "
                        f"the archives (or run download_dataset.sh --synthetic N)")
    entries, rejected = {}, []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = fh.readline().strip()
        check_header(path, header)
        for lineno, row in enumerate(csv.reader(fh), start=2):
            if not row:
                continue
            # Some copies end rows with a comma: a 12th, empty field.
            if len(row) == facts.CSV_FIELDS_PER_ROW + 1 and row[-1] == "":
                row = row[:-1]
            name = row[0].strip()
            if len(row) != facts.CSV_FIELDS_PER_ROW:
                rejected.append({"name": name, "reason": f"CSV line {lineno} has {len(row)} fields, expected 11"})
                continue
            try:
                labels = parse_labels(row[1])
            except ValueError as err:
                rejected.append({"name": name, "reason": f"CSV line {lineno}: {err}"})
                continue
            if name in entries:
                rejected.append({"name": name, "reason": f"CSV line {lineno}: duplicate row, first kept"})
                continue
            patient = patient_of(row, path, lineno)
            if not patient:
                rejected.append({"name": name, "reason": f"CSV line {lineno}: empty Patient ID"})
                continue
            entries[name] = Entry(name, patient, labels)
    return entries, rejected


def read_list(folder, fname):
    path = os.path.join(folder, fname)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: place {fname} from the NIH release beside the archives")
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def split_patients(patients, val_fraction, seed):
    """The validation patients: a seeded ``val_fraction`` of ``patients`` (at least one)."""
    ordered = sorted(set(patients))
    if val_fraction <= 0:
        return set()
    n_val = min(len(ordered) - 1, max(1, int(round(len(ordered) * val_fraction))))
    rng = np.random.default_rng(seed)
    return set(rng.choice(ordered, size=n_val, replace=False).tolist())


def assign_splits(entries, rejected, folder, val_fraction, seed):
    """{'train'|'val'|'test': [Entry]}; names not placeable are appended to ``rejected``."""
    train_val = read_list(folder, facts.TRAIN_VAL_LIST)
    test = read_list(folder, facts.TEST_LIST)
    in_both = set(train_val) & set(test)
    listed = {}
    for split, names in (("train_val", train_val), ("test", test)):
        for name in names:
            if name in in_both:
                continue
            if name not in entries:
                rejected.append({"name": name, "reason": f"listed in {split}_list but has no row in {facts.CSV_NAME}"})
                continue
            listed[name] = split
    for name in sorted(in_both):
        if name in entries:
            rejected.append({"name": name, "reason": "listed in both train_val_list.txt and test_list.txt"})
    for name in sorted(set(entries) - set(listed) - in_both):
        rejected.append({"name": name, "reason": "in the CSV but in neither split list"})

    tv_entries = [entries[n] for n in sorted(listed) if listed[n] == "train_val"]
    val_patients = split_patients([e.patient for e in tv_entries], val_fraction, seed)
    return {
        "train": [e for e in tv_entries if e.patient not in val_patients],
        "val": [e for e in tv_entries if e.patient in val_patients],
        "test": [entries[n] for n in sorted(listed) if listed[n] == "test"],
    }


def check_no_patient_leak(splits):
    """Raise UserError if any patient has images in two splits, naming them and the fix.

    Validation is split from train_val by patient, so a leak comes from the lists:
    one image of a patient in train_val_list.txt and another in test_list.txt.
    """
    first = collections.defaultdict(dict)  # patient -> {split: its first image there}
    for split, items in splits.items():
        for e in items:
            first[e.patient].setdefault(split, e.name)
    leaks = sorted(p for p, where in first.items() if len(where) > 1)
    if not leaks:
        return
    source = {"train": facts.TRAIN_VAL_LIST, "val": facts.TRAIN_VAL_LIST, "test": facts.TEST_LIST}
    patient = leaks[0]
    where = ", ".join(f"{name} in {split} ({source.get(split, split)})"
                      for split, name in first[patient].items())
    others = ", ".join(leaks[1:6]) + (", ..." if len(leaks) > 6 else "")
    more = f"; {len(leaks) - 1} more patient(s) too: {others}" if len(leaks) > 1 else ""
    raise UserError(f"patient {patient} has images in two splits: {where}{more}. "
                    f"Each patient must be in one split: move all of a patient's images into either "
                    f"{facts.TRAIN_VAL_LIST} or {facts.TEST_LIST}, then rerun")
