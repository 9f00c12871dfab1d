"""Read the user's CSV: image, labels, patient and split of each row (no TensorFlow).

    spec = Columns(image="Path", label_columns=("Edema", "Effusion"), patient="Patient", uncertain="ignore")
    entries, rejected, classes = read_csv("labels.csv", spec)
    entries[0]     # Entry(name='p1/a.png', patient='p1', labels=(1, -1), split=None)

Labels come from one ``|``-separated column (the names found, or ``classes``)
or from one column a class holding 1 (positive), 0 (negative), -1 or blank
(uncertain, as CheXpert writes them). The uncertain policy: ``zeros`` and
``ones`` make them negative or positive, ``ignore`` stores -1, which the loss
and the AUC leave out. Every row is an entry or a rejection with its reason.
"""
import collections
import csv
import os

import numpy as np

from dataprep import flags
from runtime.errors import UserError

Entry = collections.namedtuple("Entry", "name patient labels split")
UNCERTAIN = ("zeros", "ones", "ignore")
IGNORED = -1  # stored label of an uncertain finding under --uncertain ignore
NO_FINDING = ("No Finding", "")
SPLITS = ("train", "val", "test")
POSITIVE, NEGATIVE, UNSURE = ("1", "1.0"), ("0", "0.0"), ("-1", "-1.0", "")


class Columns:
    """Which CSV columns hold what (the flags of the writer)."""

    def __init__(self, image, label_column=None, label_columns=(), patient=None, split=None, classes=(),
                 uncertain="zeros"):
        self.image, self.label_column, self.label_columns = image, label_column, tuple(label_columns)
        self.patient, self.split, self.classes, self.uncertain = patient, split, tuple(classes), uncertain

    def named(self):
        return [c for c in (self.image, self.label_column, *self.label_columns, self.patient, self.split) if c]


def read_rows(path, columns):
    """(header, [(line number, {column: value})]) of ``path``; the named columns must exist."""
    if not os.path.isfile(path):
        raise UserError(f"--csv {path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in columns.named() if c not in header]
        if missing:
            raise UserError(f"{path}: no column {missing[0]!r} (its columns: {', '.join(header[:20])}): "
                            f"pass the column's name as written in the header")
        rows = [(n, {(k or "").strip(): (v or "").strip() for k, v in row.items()})
                for n, row in enumerate(reader, start=2)]
    return header, rows


def class_list(rows, columns):
    """The classes: --classes, else the label columns, else every name the label column holds (sorted)."""
    if columns.classes:
        return list(columns.classes)
    if columns.label_columns:
        return list(columns.label_columns)
    found = {x.strip() for _, row in rows for x in row[columns.label_column].split("|")}
    return sorted(found - set(NO_FINDING))


def parse_separated(field, classes):
    found = {x.strip() for x in field.split("|")} - set(NO_FINDING)
    unknown = found - set(classes)
    if unknown:
        raise ValueError(f"label(s) {sorted(unknown)} not among the classes (--classes)")
    return tuple(int(c in found) for c in classes)


def parse_columns(row, classes, policy):
    out = []
    for c in classes:
        value = row[c]
        if value in POSITIVE:
            out.append(1)
        elif value in NEGATIVE:
            out.append(0)
        elif value in UNSURE:
            out.append({"zeros": 0, "ones": 1, "ignore": IGNORED}[policy])
        else:
            raise ValueError(f"column {c!r} holds {value!r}: expected 1, 0, -1 or blank")
    return tuple(out)


def read_csv(path, columns):
    """CSV rows -> ([Entry], [rejections], classes). Rejected: empty image, bad label, no patient, bad split,
    duplicate image."""
    _, rows = read_rows(path, columns)
    classes = class_list(rows, columns)
    if columns.label_columns and columns.classes and set(columns.classes) - set(columns.label_columns):
        raise UserError(f"--classes names {sorted(set(columns.classes) - set(columns.label_columns))[0]!r}, "
                        f"which is not among --label-columns")
    if not classes:
        raise UserError(f"{path}: column {columns.label_column!r} names no class: pass --classes A,B,...")
    entries, rejected, seen = [], [], set()
    for lineno, row in rows:
        name = row[columns.image]
        where = f"CSV line {lineno}"
        if not name:
            rejected.append({"name": f"<{where}>", "reason": f"{where}: empty {columns.image!r}"})
            continue
        if name in seen:
            rejected.append({"name": name, "reason": f"{where}: duplicate row, first kept", "duplicate": True})
            continue
        seen.add(name)
        try:
            labels = (parse_columns(row, classes, columns.uncertain) if columns.label_columns
                      else parse_separated(row[columns.label_column], classes))
        except ValueError as err:
            rejected.append({"name": name, "reason": f"{where}: {err}"})
            continue
        patient = row[columns.patient] if columns.patient else name
        if not patient:
            rejected.append({"name": name, "reason": f"{where}: empty {columns.patient!r} (patient)"})
            continue
        split = row[columns.split].lower() if columns.split else None
        if columns.split and split not in SPLITS:
            rejected.append({"name": name, "reason": f"{where}: split {row[columns.split]!r} is not "
                                                     f"train, val or test"})
            continue
        entries.append(Entry(name, patient, labels, split))
    return entries, rejected, classes


def add_fraction_options(parser, unit, when=""):
    """--val-fraction and --test-fraction: the shares of ``unit`` (patients, images) a seeded split holds out."""
    for split, what in (("val", "validation"), ("test", "test")):
        parser.add_argument(f"--{split}-fraction", type=flags.bounded(float, least=0, below=1), default=0.1,
                            help=f"share of {unit} for {what}{when}")


def check_fractions(opts, unit):
    """The held-out shares leave ``unit`` to train on: one line otherwise."""
    if opts.val_fraction + opts.test_fraction >= 1:
        raise UserError(f"--val-fraction {opts.val_fraction} + --test-fraction {opts.test_fraction} must be "
                        f"below 1: training needs {unit} too")


def split_by_patient(entries, val_fraction, test_fraction, seed):
    """{'train'|'val'|'test': [Entry]}: the split column where given, else a seeded share of the patients
    for test and val (at least one each when its fraction is above 0 and patients remain)."""
    if entries and entries[0].split is not None:
        return {s: [e for e in entries if e.split == s] for s in SPLITS}
    patients = sorted({e.patient for e in entries})
    order = np.random.default_rng(seed).permutation(len(patients))
    n = len(patients)
    n_test = min(n - 1, max(1, round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = min(n - 1 - n_test, max(1, round(n * val_fraction))) if val_fraction > 0 else 0
    where = {}
    for rank, i in enumerate(order):
        where[patients[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return {s: [e for e in entries if where[e.patient] == s] for s in SPLITS}


def check_no_patient_leak(splits, source):
    """Refuse, naming the patient and its images, when one patient is in two splits (a split column's doing)."""
    first = collections.defaultdict(dict)
    for split, items in splits.items():
        for e in items:
            first[e.patient].setdefault(split, e.name)
    leaks = sorted(p for p, where in first.items() if len(where) > 1)
    if leaks:
        where = ", ".join(f"{name} in {split}" for split, name in first[leaks[0]].items())
        raise UserError(f"patient {leaks[0]} has images in two splits ({where}; {len(leaks)} patient(s) in all): "
                        f"put each patient's rows in one split in {source}, or drop the split column")
