"""Write Kvasir-SEG TFRecord shards and manifest.json, in parallel and resumably.

    python -m dataprep.kvasir_seg.tfrecords --data-dir data/kvasir-seg --image-size 256
    python -m dataprep.kvasir_seg.tfrecords --data-dir data/kvasir-seg --split random --seed 1

1. Pairs ``Kvasir-SEG/images/<id>.jpg`` with ``Kvasir-SEG/masks/<id>.jpg``.
2. Splits: ``official`` (default) reads ``train.txt`` and ``val.txt`` beside
   the zip (the download stage puts the official 880/120 lists there; the
   synthetic mirror its own), falling back to the shipped official lists;
   ``random`` draws a seeded 80/10/10 train/val/test over every pair on disk,
   as the ResUNet++ paper did. The manifest records which, with the lists'
   SHA-256. Lists that name none of the ids on disk (a user's own images)
   are refused, suggesting ``--split random``.
3. Each record: the image resized by area to ``--image-size`` squared, and its
   mask binarised (> 127: masks are JPEG) then resized by nearest neighbour,
   so it stays 0/1. Shards are written by ``dataprep.shards`` (dealt to MPI
   ranks, atomic, resumable).
4. Every id is accounted for: written, or rejected with a reason (image
   without mask, mask without image, sizes that differ, unreadable, listed but
   neither file on disk, on disk but in no list, listed twice or in both lists).
5. From a realistic synthetic set (planted_masks.zip vouched for by
   SYNTHETIC.json) each split gets its ``ceiling``: the planted masks'
   Dice against the records' masks, per image, averaged (dataprep.ceiling).
"""
import dataclasses
import hashlib
import logging
import os
import sys
import time
import zipfile

import cv2
import numpy as np

from dataprep import ceiling, flags, records, shards
from dataprep.kvasir_seg import facts
from dataprep.shards import Rejected
from runtime.errors import UserError, main_guard
from segmentation.metrics import confusion_counts

log = logging.getLogger("tfrecords")
DATASET = "kvasir-seg"
RANDOM_SHARES = (0.8, 0.1, 0.1)  # train, val, test: the ResUNet++ paper's split
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # any case; the real set is all .jpg
MIN_SIDE = 16


@dataclasses.dataclass
class Options:
    data_dir: str
    out_dir: str
    image_size: int = 256
    encoding: str = "raw"
    split: str = "official"
    seed: int = 0
    images_per_shard: int = 0
    shard_mb: float = 150.0
    processes: int = 0

    def fingerprint(self):
        """What a shard's contents depend on: a changed value makes old shards stale."""
        return {"image_size": self.image_size, "encoding": self.encoding, "split": self.split, "seed": self.seed}


# ------------------------------------------------------------------ one pair
def read_pair(paths):
    """(BGR uint8 image, uint8 0/1 mask) at full size from {"image": path, "mask": path}, or Rejected(reason)."""
    for what, path in paths.items():
        if not os.path.exists(path):
            raise Rejected(f"{what} missing: {path} does not exist")
        if os.path.getsize(path) == 0:
            raise Rejected(f"{what} is an empty file (0 bytes)")
    img = cv2.imread(paths["image"], cv2.IMREAD_COLOR)
    mask = cv2.imread(paths["mask"], cv2.IMREAD_GRAYSCALE)
    for what, arr in (("image", img), ("mask", mask)):
        if arr is None:
            raise Rejected(f"{what} unreadable or corrupt (OpenCV could not decode it)")
    if img.shape[:2] != mask.shape:
        raise Rejected(f"image is {img.shape[1]}x{img.shape[0]} but its mask {mask.shape[1]}x{mask.shape[0]}")
    if min(mask.shape) < MIN_SIDE:
        raise Rejected(f"too small: {mask.shape[1]}x{mask.shape[0]}")
    # JPEG masks carry grey noise at the edges: threshold before anything else. A
    # mask saved as a 0/1 label map (max 1; PNG exports of other tools) would be
    # all background under that threshold: its foreground is every non-zero pixel.
    threshold = 0 if mask.max() == 1 else facts.MASK_THRESHOLD
    return img, (mask > threshold).astype(np.uint8)


def resize_pair(img, mask, size):
    """Area for the image (no aliasing), nearest for the mask (stays 0/1; bilinear would blur it)."""
    return (cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA),
            cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))


class Writer(shards.ShardWriter):
    """Kvasir-SEG's part of the shard writer: an RGB image and its 0/1 mask per record.

    ``pairs``: {id: {"image": path, "mask": path}} of every complete pair.
    """

    DATASET = DATASET
    METADATA_CHANGED = "an image or mask file of it changed on disk since it was written"

    def __init__(self, pairs, opts):
        self.pairs, self.opts = pairs, opts
        self.planted = ceiling.planted_file(opts.data_dir, ceiling.PLANTED_MASKS)

    def fingerprint(self):
        return self.opts.fingerprint()

    def entries_sha256(self, entries):
        # Ids, and the size and modification time of both files: a corrected mask
        # under the same name makes its shard stale.
        held = [[name, *(file_stamp(self.pairs[name][k]) for k in ("image", "mask"))] for name in entries]
        if self.planted:  # the oracle's counts in the sidecar depend on the planted masks too
            held.append(file_stamp(self.planted))
        return shards.digest_json(held)

    def read(self, name):
        """(BGR image, 0/1 mask) of ``name`` at full size, or Rejected(reason)."""
        return read_pair(self.pairs[name])

    def record(self, name):
        img, mask = resize_pair(*self.read(name), self.opts.image_size)
        mask_encoding = "raw" if self.opts.encoding == "raw" else "png"  # masks stay lossless
        blob = records.serialize_segmentation(records.encode_image(img, self.opts.encoding),
                                              records.encode_image(mask, mask_encoding), name,
                                              self.opts.encoding, mask_encoding, self.opts.image_size)
        stats = {"foreground": float(mask.mean())}
        if self.planted:
            stats["oracle"] = self.oracle_counts(name, mask)
        return blob, stats

    def oracle_counts(self, name, mask):
        """tp, fp, fn, tn of the planted mask, resized as masks are, against the record's ``mask``; None
        for an image the planted masks do not hold."""
        with zipfile.ZipFile(self.planted) as z:  # opened per record: no handle is shared across forks
            if f"{name}.png" not in z.namelist():
                return None
            png = np.frombuffer(z.read(f"{name}.png"), np.uint8)
        planted = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 127
        planted = cv2.resize(planted.astype(np.uint8), mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
        return confusion_counts(mask[None], planted[None].astype(np.float32) - 0.5)[0].tolist()

    def name(self, name):
        return name


def file_stamp(path):
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


# ------------------------------------------------------------------ splits
def files_by_id(folder, what, extensions=IMAGE_EXTENSIONS):
    """({id: path} of the image files in ``folder``, rejected entries for every other file)."""
    found, rejected = {}, []
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in extensions:
            rejected.append({"name": f"{what}/{f}", "reason": f"not an image ({', '.join(extensions)})"})
        elif stem in found:
            rejected.append({"name": f"{what}/{f}", "reason": f"a second {what[:-1]} for id {stem}; "
                                                              f"{os.path.basename(found[stem])} is used"})
        else:
            found[stem] = os.path.join(folder, f)
    return found, rejected


def pair_files(images_dir, masks_dir):
    """({id: {"image": path, "mask": path}} of complete pairs, rejected entries for everything else)."""
    images, rejected = files_by_id(images_dir, facts.IMAGES)
    masks, more = files_by_id(masks_dir, facts.MASKS)
    rejected += more
    rejected += [{"name": n, "reason": "image without a mask in masks/"} for n in sorted(images.keys() - masks)]
    rejected += [{"name": n, "reason": "mask without an image in images/"} for n in sorted(masks.keys() - images)]
    return {n: {"image": images[n], "mask": masks[n]} for n in sorted(images.keys() & masks)}, rejected


def split_lists(data_dir):
    """{split: ids} from train.txt/val.txt beside the zip, else the shipped official lists; and their source."""
    here = {s: os.path.join(data_dir, f) for s, f in facts.SPLIT_LISTS.items()}
    if all(os.path.isfile(p) for p in here.values()):
        return {s: facts.read_list(p) for s, p in here.items()}, f"lists in {data_dir}"
    log.info("no train.txt/val.txt in %s: using the official lists shipped in %s", data_dir, facts.SHIPPED_SPLITS)
    return {s: facts.official_split(s) for s in facts.SPLIT_LISTS}, "official lists shipped with the project"


def assign_official(paired, data_dir, unpaired):
    """Splits from the lists; every listed or paired id placed once or rejected.

    ``unpaired``: ids already rejected for a missing image or mask (not rejected twice).
    """
    lists, source = split_lists(data_dir)
    refuse_disjoint(lists, source, set(paired), data_dir)
    splits, rejected = assign_lists(lists, paired, unpaired)
    digest = {s: hashlib.sha256("".join(n + "\n" for n in ids).encode()).hexdigest() for s, ids in lists.items()}
    return splits, rejected, {"kind": "official", "source": source, "lists_sha256": digest}


def assign_lists(lists, paired, unpaired):
    """({split: ids on disk}, rejected) from {split: listed ids}: every listed or paired id placed once or
    rejected (listed twice, listed but not on disk, on disk but in no list)."""
    splits, rejected, seen = {s: [] for s in lists}, [], {}
    for split, ids in lists.items():
        for name in ids:
            if name in seen:
                rejected.append({"name": name, "reason": f"listed again in {split} (first in {seen[name]})"})
                continue
            seen[name] = split
            splits[split].append(name)
    on_disk = set(paired)
    for split, ids in splits.items():
        missing = [n for n in ids if n not in on_disk and n not in unpaired]
        rejected += [{"name": n, "reason": f"in the {split} list but on disk neither as image nor as mask"}
                     for n in missing]
        splits[split] = [n for n in ids if n in on_disk]
    rejected += [{"name": n, "reason": "on disk but in neither split list"} for n in paired if n not in seen]
    return splits, rejected


def refuse_disjoint(lists, source, on_disk, data_dir):
    """Stop when the lists name none of the pairs on disk: they belong to another set of images."""
    listed = {n for ids in lists.values() for n in ids}
    if on_disk and not listed & on_disk:
        raise UserError(f"the split lists ({source}) name none of the {len(on_disk)} image/mask pairs on disk "
                        f"(such as {min(on_disk)}): these are not the images the lists are for; use --split random "
                        f"for a seeded 80/10/10 split, or put your own train.txt and val.txt in {data_dir}")


def assign_random(paired, seed):
    """A seeded 80/10/10 train/val/test over the pairs on disk."""
    order = [paired[i] for i in np.random.default_rng(seed).permutation(len(paired))]
    n_train, n_val = round(RANDOM_SHARES[0] * len(order)), round(RANDOM_SHARES[1] * len(order))
    splits = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return splits, [], {"kind": "random", "shares": list(RANDOM_SHARES), "seed": seed}


# ------------------------------------------------------------------ manifest
def build_manifest(sides, splits, pre_rejected, opts, split_info, named, dataset=DATASET):
    rejected = list(pre_rejected) + [r for side in sides for r in side["rejected"]]
    manifest = {"dataset": dataset, "options": opts.fingerprint(), "split": split_info,
                "splits": {}, "rejected": rejected}
    for split in splits:
        split_sides = [s for s in sides if s["split"] == split]
        fg = [side["stats"][n]["foreground"] for side in split_sides for n in side["written"]]
        manifest["splits"][split] = {
            "images": len(fg), "shards": shards.shard_entries(split_sides),
            "foreground_fraction": float(np.mean(fg)) if fg else 0.0,
            "empty_masks": int(sum(f == 0 for f in fg)),
        }
        oracle = [side["stats"][n].get("oracle") for side in split_sides for n in side["written"]]
        if oracle and all(c is not None for c in oracle):  # a realistic synthetic set: its best achievable Dice
            manifest["splits"][split]["ceiling"] = ceiling.dice_ceiling(oracle)
    manifest["counts"] = shards.check_accounted(sides, rejected, named, "the image and mask folders and the lists")
    return manifest


# ------------------------------------------------------------------ entry point
def prepare(opts):
    """Splits and shard plan; identical on every rank (same files, same seed)."""
    root = os.path.join(opts.data_dir, facts.TOP)
    images_dir, masks_dir = os.path.join(root, facts.IMAGES), os.path.join(root, facts.MASKS)
    for folder in (images_dir, masks_dir):
        if not os.path.isdir(folder):
            raise UserError(f"{folder} not found: run extract_images.sh --dataset kvasir-seg first")
    pairs, rejected = pair_files(images_dir, masks_dir)
    paired = sorted(pairs)
    if opts.split == "official":
        splits, more, info = assign_official(paired, opts.data_dir, {r["name"] for r in rejected})
    else:
        splits, more, info = assign_random(paired, opts.seed)
    rejected += more
    splits, plan, named = plan_pairs(splits, rejected, opts)
    return splits, rejected, info, pairs, plan, named


def plan_pairs(splits, rejected, opts):
    """(splits in their seeded order, the shard plan, how many ids were named): the same on every rank."""
    named = len({r["name"] for r in rejected} | {n for ids in splits.values() for n in ids})
    splits = {k: shards.shuffled(v, opts.seed + i) for i, (k, v) in enumerate(splits.items())}
    # A raw record holds 4 bytes a pixel (RGB + mask) and a few hundred of fields;
    # png or jpeg records are smaller, so their shards come out under --shard-mb.
    per_shard = opts.images_per_shard or max(1, int(opts.shard_mb * 1e6 // (4 * opts.image_size ** 2 + 300)))
    return splits, shards.plan_shards(splits, per_shard), named


def build_parser():
    p = flags.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with Kvasir-SEG/ (extracted) and the split lists")
    p.add_argument("--split", choices=["official", "random"], default="official",
                   help="official 880/120 lists (default) or a seeded random 80/10/10")
    add_record_options(p)
    return p


def add_record_options(p):
    """The shard writer's flags, with the segmentation records' sizes and encodings."""
    shards.add_writer_options(p, "stored side (ResUNet++ trains at 256)",
                              "image encoding: raw (default, fastest to read), png, jpeg; masks are always lossless",
                              most_size=2048)


@main_guard
@shards.exits_on_interrupt
def main(argv=None):
    opts, check_only = shards.parse_writer_options(build_parser(), Options, argv)
    shards.refuse_foreign(opts.out_dir, DATASET)
    if check_only:
        return
    comm, rank, size = shards.start()
    started = time.time()
    splits, rejected, info, pairs, plan, named = prepare(opts)
    if rank == 0:
        log.info("%s: %s split: %s; %d shards, %d rank(s)", opts.data_dir, opts.split,
                 ", ".join(f"{k} {len(v)} pairs" for k, v in splits.items()), len(plan), size)
    sides = shards.write_all(Writer(pairs, opts), plan, opts.out_dir, comm, opts.processes)
    if rank == 0:
        manifest = build_manifest(sides, splits, rejected, opts, info, named)
        shards.save_manifest(opts.out_dir, manifest, started, sides)


if __name__ == "__main__":
    sys.exit(main())
