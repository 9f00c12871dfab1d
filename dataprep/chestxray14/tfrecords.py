"""Write ChestX-ray14 TFRecord shards and manifest.json, in parallel and resumably.

    python -m dataprep.chestxray14.tfrecords --data-dir data/chestxray14 --image-size 256
    mpirun -np 4 python -m dataprep.chestxray14.tfrecords --data-dir /shared/chestxray14

1. Reads Data_Entry_2017.csv and the official split lists; splits validation
   from train_val by patient (``--val-fraction``, ``--seed``); stops if any
   patient is in two splits.
2. Plans shards ``<split>-NNNNN-of-NNNNN.tfrecord`` of about ``--shard-mb`` MB
   and writes them with ``dataprep.shards`` (dealt to MPI ranks, ``--processes``
   local processes each, atomic, resumable). A shard whose patients or labels
   changed in the CSV is rewritten, with a warning.
3. Stops first, naming them, when official archives are not extracted (an
   unfinished download): ``--allow-partial`` writes such a subset on purpose,
   and the manifest records it. An output folder holding another data set's
   records is refused, never replaced.
4. Rank 0 writes manifest.json: per split the image, patient and shard counts
   and class prevalence; the class order; every shard's count and SHA-256; and
   every rejected image with its reason. The counts must add up to the CSV.
   From a realistic synthetic set (its planted_scores.csv vouched for by
   SYNTHETIC.json) each split also gets its ``ceiling`` (dataprep.ceiling).
"""
import dataclasses
import logging
import os
import sys
import time

import numpy as np

from dataprep import ceiling, extract, flags, records, shards
from dataprep.chestxray14 import facts, metadata
from dataprep.images import load_gray
from dataprep.shards import Rejected
from runtime.errors import UserError, main_guard

log = logging.getLogger("tfrecords")
DATASET = "chestxray14"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Options:
    data_dir: str
    out_dir: str
    image_size: int = 256
    encoding: str = "raw"
    val_fraction: float = 0.1
    seed: int = 0
    shard_mb: float = 150.0
    images_per_shard: int = 0
    processes: int = 0
    allow_partial: bool = False

    def fingerprint(self):
        """What a shard's contents depend on: a changed value makes old shards stale."""
        return {"image_size": self.image_size, "encoding": self.encoding,
                "val_fraction": self.val_fraction, "seed": self.seed}


# ------------------------------------------------------------------ records
class Writer(shards.ShardWriter):
    """ChestX-ray14's part of the shard writer: one gray image and its 14-hot label per record."""

    DATASET = DATASET
    METADATA_CHANGED = (f"labels or patient ids of its images changed in {facts.CSV_NAME} since it was written, "
                        f"or some of its images appeared on disk or vanished")

    def __init__(self, images_dir, opts):
        self.images_dir, self.opts = images_dir, opts

    def fingerprint(self):
        return self.opts.fingerprint()

    def entries_sha256(self, entries):
        held = {"class_order": list(facts.CLASSES), "entries": [[e.name, e.patient, list(e.labels)] for e in entries]}
        missing = [e.name for e in entries if not os.path.exists(os.path.join(self.images_dir, e.name))]
        if missing:  # an image extracted later (after --allow-partial) makes its shard stale
            held["missing"] = missing
        return shards.digest_json(held)

    def record(self, e):
        img = load_gray(os.path.join(self.images_dir, e.name), self.opts.image_size)
        payload = records.encode_image(img, self.opts.encoding)
        return records.serialize(payload, e.labels, e.name, e.patient, self.opts.encoding, self.opts.image_size)

    def name(self, e):
        return e.name


def estimate_record_bytes(entries, images_dir, opts, sample=16):
    sizes = []
    for e in entries[:sample * 4]:
        try:
            img = load_gray(os.path.join(images_dir, e.name), opts.image_size)
        except Rejected:
            continue
        sizes.append(len(records.encode_image(img, opts.encoding)) + 200)  # + proto fields
        if len(sizes) == sample:
            break
    return float(np.mean(sizes)) if sizes else float(opts.image_size ** 2)


# ------------------------------------------------------------------ manifest
def build_manifest(sides, splits, csv_rejected, opts, named, missing_archives):
    rejected = list(csv_rejected) + [r for side in sides for r in side["rejected"]]
    manifest = {"dataset": DATASET, "class_order": list(facts.CLASSES), "options": opts.fingerprint(),
                "allow_partial": opts.allow_partial, "archives_missing": missing_archives,
                "splits": {}, "rejected": rejected}
    by_name = {e.name: e for split in splits.values() for e in split}
    planted = ceiling.planted_file(opts.data_dir, ceiling.PLANTED_SCORES)
    scores = ceiling.read_scores(planted) if planted else None
    for split in SPLITS:
        split_sides = [s for s in sides if s["split"] == split]
        names = [n for s in split_sides for n in s["written"]]
        labels = np.array([by_name[n].labels for n in names], dtype=np.int64).reshape(-1, len(facts.CLASSES))
        manifest["splits"][split] = {
            "images": len(names),
            "patients": len({by_name[n].patient for n in names}),
            "shards": shards.shard_entries(split_sides),
            "positives": dict(zip(facts.CLASSES, labels.sum(0).tolist())),
            "prevalence": dict(zip(facts.CLASSES, (labels.mean(0) if len(names) else labels.sum(0) * 0.0).tolist())),
            "no_finding": int((labels.sum(1) == 0).sum()),
        }
        if scores is not None:  # a realistic synthetic set: the oracle's AUC on this split's written images
            manifest["splits"][split]["ceiling"] = ceiling.auc_ceiling(names, labels, scores, facts.CLASSES)
    manifest["counts"] = shards.check_accounted(sides, rejected, named, "the CSV and split lists")
    return manifest


# ------------------------------------------------------------------ entry point
def prepare(opts):
    """Splits and shard plan; identical on every rank (same files, same seed)."""
    entries, csv_rejected = metadata.read_entries(opts.data_dir)
    splits = metadata.assign_splits(entries, csv_rejected, opts.data_dir, opts.val_fraction, opts.seed)
    metadata.check_no_patient_leak(splits)
    splits = {k: shards.shuffled(splits[k], opts.seed + i) for i, k in enumerate(SPLITS)}
    images_dir = os.path.join(opts.data_dir, "images_all", "images")
    if not os.path.isdir(images_dir):
        raise UserError(f"{images_dir} not found: run extract_images.sh first")
    missing_archives = unextracted(opts.data_dir, images_dir)
    if missing_archives and not opts.allow_partial:
        count = sum(map(len, missing_archives.values()))
        raise UserError(f"{count} of {len(facts.ARCHIVES)} archives are not extracted into "
                        f"{os.path.dirname(images_dir)}, so their images would be rejected as missing: "
                        f"{extract.describe(missing_archives)}; finish download_dataset.sh and extract_images.sh, "
                        f"or pass --allow-partial to write this subset")
    per_shard = opts.images_per_shard or max(1, int(opts.shard_mb * 1e6 // estimate_record_bytes(
        splits["train"] or splits["test"], images_dir, opts)))
    # Everything the CSV and the lists name, counted once: the total to account for.
    named = set(entries) | {r["name"] for r in csv_rejected}
    plan = shards.plan_shards(splits, per_shard)
    return splits, csv_rejected, images_dir, plan, len(named), per_shard, missing_archives


def unextracted(data_dir, images_dir):
    """{why: [archive, ...]} of the official archives extract_images.sh has not extracted; {} when all are,
    and when the images came otherwise (no archive, .part or extraction record: nothing to compare)."""
    names = extract.expected_archives(DATASET)
    pending = [n for n in names if not os.path.isfile(extract.record_path(os.path.dirname(images_dir), n))]
    groups = extract.absent(data_dir, pending)
    if groups.get("not downloaded") == names:
        return {}
    absent = {n for listed in groups.values() for n in listed}
    downloaded = [n for n in pending if n not in absent]
    if downloaded:
        groups["downloaded, not extracted"] = downloaded
    return groups


def build_parser():
    p = flags.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with Data_Entry_2017.csv, the lists, images_all/")
    p.add_argument("--val-fraction", type=flags.bounded(float, least=0, below=1), default=0.1,
                   help="share of train_val patients for validation")
    p.add_argument("--allow-partial", action="store_true",
                   help="write although official archives are not extracted (a deliberate subset; recorded in "
                        "manifest.json); their images are rejected as missing")
    # raw: the fastest to decode and lossless, at about twice PNG's size (benchmarks/README.md).
    shards.add_writer_options(p, "stored side; training crops 224 of 256",
                              "raw (default: lossless, fastest to read), png (lossless, half the size), "
                              "jpeg (lossy q95)", most_size=4096)
    return p


@main_guard
@shards.exits_on_interrupt
def main(argv=None):
    opts, check_only = shards.parse_writer_options(build_parser(), Options, argv)
    shards.refuse_foreign(opts.out_dir, DATASET)
    if check_only:
        return
    comm, rank, size = shards.start()
    started = time.time()
    splits, csv_rejected, images_dir, plan, named, per_shard, missing_archives = prepare(opts)
    if rank == 0:
        log.info("%s: %s; %d shards of about %d images, %d rank(s)", opts.data_dir,
                 ", ".join(f"{k} {len(v)} images" for k, v in splits.items()), len(plan), per_shard, size)
        if missing_archives:
            log.warning("--allow-partial: archives not extracted (%s); their images are rejected as missing",
                        extract.describe(missing_archives))
    sides = shards.write_all(Writer(images_dir, opts), plan, opts.out_dir, comm, opts.processes)
    if rank == 0:
        manifest = build_manifest(sides, splits, csv_rejected, opts, named, missing_archives)
        shards.save_manifest(opts.out_dir, manifest, started, sides)


if __name__ == "__main__":
    sys.exit(main())
