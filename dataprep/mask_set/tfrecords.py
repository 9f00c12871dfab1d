"""Write a segmentation data set from the user's image and mask folders: TFRecord shards and manifest.json.

    ./write_tfrecords.sh --dataset masks --images DIR --masks DIR --out OUT \
        --mask-suffix _mask --foreground 255 --val-fraction 0.1 --test-fraction 0.1 --seed 0

Records and manifest go to OUT/masks/tfrecords (``--name NAME``: OUT/NAME/tfrecords)
in the Kvasir-SEG record format, written by the Kvasir-SEG writer's code
(area resize of the image, nearest-neighbour resize of the 0/1 mask, the same
shards), so segmentation.train, evaluate and predict take them. Images pair
with masks by file stem (``a.png`` with ``a<suffix>.png``); the foreground
rule is dataprep.mask_set.pairs'. The split is ``--split-csv`` (rows
``name,split``) or ``--split-lists`` (train.txt, val.txt[, test.txt]) when
given, else a seeded random share per image. Every file
of both folders is written or rejected with its reason in the manifest.
"""
import dataclasses
import os
import sys
import time

from dataprep import flags, shards
from dataprep.csv_set.labels import Entry, add_fraction_options, check_fractions, split_by_patient
from dataprep.kvasir_seg import tfrecords as kvasir
from dataprep.mask_set import pairs as maskpairs
from runtime.errors import UserError, main_guard

DATASET = "masks"
MOST_LABEL = 65535  # a 16-bit label map's largest value


@dataclasses.dataclass
class Options:
    data_dir: str
    out_dir: str
    images: str = ""
    masks: str = ""
    mask_suffix: str = ""
    foreground: str = ""
    split_csv: str = ""
    split_lists: str = ""
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    image_size: int = 256
    encoding: str = "raw"
    seed: int = 0
    images_per_shard: int = 0
    shard_mb: float = 150.0
    processes: int = 0

    def split_kind(self):
        return "csv" if self.split_csv else "lists" if self.split_lists else "random"

    def foreground_values(self):
        return parse_foreground(self.foreground)

    def fingerprint(self):
        return {"image_size": self.image_size, "encoding": self.encoding, "mask_suffix": self.mask_suffix,
                "foreground": list(self.foreground_values()), "split": self.split_kind(),
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "seed": self.seed}


def parse_foreground(text):
    """``"3,4"`` -> (3, 4); a value outside 0..65535 or not an integer is a one-line refusal."""
    values = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        if not part.isdigit() or int(part) > MOST_LABEL:
            raise UserError(f"--foreground {text}: {part!r} is not an integer from 0 to {MOST_LABEL}; give the "
                            f"mask value(s) of the foreground, comma-separated (such as 255, or 3,4)")
        values.append(int(part))
    return tuple(sorted(set(values)))


def check_options(opts):
    """The folders and files exist and the fractions leave training images: one line before any work."""
    opts.foreground_values()
    for flag, folder in (("--images", opts.images), ("--masks", opts.masks)):
        if not folder or not os.path.isdir(folder):
            raise UserError(f"{flag} {folder or '(not given)'}: no such folder")
    if opts.split_csv and not os.path.isfile(opts.split_csv):
        raise UserError(f"--split-csv {opts.split_csv}: no such file (rows name,split)")
    if opts.split_lists and not os.path.isdir(opts.split_lists):
        raise UserError(f"--split-lists {opts.split_lists}: no such folder (train.txt, val.txt, test.txt)")
    if opts.split_csv and opts.split_lists:
        raise UserError("--split-csv and --split-lists both give the split: pass one")
    check_fractions(opts, "images")


class Writer(kvasir.Writer):
    """Kvasir-SEG's record and shard writing, with the user's foreground rule and no planted masks."""

    DATASET = DATASET

    def __init__(self, pairs, opts):
        self.pairs, self.opts, self.planted = pairs, opts, None

    def read(self, name):
        return maskpairs.read_pair(self.pairs[name], self.opts.foreground_values())


def assign(opts, ids, unpaired):
    """({split: ids}, rejected, split info): the split CSV's or lists', else a seeded random one (each image
    its own patient)."""
    if opts.split_csv:
        splits, rejected = maskpairs.split_from_csv(opts.split_csv, ids, unpaired)
        return splits, rejected, {"kind": "csv", "source": opts.split_csv}
    if opts.split_lists:
        splits, rejected = maskpairs.split_from_lists(opts.split_lists, ids, unpaired)
        return splits, rejected, {"kind": "lists", "source": opts.split_lists}
    by_patient = split_by_patient([Entry(n, n, (), None) for n in ids], opts.val_fraction, opts.test_fraction,
                                  opts.seed)
    splits = {s: [e.name for e in entries] for s, entries in by_patient.items()}
    return splits, [], {"kind": "random", "val_fraction": opts.val_fraction,
                        "test_fraction": opts.test_fraction, "seed": opts.seed}


def prepare(opts):
    """Splits and shard plan; identical on every rank (same files, same seed)."""
    pairs, rejected = maskpairs.pair_folders(opts.images, opts.masks, opts.mask_suffix)
    splits, more, info = assign(opts, sorted(pairs), {r["name"] for r in rejected})
    rejected += more
    splits, plan, named = kvasir.plan_pairs(splits, rejected, opts)
    return splits, rejected, info, pairs, plan, named


def build_parser():
    p = flags.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the data set's folder (write_tfrecords.sh: OUT/NAME)")
    p.add_argument("--images", required=True, help="folder of the images (not read recursively)")
    p.add_argument("--masks", required=True, help="folder of the masks, one per image, under the image's stem")
    p.add_argument("--mask-suffix", default="", help="what a mask's stem adds to its image's (_mask: a.png "
                   "pairs with a_mask.png)")
    p.add_argument("--foreground", default="", help="comma-separated mask values that are foreground (label "
                   "maps); default: non-zero of a two-value mask, > 127 of a JPEG one")
    p.add_argument("--split-csv", default="", help="CSV of rows name,split (train, val or test); default: a "
                   "seeded random split")
    p.add_argument("--split-lists", default="", help="folder of train.txt, val.txt and (optional) test.txt, one "
                   "image name a line; default: a seeded random split")
    add_fraction_options(p, "images", " (random split)")
    kvasir.add_record_options(p)
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
    splits, rejected, info, pairs, plan, named = prepare(opts)
    if rank == 0:
        kvasir.log.info("%s + %s: %s split: %s; %d shards, %d rank(s)", opts.images, opts.masks, info["kind"],
                        ", ".join(f"{k} {len(v)} pairs" for k, v in splits.items()), len(plan), size)
    sides = shards.write_all(Writer(pairs, opts), plan, opts.out_dir, comm, opts.processes)
    if rank == 0:
        manifest = kvasir.build_manifest(sides, splits, rejected, opts, info, named, dataset=DATASET)
        manifest["foreground"] = list(opts.foreground_values()) or "non-zero of two-value masks, > 127 of JPEG"
        shards.save_manifest(opts.out_dir, manifest, started, sides)


if __name__ == "__main__":
    sys.exit(main())
