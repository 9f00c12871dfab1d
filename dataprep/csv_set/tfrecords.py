"""Write a classification data set from the user's CSV and image folder: TFRecord shards and manifest.json.

    ./write_tfrecords.sh --dataset csv --csv labels.csv --images DIR --out OUT \
        --image-column Path --label-columns Edema,Effusion --patient-column Patient --uncertain ignore

Records and manifest go to OUT/csv/tfrecords (``--name NAME``: OUT/NAME/tfrecords),
in the ChestX-ray14 record format with the CSV's own class list, which the
manifest records and chexnet.train, evaluate and predict follow. Images are
read by the rule the ChestX-ray14 writer and chexnet.predict share (dataprep.images:
DICOM, 16-bit and non-square images included). With ``--no-patient``, a DICOM's
PatientID is its patient (no other DICOM tag is copied). The split is
the ``--split-column`` when given, else a seeded patient-level split; either
way a patient in two splits stops the writer. Every CSV row is written or
rejected with its reason in the manifest.
"""
import dataclasses
import logging
import os
import sys
import time

import numpy as np

from dataprep import flags, records, shards
from dataprep.chestxray14.tfrecords import estimate_record_bytes
from dataprep.images import dicom_patient, load_gray
from dataprep.csv_set import labels as csvlabels
from runtime.errors import UserError, main_guard

log = logging.getLogger("tfrecords")
DATASET = "csv"


@dataclasses.dataclass
class Options:
    data_dir: str
    out_dir: str
    csv: str = ""
    images: str = ""
    image_column: str = "Image Index"
    label_column: str = ""
    label_columns: str = ""
    patient_column: str = ""
    no_patient: bool = False
    split_column: str = ""
    classes: str = ""
    uncertain: str = "zeros"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    image_size: int = 256
    encoding: str = "raw"
    seed: int = 0
    shard_mb: float = 150.0
    images_per_shard: int = 0
    processes: int = 0

    def columns(self):
        return csvlabels.Columns(self.image_column, self.label_column or None, _names(self.label_columns),
                                 self.patient_column or None, self.split_column or None, _names(self.classes),
                                 self.uncertain)

    def fingerprint(self):
        return {"image_size": self.image_size, "encoding": self.encoding, "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "seed": self.seed, "uncertain": self.uncertain}


def _names(text):
    return tuple(x.strip() for x in text.split(",") if x.strip())


def check_options(opts):
    """The column flags agree and the files exist: one line before any work."""
    if bool(opts.label_column) == bool(opts.label_columns):
        raise UserError("give exactly one of --label-column COL (|-separated labels) or --label-columns A,B,...")
    if not opts.patient_column and not opts.no_patient:
        raise UserError("--patient-column is required so that no patient is in two splits; pass --no-patient "
                        "only if every image is its own patient")
    if opts.patient_column and opts.no_patient:
        raise UserError("--patient-column and --no-patient contradict each other: give one")
    csvlabels.check_fractions(opts, "patients")
    if not opts.csv:
        raise UserError("--csv PATH is required: the CSV with one row per image")
    if not os.path.isfile(opts.csv):
        raise UserError(f"--csv {opts.csv}: no such file")
    if not opts.images or not os.path.isdir(opts.images):
        raise UserError(f"--images {opts.images or '(not given)'}: no such folder (the CSV's image paths are "
                        f"relative to it)")


class Writer(shards.ShardWriter):
    """One gray image and its labels (0, 1, or -1 = ignored) in the CSV's class order per record."""

    DATASET = DATASET
    METADATA_CHANGED = "labels or patients of its images changed in the CSV since it was written"

    def __init__(self, opts, classes):
        self.opts, self.classes = opts, classes

    def fingerprint(self):
        return self.opts.fingerprint()

    def entries_sha256(self, entries):
        return shards.digest_json({"class_order": self.classes,
                                   "entries": [[e.name, e.patient, list(e.labels)] for e in entries]})

    def record(self, e):
        path = os.path.join(self.opts.images, e.name)
        if not os.path.exists(path):
            raise shards.Rejected("missing: no such file under --images")
        img = load_gray(path, self.opts.image_size)
        payload = records.encode_image(img, self.opts.encoding)
        return records.serialize(payload, e.labels, e.name, e.patient, self.opts.encoding, self.opts.image_size)

    def name(self, e):
        return e.name


def split_summary(names, by_name, classes):
    labels = np.array([by_name[n].labels for n in names], dtype=np.int64).reshape(-1, len(classes))
    known = labels >= 0
    positives = (labels == 1).sum(0)
    return {"images": len(names), "patients": len({by_name[n].patient for n in names}),
            "positives": dict(zip(classes, positives.tolist())),
            "ignored": dict(zip(classes, (~known).sum(0).tolist())),
            "prevalence": dict(zip(classes, (positives / np.maximum(known.sum(0), 1)).tolist()))}


def build_manifest(sides, splits, csv_rejected, opts, classes, named):
    rejected = list(csv_rejected) + [r for side in sides for r in side["rejected"]]
    manifest = {"dataset": DATASET, "class_order": classes, "options": opts.fingerprint(),
                "patient_column": opts.patient_column or None,
                "patients": "the CSV's column" if opts.patient_column else "DICOM PatientID, else the image",
                "splits": {}, "rejected": rejected}
    by_name = {e.name: e for split in splits.values() for e in split}
    for split in csvlabels.SPLITS:
        split_sides = [s for s in sides if s["split"] == split]
        names = [n for s in split_sides for n in s["written"]]
        manifest["splits"][split] = dict(split_summary(names, by_name, classes),
                                         shards=shards.shard_entries(split_sides))
    manifest["counts"] = shards.check_accounted(sides, rejected, named, opts.csv)
    return manifest


def prepare(opts):
    """Splits, classes and shard plan; identical on every rank (same files, same seed)."""
    entries, rejected, classes = csvlabels.read_csv(opts.csv, opts.columns())
    if opts.no_patient:
        entries = [with_dicom_patient(e, opts.images) for e in entries]
    named = len({e.name for e in entries} | {r["name"] for r in rejected})
    splits = csvlabels.split_by_patient(entries, opts.val_fraction, opts.test_fraction, opts.seed)
    csvlabels.check_no_patient_leak(splits, opts.csv)
    splits = {k: shards.shuffled(splits[k], opts.seed + i) for i, k in enumerate(csvlabels.SPLITS)}
    per_shard = opts.images_per_shard or max(1, int(opts.shard_mb * 1e6 // estimate_record_bytes(
        splits["train"] or entries, opts.images, opts)))
    return splits, rejected, classes, named, shards.plan_shards(splits, per_shard)


def with_dicom_patient(entry, images):
    """``entry`` with its DICOM's PatientID as patient, when it has one; else unchanged (its own patient)."""
    patient = dicom_patient(os.path.join(images, entry.name))
    return entry._replace(patient=patient) if patient else entry


def build_parser():
    p = flags.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the data set's folder (write_tfrecords.sh: OUT/NAME)")
    p.add_argument("--csv", required=True, help="CSV with one row per image")
    p.add_argument("--images", required=True, help="folder the CSV's image paths are relative to")
    p.add_argument("--image-column", default="Image Index", help="column of the image paths")
    p.add_argument("--label-column", default="", help="one column of |-separated labels ('No Finding' or "
                   "blank: none)")
    p.add_argument("--label-columns", default="", help="comma-separated columns, one a class: 1, 0, -1 or blank")
    p.add_argument("--patient-column", default="", help="column of the (pseudonymous) patient id")
    p.add_argument("--no-patient", action="store_true",
                   help="no patient column: a DICOM's PatientID, else each image its own patient")
    p.add_argument("--split-column", default="", help="column holding train, val or test (else a seeded "
                   "patient-level split)")
    p.add_argument("--classes", default="", help="comma-separated class list and order (default: from the data)")
    p.add_argument("--uncertain", choices=csvlabels.UNCERTAIN, default="zeros",
                   help="-1 or blank in --label-columns: negative, positive, or left out of loss and AUC")
    csvlabels.add_fraction_options(p, "patients")
    shards.add_writer_options(p, "stored side; training crops 224 of 256", "raw, png or jpeg", most_size=4096)
    return p


@main_guard
@shards.exits_on_interrupt
def main(argv=None):
    opts, check_only = shards.parse_writer_options(build_parser(), Options, argv)
    check_options(opts)
    shards.refuse_foreign(opts.out_dir, DATASET)
    if check_only:
        return
    comm, rank, size = shards.start()
    started = time.time()
    splits, rejected, classes, named, plan = prepare(opts)
    if rank == 0:
        log.info("%s: classes %s; %s; %d shards, %d rank(s)", opts.csv, ", ".join(classes),
                 ", ".join(f"{k} {len(v)} images" for k, v in splits.items()), len(plan), size)
    sides = shards.write_all(Writer(opts, classes), plan, opts.out_dir, comm, opts.processes)
    if rank == 0:
        shards.save_manifest(opts.out_dir, build_manifest(sides, splits, rejected, opts, classes, named),
                             started, sides)


if __name__ == "__main__":
    sys.exit(main())
