"""Write ChestX-ray14 TFRecord shards and manifest.json, in parallel and resumably.

    python -m dataprep.chestxray14.tfrecords --data-dir data/chestxray14 --image-size 256
    mpirun -np 4 python -m dataprep.chestxray14.tfrecords --data-dir /shared/chestxray14

1. Reads Data_Entry_2017.csv and the official split lists; splits validation
   from train_val by patient (``--val-fraction``, ``--seed``); stops if any
   patient is in two splits.
2. Plans shards ``<split>-NNNNN-of-NNNNN.tfrecord`` of about ``--shard-mb`` MB
   (the remainder is spread over the shards: no image is dropped).
3. Shards are dealt round-robin to MPI ranks, and each rank writes its share
   with ``--processes`` local processes. A shard is written to a temporary name
   and renamed, with a record in ``.shards/`` (records, SHA-256, rejections).
   A rerun skips shards whose record matches the plan: the same options, byte
   size, image names, and patients and labels (``entries_sha256``). A shard
   whose labels changed in the CSV is rewritten, with a warning.
4. Rank 0 writes manifest.json: per split the image, patient and shard counts
   and class prevalence; the class order; every shard's count and SHA-256; and
   every rejected image with its reason. The counts must add up to the CSV.
"""
import argparse
import dataclasses
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time

import cv2
import numpy as np

from dataprep import records
from dataprep.chestxray14 import facts, metadata
from runtime.errors import UserError, main_guard
from runtime.files import atomic_write, write_json
from runtime.logs import setup_logging

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
class Rejected(Exception):
    pass


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


# ------------------------------------------------------------------ planning
@dataclasses.dataclass
class Shard:
    split: str
    index: int
    total: int
    entries: list

    @property
    def filename(self):
        return f"{self.split}-{self.index:05d}-of-{self.total:05d}.tfrecord"


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


def plan_shards(splits, per_shard):
    """Shards of each split; sizes differ by at most one, so no remainder is dropped."""
    shards = []
    for split in SPLITS:
        entries = splits[split]
        if not entries:
            continue
        n = max(1, int(np.ceil(len(entries) / per_shard)))
        for i, idx in enumerate(np.array_split(np.arange(len(entries)), n)):
            shards.append(Shard(split, i, n, [entries[j] for j in idx]))
    return shards


def shuffled(entries, seed):
    """Seeded order so each shard mixes patients and classes (a reader interleaves shards)."""
    order = np.random.default_rng(seed).permutation(len(entries))
    return [entries[i] for i in order]


# ------------------------------------------------------------------ writing
NOT_WRITTEN = "not written yet (or its write was interrupted)"


def _sidecar_path(out_dir, shard_file):
    return os.path.join(out_dir, ".shards", shard_file + ".json")


def entries_sha256(entries):
    """SHA-256 of what the records hold besides pixels: name, patient and labels, in order."""
    planned = {"class_order": list(facts.CLASSES),
               "entries": [[e.name, e.patient, list(e.labels)] for e in entries]}
    return hashlib.sha256(json.dumps(planned, separators=(",", ":")).encode()).hexdigest()


def shard_staleness(out_dir, shard, opts):
    """None if the shard on disk is what the plan asks for, else why it must be (re)written."""
    try:
        with open(_sidecar_path(out_dir, shard.filename), encoding="utf-8") as fh:
            side = json.load(fh)
        size = os.path.getsize(os.path.join(out_dir, shard.filename))
    except (OSError, ValueError):
        return NOT_WRITTEN
    if side.get("options") != opts.fingerprint():
        return f"written with other options {side.get('options')}, now {opts.fingerprint()}"
    if size != side.get("bytes"):
        return f"{size} bytes on disk, {side.get('bytes')} when written: truncated or altered"
    if side.get("planned") != [e.name for e in shard.entries]:
        return "it holds other images than the current plan"
    if "entries_sha256" not in side:
        return "written by an older version that did not record its labels; rewritten once"
    if side["entries_sha256"] != entries_sha256(shard.entries):
        return f"labels or patient ids of its images changed in {facts.CSV_NAME} since it was written"
    return None


def write_shard(job):
    """Write one shard; returns its sidecar dict. Runs in a worker process."""
    shard, images_dir, out_dir, opts, rank = job
    import tensorflow as tf  # here: workers only (the parent may fork/spawn them)
    final = os.path.join(out_dir, shard.filename)
    sidecar = _sidecar_path(out_dir, shard.filename)
    # Drop the old record first: a crash mid-write then leaves no record that
    # could vouch for the new bytes.
    if os.path.exists(sidecar):
        os.remove(sidecar)
    written, rejected = [], []

    def write_records(tmp):
        with tf.io.TFRecordWriter(tmp) as writer:
            for e in shard.entries:
                try:
                    img = load_gray(os.path.join(images_dir, e.name), opts.image_size)
                except Rejected as why:
                    rejected.append({"name": e.name, "split": shard.split, "reason": str(why)})
                    continue
                payload = records.encode_image(img, opts.encoding)
                writer.write(records.serialize(payload, e.labels, e.name, e.patient, opts.encoding,
                                               opts.image_size))
                written.append(e.name)

    atomic_write(final, write_records)  # temporary name, fsync, rename, fsync the folder
    side = {"file": shard.filename, "split": shard.split, "rank": rank, "records": len(written),
            "bytes": os.path.getsize(final), "sha256": sha256_of(final), "options": opts.fingerprint(),
            "planned": [e.name for e in shard.entries], "entries_sha256": entries_sha256(shard.entries),
            "written": written, "rejected": rejected}
    write_json(sidecar, side)
    return side


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ distribution
def mpi_comm():
    """COMM_WORLD when started by mpirun/srun with more than one rank, else None."""
    if not any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
        return None
    from mpi4py import MPI
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def local_processes(requested, comm):
    if requested > 0:
        return requested
    local = 1
    if comm is not None:
        from mpi4py import MPI
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()  # ranks on this node
    return max(1, (os.cpu_count() or 1) // local)


def write_my_shards(shards, images_dir, opts, rank, size, processes):
    """Write the shards dealt to ``rank`` (every size-th); skip complete ones."""
    mine = [s for i, s in enumerate(shards) if i % size == rank]
    todo = []
    for s in mine:
        why = shard_staleness(opts.out_dir, s, opts)
        if why is None:
            continue
        if why != NOT_WRITTEN:  # a first write is no news
            log.warning("rank %d: rewriting %s: %s", rank, s.filename, why)
        todo.append(s)
    if len(todo) < len(mine):
        log.info("rank %d: %d of its %d shards already complete, skipped", rank, len(mine) - len(todo), len(mine))
    if not todo:
        return
    jobs = [(s, images_dir, opts.out_dir, opts, rank) for s in todo]
    # spawn, not fork: the parent may hold MPI and TensorFlow state.
    with multiprocessing.get_context("spawn").Pool(min(processes, len(jobs))) as pool:
        for i, side in enumerate(pool.imap_unordered(write_shard, jobs), 1):
            log.info("rank %d [%d/%d] %s: %d records, %d rejected", rank, i, len(jobs), side["file"],
                     side["records"], len(side["rejected"]))


def remove_stale_shards(out_dir, shards):
    """Our own shard files from an earlier plan (other counts) would confuse a glob."""
    planned = {s.filename for s in shards}
    for path in glob.glob(os.path.join(out_dir, "*-?????-of-?????.tfrecord")):
        if os.path.basename(path) not in planned:
            log.warning("removing %s: not part of the current shard plan", path)
            os.remove(path)
            side = _sidecar_path(out_dir, os.path.basename(path))
            if os.path.exists(side):
                os.remove(side)


# ------------------------------------------------------------------ manifest
def build_manifest(shards, splits, csv_rejected, opts, named):
    sides = []
    for s in shards:
        with open(_sidecar_path(opts.out_dir, s.filename), encoding="utf-8") as fh:
            sides.append(json.load(fh))
    rejected = list(csv_rejected) + [r for side in sides for r in side["rejected"]]
    manifest = {"dataset": "chestxray14", "class_order": list(facts.CLASSES),
                "options": opts.fingerprint(), "splits": {}, "rejected": rejected}
    by_name = {e.name: e for split in splits.values() for e in split}
    written_total = 0
    for split in SPLITS:
        split_sides = [s for s in sides if s["split"] == split]
        names = [n for s in split_sides for n in s["written"]]
        labels = np.array([by_name[n].labels for n in names], dtype=np.int64).reshape(-1, len(facts.CLASSES))
        manifest["splits"][split] = {
            "images": len(names),
            "patients": len({by_name[n].patient for n in names}),
            "shards": [{"file": s["file"], "records": s["records"], "sha256": s["sha256"]} for s in split_sides],
            "positives": dict(zip(facts.CLASSES, labels.sum(0).tolist())),
            "prevalence": dict(zip(facts.CLASSES, (labels.mean(0) if len(names) else labels.sum(0) * 0.0).tolist())),
            "no_finding": int((labels.sum(1) == 0).sum()),
        }
        written_total += len(names)
    written_names = [n for side in sides for n in side["written"]]
    # A duplicate CSV row's image is written once and its second row rejected:
    # count names, and require each written exactly once.
    accounted = len(set(written_names) | {r["name"] for r in rejected})
    manifest["counts"] = {"named_images": named, "written": written_total,
                          "rejected": len(rejected), "accounted": accounted}
    if accounted != named or len(written_names) != len(set(written_names)):
        raise UserError(f"count mismatch: {named} images named in the CSV and split lists, "
                        f"{written_total} written + {len(rejected)} rejected; please report this")
    return manifest


# ------------------------------------------------------------------ entry point
def prepare(opts):
    """Splits and shard plan; identical on every rank (same files, same seed)."""
    entries, csv_rejected = metadata.read_entries(opts.data_dir)
    splits = metadata.assign_splits(entries, csv_rejected, opts.data_dir, opts.val_fraction, opts.seed)
    metadata.check_no_patient_leak(splits)
    splits = {k: shuffled(v, opts.seed + i) for i, (k, v) in enumerate(splits.items())}
    images_dir = os.path.join(opts.data_dir, "images_all", "images")
    if not os.path.isdir(images_dir):
        raise UserError(f"{images_dir} not found: run extract_images.sh first")
    per_shard = opts.images_per_shard or max(1, int(opts.shard_mb * 1e6 // estimate_record_bytes(
        splits["train"] or splits["test"], images_dir, opts)))
    # Everything the CSV and the lists name, counted once: the total to account for.
    named = set(entries) | {r["name"] for r in csv_rejected}
    return splits, csv_rejected, images_dir, plan_shards(splits, per_shard), len(named), per_shard


def parse_options(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with Data_Entry_2017.csv, the lists, images_all/")
    p.add_argument("--out-dir", default="", help="default: <data-dir>/tfrecords")
    p.add_argument("--image-size", type=int, default=256, help="stored side; training crops 224 of 256")
    # Measured (benchmarks/README.md): raw decodes 4x faster than PNG at 1.9x the
    # size (64 KB a 256x256 record, ~7 GB for the real set) and, unlike JPEG, is lossless.
    p.add_argument("--encoding", choices=records.ENCODINGS, default="raw",
                   help="raw (default: lossless, fastest to read), png (lossless, half the size), jpeg (lossy q95)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train_val patients for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-mb", type=float, default=150.0, help="target shard size (100-200 MB reads well)")
    p.add_argument("--images-per-shard", type=int, default=0, help="fixed shard length (overrides --shard-mb)")
    p.add_argument("--processes", type=int, default=0, help="local writer processes per rank (0: cores / local ranks)")
    a = p.parse_args(argv)
    if not 32 <= a.image_size <= 4096:
        p.error(f"--image-size must be between 32 and 4096, got {a.image_size}")
    if not 0 <= a.val_fraction < 1:
        p.error(f"--val-fraction must be in [0, 1), got {a.val_fraction}")
    return Options(a.data_dir, a.out_dir or os.path.join(a.data_dir, "tfrecords"), a.image_size,
                   a.encoding, a.val_fraction, a.seed, a.shard_mb, a.images_per_shard, a.processes)


@main_guard
def main(argv=None):
    opts = parse_options(argv)
    comm = mpi_comm()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
    setup_logging(rank)
    t0 = time.perf_counter()
    splits, csv_rejected, images_dir, shards, named, per_shard = prepare(opts)
    if rank == 0:
        os.makedirs(os.path.join(opts.out_dir, ".shards"), exist_ok=True)
        remove_stale_shards(opts.out_dir, shards)
        log.info("%s: %s; %d shards of about %d images, %d rank(s)", opts.data_dir,
                 ", ".join(f"{k} {len(v)} images" for k, v in splits.items()), len(shards), per_shard, size)
    if comm:
        comm.Barrier()  # the output folder exists before any rank writes
    write_my_shards(shards, images_dir, opts, rank, size, local_processes(opts.processes, comm))
    if comm:
        comm.Barrier()  # every shard is on disk before rank 0 reads the sidecars
    if rank == 0:
        manifest = build_manifest(shards, splits, csv_rejected, opts, named)
        write_json(os.path.join(opts.out_dir, "manifest.json"), manifest)
        c = manifest["counts"]
        log.info("manifest: %d written, %d rejected, of %d named; %s in %.1f s", c["written"], c["rejected"],
                 c["named_images"], os.path.join(opts.out_dir, "manifest.json"),
                 time.perf_counter() - t0)
        for r in manifest["rejected"][:20]:
            log.warning("rejected %s: %s", r["name"], r["reason"])


if __name__ == "__main__":
    sys.exit(main())
