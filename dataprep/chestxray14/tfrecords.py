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
4. Rank 0 writes manifest.json: per split the image, patient and shard counts
   and class prevalence; the class order; every shard's count and SHA-256; and
   every rejected image with its reason. The counts must add up to the CSV.
"""
import argparse
import dataclasses
import logging
import os
import sys
import time

import cv2
import numpy as np

from dataprep import records, shards
from dataprep.chestxray14 import facts, metadata
from dataprep.shards import Rejected
from runtime.errors import UserError, main_guard

log = logging.getLogger("tfrecords")
SPLITS = ("train", "val", "test")
MIN_SIDE = 32


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

    def fingerprint(self):
        """What a shard's contents depend on: a changed value makes old shards stale."""
        return {"image_size": self.image_size, "encoding": self.encoding,
                "val_fraction": self.val_fraction, "seed": self.seed}


# ------------------------------------------------------------------ images
def load_gray(path, image_size):
    """The image at ``path`` as (image_size, image_size) uint8, or Rejected(reason)."""
    if not os.path.exists(path):
        raise Rejected("missing: no such file after extraction")
    if os.path.getsize(path) == 0:
        raise Rejected("empty file (0 bytes)")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise Rejected("unreadable or corrupt image (OpenCV could not decode it)")
    if img.dtype != np.uint8:
        raise Rejected(f"unexpected mode: {img.dtype} pixels, expected 8-bit")
    if img.ndim == 3 and img.shape[2] in (3, 4):
        # A few real images are RGBA (or RGB) copies of a gray image: same content.
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    elif img.ndim != 2:
        raise Rejected(f"unexpected mode: array of shape {img.shape}")
    h, w = img.shape
    if h != w:
        raise Rejected(f"unexpected size {w}x{h}: expected a square image")
    if h < MIN_SIDE:
        raise Rejected(f"unexpected size {w}x{h}: smaller than {MIN_SIDE}x{MIN_SIDE}")
    if h != image_size:
        # Area interpolation averages the pixels it merges: no aliasing on downscaling.
        img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return img


# ------------------------------------------------------------------ records
class Writer(shards.ShardWriter):
    """ChestX-ray14's part of the shard writer: one gray image and its 14-hot label per record."""

    METADATA_CHANGED = f"labels or patient ids of its images changed in {facts.CSV_NAME} since it was written"

    def __init__(self, images_dir, opts):
        self.images_dir, self.opts = images_dir, opts

    def fingerprint(self):
        return self.opts.fingerprint()

    def entries_sha256(self, entries):
        return shards.digest_json({"class_order": list(facts.CLASSES),
                                   "entries": [[e.name, e.patient, list(e.labels)] for e in entries]})

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
def build_manifest(sides, splits, csv_rejected, opts, named):
    rejected = list(csv_rejected) + [r for side in sides for r in side["rejected"]]
    manifest = {"dataset": "chestxray14", "class_order": list(facts.CLASSES),
                "options": opts.fingerprint(), "splits": {}, "rejected": rejected}
    by_name = {e.name: e for split in splits.values() for e in split}
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
    per_shard = opts.images_per_shard or max(1, int(opts.shard_mb * 1e6 // estimate_record_bytes(
        splits["train"] or splits["test"], images_dir, opts)))
    # Everything the CSV and the lists name, counted once: the total to account for.
    named = set(entries) | {r["name"] for r in csv_rejected}
    return splits, csv_rejected, images_dir, shards.plan_shards(splits, per_shard), len(named), per_shard


def parse_options(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with Data_Entry_2017.csv, the lists, images_all/")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train_val patients for validation")
    # Measured (benchmarks/README.md): raw decodes 4x faster than PNG at 1.9x the
    # size (64 KB a 256x256 record, ~7 GB for the real set) and, unlike JPEG, is lossless.
    shards.add_writer_options(p, "stored side; training crops 224 of 256",
                              "raw (default: lossless, fastest to read), png (lossless, half the size), "
                              "jpeg (lossy q95)")
    a = p.parse_args(argv)
    if not 32 <= a.image_size <= 4096:
        p.error(f"--image-size must be between 32 and 4096, got {a.image_size}")
    if not 0 <= a.val_fraction < 1:
        p.error(f"--val-fraction must be in [0, 1), got {a.val_fraction}")
    opts = Options(**vars(a))
    return dataclasses.replace(opts, out_dir=opts.out_dir or os.path.join(opts.data_dir, "tfrecords"))


@main_guard
def main(argv=None):
    opts = parse_options(argv)
    comm, rank, size = shards.start()
    started = time.time()
    splits, csv_rejected, images_dir, plan, named, per_shard = prepare(opts)
    if rank == 0:
        log.info("%s: %s; %d shards of about %d images, %d rank(s)", opts.data_dir,
                 ", ".join(f"{k} {len(v)} images" for k, v in splits.items()), len(plan), per_shard, size)
    sides = shards.write_all(Writer(images_dir, opts), plan, opts.out_dir, comm, opts.processes)
    if rank == 0:
        manifest = build_manifest(sides, splits, csv_rejected, opts, named)
        shards.save_manifest(opts.out_dir, manifest, started, sides)


if __name__ == "__main__":
    sys.exit(main())
