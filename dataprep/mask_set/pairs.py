"""Pair the user's images with their masks, pick the foreground, split (no TensorFlow).

    pairs, rejected = pair_folders("images/", "masks/", mask_suffix="_mask")   # a.png <-> a_mask.png
    img, mask01 = read_pair(pairs["a"], foreground=(3, 4))                    # label map: classes 3 and 4
    splits, rejected = split_from_csv("split.csv", sorted(pairs), unpaired=set())
    splits, rejected = split_from_lists("lists/", sorted(pairs), unpaired=set())      # train.txt, val.txt[, test.txt]

Pairing is by file stem. The foreground: with ``foreground`` empty, a mask of
two values (0/255, 0/1) has every non-zero pixel as foreground, a JPEG mask is
thresholded above 127 as Kvasir-SEG's are (lossy edges), and any other mask
(a label map) is rejected, asking for ``--foreground``; with values given,
the pixels holding one of them are foreground. An all-background mask is valid
(a frame without a lesion); an all-foreground one is rejected (an inverted or
blank mask is far likelier than a lesion filling the frame).
"""
import csv
import os

import numpy as np

from dataprep.csv_set.labels import SPLITS
from dataprep.kvasir_seg import facts, tfrecords as kvasir
from dataprep.shards import Rejected
from runtime.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # what OpenCV reads, any case
LOSSY = (".jpg", ".jpeg")


def pair_folders(images_dir, masks_dir, mask_suffix=""):
    """({id: {"image": path, "mask": path}}, rejected entries): every file of both folders is one or the other."""
    images, rejected = kvasir.files_by_id(images_dir, "images", EXTENSIONS)
    found, more = kvasir.files_by_id(masks_dir, "masks", EXTENSIONS)
    rejected += more
    masks = {}
    for stem, path in found.items():
        if not stem.endswith(mask_suffix) or stem == mask_suffix:
            rejected.append({"name": f"masks/{os.path.basename(path)}",
                             "reason": f"mask name does not end in --mask-suffix {mask_suffix!r}"})
        else:
            masks[stem[:len(stem) - len(mask_suffix)]] = path
    rejected += [{"name": n, "reason": f"image without a mask (no {n}{mask_suffix}.* in {masks_dir})"}
                 for n in sorted(images.keys() - masks)]
    rejected += [{"name": n, "reason": f"mask without an image (no {n}.* in {images_dir})"}
                 for n in sorted(masks.keys() - images)]
    return {n: {"image": images[n], "mask": masks[n]} for n in sorted(images.keys() & masks)}, rejected


def foreground_of(mask, foreground, lossy):
    """0/1 uint8 of a single-channel mask; Rejected where the rule does not fit it."""
    if foreground:
        return np.isin(mask, foreground).astype(np.uint8)
    values = np.unique(mask)
    if len(values) == 1 or (len(values) == 2 and values[0] == 0):
        return (mask > 0).astype(np.uint8)
    if lossy and mask.dtype == np.uint8:
        return (mask > facts.MASK_THRESHOLD).astype(np.uint8)
    shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise Rejected(f"mask holds values {shown}: a label map? pass --foreground with its foreground value(s)")


def single_channel(mask):
    """The mask as (H, W): a gray image, or a colour one whose channels agree (alpha dropped)."""
    if mask.ndim == 2:
        return mask
    colour = mask[..., :3]
    if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
        raise Rejected("mask is a colour image: save masks as single-channel (gray or label) images")
    return colour[..., 0]


def read_pair(paths, foreground=()):
    """(BGR uint8 image, 0/1 uint8 mask) at full size, or Rejected(reason); checks as the Kvasir-SEG writer's."""
    import cv2
    img, _ = kvasir.read_pair(paths)  # missing, empty, unreadable, size mismatch, too small
    mask = single_channel(cv2.imread(paths["mask"], cv2.IMREAD_UNCHANGED))
    mask = foreground_of(mask, foreground, paths["mask"].lower().endswith(LOSSY))
    if mask.all():
        raise Rejected("every pixel of the mask is foreground: an inverted or blank mask? (all-background "
                       "masks are fine)")
    return img, mask


def split_from_lists(folder, ids, unpaired):
    """({split: ids}, rejected) from ``folder``'s train.txt and val.txt (and test.txt, if there), one name a line."""
    paths = {s: os.path.join(folder, f"{s}.txt") for s in SPLITS}
    missing = [p for s, p in paths.items() if s != "test" and not os.path.isfile(p)]
    if missing:
        raise UserError(f"--split-lists {folder}: no {os.path.basename(missing[0])} (one image name a line; "
                        f"test.txt is optional)")
    lists = {s: [stem_of(n) for n in facts.read_list(p)] for s, p in paths.items() if os.path.isfile(p)}
    splits, rejected = kvasir.assign_lists(lists, ids, unpaired)
    refuse_unmatched(splits, ids, f"--split-lists {folder}")
    return splits, rejected


def stem_of(name):
    """A listed name as the pairs are named: an image file name loses its extension."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in EXTENSIONS else name


def refuse_unmatched(splits, ids, source):
    if ids and not any(splits.values()):
        raise UserError(f"{source} names none of the {len(ids)} image/mask pairs (such as {ids[0]}): its names "
                        f"must be the images' file names or stems")


def split_from_csv(path, ids, unpaired):
    """({split: ids}, rejected) from ``path``'s rows ``name,split`` (a first row ``name,split`` is a header;
    names are stems or file names)."""
    lists, rejected = {s: [] for s in SPLITS}, []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [(n, [x.strip() for x in row]) for n, row in enumerate(csv.reader(fh), start=1) if any(row)]
    if rows and [x.lower() for x in rows[0][1]] == ["name", "split"]:
        rows = rows[1:]
    for lineno, row in rows:
        if len(row) != 2:
            raise UserError(f"--split-csv {path} line {lineno}: {len(row)} fields, expected 2 (name,split)")
        name, split = stem_of(row[0]), row[1]
        if split.lower() not in SPLITS:
            rejected.append({"name": name, "reason": f"split CSV line {lineno}: split {split!r} is not "
                                                     f"train, val or test"})
            unpaired = unpaired | {name}
            continue
        lists[split.lower()].append(name)
    splits, more = kvasir.assign_lists(lists, ids, unpaired)
    more = [r for r in more if r["name"] not in {x["name"] for x in rejected}]  # one reason an image
    refuse_unmatched(splits, ids, f"--split-csv {path}")
    return splits, rejected + more
