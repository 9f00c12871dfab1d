"""A synthetic Kvasir-SEG with the real on-disk layout and learnable masks.

    python -m dataprep.kvasir_seg.synthetic --out data/kvasir-seg --images 1000

writes what the real download gives (``download_dataset.sh --dataset kvasir-seg``):

    kvasir-seg.zip       Kvasir-SEG/images/<id>.jpg, Kvasir-SEG/masks/<id>.jpg,
                         Kvasir-SEG/kavsir_bboxes.json
    train.txt, val.txt   an 88/12 split of the ids, in the form of the official lists
    SYNTHETIC.json       how it was made (seed, counts, sizes, difficulty, ceiling), each file's SHA-256
    planted_masks.zip    --difficulty realistic only: <id>.png, the outline each frame was drawn from

Frames are endoscopy-like: a shaded, textured mucosa inside a dark vignette,
with vessels and specular highlights; one polyp (sometimes two), a blob of
varied shape, size, colour and texture, raised (brighter towards its centre)
and redder than the mucosa around it; a quarter of the frames carry a green
scope-guide thumbnail in the lower-left corner, as real ones do, which hides
what is under it. Sizes span the real range (332x487 to 1072x1920, height x
width) scaled by ``--image-size`` (the largest height; default 1072, the
real one). Masks are JPEG, so their edges carry compression noise, as the
real masks do; the boxes are the bounding boxes of the true mask's
components. ``--difficulty realistic`` writes each mask as an annotator's
outline of the planted one (``annotated``: boundary noise) and the planted
masks to planted_masks.zip, from which dataprep.ceiling computes the best
achievable Dice. The same seed gives the same bytes. It rewrites only a folder it
made itself (``dataprep.synthetic_marker``): any other non-empty folder, such
as a real download with its official lists, is refused.
"""
import json
import logging
import multiprocessing
import os
import string
import time
import zipfile

import cv2
import numpy as np

from dataprep import ceiling, flags, synthetic_marker
from dataprep.kvasir_seg import facts
from runtime.errors import main_guard
from runtime.files import atomic_write, write_lines
from runtime.logs import setup_logging
from segmentation.metrics import confusion_counts

log = logging.getLogger("synthetic")
ID_ALPHABET = np.array(list(string.ascii_lowercase + string.digits))
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed member date: the same seed gives the same zip bytes
VAL_SHARE = 0.12  # the official lists hold 120 of 1,000
FILES = [facts.ZIP_NAME, *facts.SPLIT_LISTS.values()]
ALL_FILES = FILES + [ceiling.PLANTED_MASKS]  # the planted masks: realistic sets only
DIFFICULTIES = {"easy": 0.0, "realistic": 0.35}  # boundary noise: a share of the polyp's equivalent radius
BOUNDARY_CELLS = 6  # the noise field's grid: a few bumps along an outline


def frame_size(rng, largest_height):
    """(height, width) over the real range, scaled so the largest height is ``largest_height``."""
    h = rng.integers(facts.REAL_SMALLEST[0], facts.REAL_LARGEST[0] + 1)
    w = np.clip(round(h * rng.uniform(1.2, 1.8)), facts.REAL_SMALLEST[1], facts.REAL_LARGEST[1])
    scale = largest_height / facts.REAL_LARGEST[0]
    return max(24, round(h * scale)), max(32, round(w * scale))


def smooth_field(rng, h, w, cells=4):
    """Low-frequency noise in [-1, 1]: a few random values, upsampled smoothly."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def mucosa(rng, h, w):
    """BGR float background: shaded pink-red tissue, vessels, a dark circular vignette."""
    base = np.array([rng.uniform(60, 110), rng.uniform(80, 130), rng.uniform(170, 230)], np.float32)
    img = base + 35 * smooth_field(rng, h, w)[..., None] + rng.normal(0, 4, (h, w, 3)).astype(np.float32)
    for _ in range(rng.integers(2, 7)):  # vessels: thin dark-red curves
        pts = np.cumsum(rng.normal(0, 0.08 * max(h, w), (6, 2)), 0) + [rng.uniform(0, w), rng.uniform(0, h)]
        cv2.polylines(img, [pts.astype(np.int32)], False, (40, 40, 120), max(1, round(0.004 * w)), cv2.LINE_AA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    return img * np.clip(1.25 - 0.55 * r ** 2, 0.15, 1.0)[..., None]


def blob_polygon(rng, h, w):
    """A closed polygon of varied shape: a stretched circle whose radius has a few random harmonics."""
    side = min(h, w)
    r = rng.uniform(0.1, 0.32) * side  # polyps of about 2% to 20% of the frame, 13% on average
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = r * (1 + sum(rng.uniform(0, 0.25) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))
    stretch, angle = rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)
    x, y = radius * np.cos(t) * stretch, radius * np.sin(t) / stretch
    xr, yr = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
    return np.stack([cx + xr, cy + yr], 1).astype(np.int32)


def add_polyp(rng, img, mask):
    """Paint one polyp into ``img`` (BGR float) and ``mask`` (uint8 0/1)."""
    h, w = mask.shape
    one = np.zeros((h, w), np.uint8)
    cv2.fillPoly(one, [blob_polygon(rng, h, w)], 1)
    # Raised: brightest at the centre, fading to the rim (distance to the edge).
    dome = cv2.distanceTransform(one, cv2.DIST_L2, 3)
    dome = (dome / max(dome.max(), 1.0))[..., None]
    tint = np.array([rng.uniform(-20, 10), rng.uniform(5, 35), rng.uniform(25, 60)], np.float32)
    texture = 12 * smooth_field(rng, h, w, cells=int(rng.integers(8, 20)))[..., None]
    inside = one[..., None].astype(np.float32)
    img += inside * (tint + 45 * dome + texture)
    mask |= one


def specular(rng, img, n):
    """White highlight spots (on polyps and mucosa alike: a distractor)."""
    h, w = img.shape[:2]
    for _ in range(n):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (max(1, int(rng.uniform(0.005, 0.02) * w)), max(1, int(rng.uniform(0.003, 0.012) * h)))
        cv2.ellipse(img, c, axes, rng.uniform(0, 180), 0, 360, (245, 245, 250), -1, cv2.LINE_AA)


def scope_thumbnail(rng, img, *masks):
    """The green scope-guide inset of some real frames, lower-left; it hides the polyp under it."""
    h, w = masks[0].shape
    th, tw = int(h * rng.uniform(0.2, 0.3)), int(w * rng.uniform(0.15, 0.22))
    inset = np.array([40, 150, 60], np.float32) + 25 * smooth_field(rng, th, tw)[..., None]
    img[h - th:, :tw] = inset
    for mask in masks:
        mask[h - th:, :tw] = 0


def annotated(rng, mask, amplitude):
    """The annotator's outline of the planted ``mask``: its boundary moved in and out by a smooth random
    field of up to ``amplitude`` times the polyps' equivalent radius (at 0, the planted mask itself)."""
    if amplitude == 0 or not mask.any():
        return mask.copy()
    h, w = mask.shape
    signed = cv2.distanceTransform(mask, cv2.DIST_L2, 3) - cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    radius = np.sqrt(mask.sum() / np.pi)
    return (signed + amplitude * radius * smooth_field(rng, h, w, cells=BOUNDARY_CELLS) > 0).astype(np.uint8)


def draw_pair(seed, index, largest_height, boundary=0.0):
    """(BGR uint8 frame, written 0/1 mask, planted 0/1 mask) of image ``index``: a function of
    (seed, index, boundary) only; the frame is drawn from the planted mask, the written one is
    ``annotated`` with ``boundary`` noise (the same mask at 0)."""
    rng = np.random.default_rng([seed, index])
    h, w = frame_size(rng, largest_height)
    img, planted = mucosa(rng, h, w), np.zeros((h, w), np.uint8)
    for _ in range(2 if rng.random() < 0.15 else 1):
        add_polyp(rng, img, planted)
    # Its own stream: the frame's draws, and so the easy set's bytes, do not depend on the noise.
    mask = annotated(np.random.default_rng([seed, index, 3]), planted, boundary)
    specular(rng, img, int(rng.integers(2, 8)))
    if rng.random() < 0.25:
        scope_thumbnail(rng, img, mask, planted)
    return np.clip(img, 0, 255).astype(np.uint8), mask, planted


def boxes(mask):
    """Bounding boxes of the mask's components, in the real JSON's form."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return [{"label": "polyp", "xmin": int(x), "ymin": int(y), "xmax": int(x + bw), "ymax": int(y + bh)}
            for x, y, bw, bh, _ in stats[1:n]]


def image_id(seed, index):
    """25 lowercase letters and digits, like the real ids (``cju0qkwl35piu0993l0dewei2``)."""
    return "cj" + "".join(np.random.default_rng([seed, index, 1]).choice(ID_ALPHABET, 23))


def encoded_pair(job):
    """(id, image JPEG bytes, mask JPEG bytes, bbox entry, planted mask PNG bytes or None, oracle counts)
    for one index; runs in a worker."""
    seed, index, largest_height, boundary = job
    img, mask, planted = draw_pair(seed, index, largest_height, boundary)
    ok1, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    # Masks are JPEG in the real set too: edges come back as grey noise to threshold.
    ok2, mjpg = cv2.imencode(".jpg", mask * 255, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok1 and ok2
    h, w = mask.shape
    png = cv2.imencode(".png", planted * 255)[1].tobytes() if boundary else None
    counts = confusion_counts(mask[None], planted[None].astype(np.float32) - 0.5)[0]
    return (image_id(seed, index), jpg.tobytes(), mjpg.tobytes(), {"height": h, "width": w, "bbox": boxes(mask)},
            png, counts)


def write_zip(path, pairs):
    """The zip with the real member names; stored (JPEGs do not compress) with fixed dates."""
    bboxes = {}

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for name, jpg, mjpg, box, *_planted in pairs:
                for folder, data in ((facts.IMAGES, jpg), (facts.MASKS, mjpg)):
                    z.writestr(zipfile.ZipInfo(f"{facts.TOP}/{folder}/{name}.jpg", ZIP_TIME), data)
                bboxes[name] = box
            z.writestr(zipfile.ZipInfo(f"{facts.TOP}/{facts.BBOXES}", ZIP_TIME),
                       json.dumps(bboxes, sort_keys=True).encode())

    atomic_write(path, write)
    return bboxes


def write_planted(path, pairs):
    """planted_masks.zip: <id>.png, the outline each frame was drawn from (dataprep.ceiling reads it)."""
    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for name, *_rest, png, _counts in pairs:
                z.writestr(zipfile.ZipInfo(f"{name}.png", ZIP_TIME), png)

    atomic_write(path, write)


def split_ids(ids, seed):
    """(train, val): a seeded 88/12 split, like the official lists' 880/120."""
    order = np.random.default_rng([seed, 2]).permutation(len(ids))
    n_val = max(1, round(VAL_SHARE * len(ids))) if len(ids) > 1 else 0
    val = sorted(ids[i] for i in order[:n_val])
    return sorted(ids[i] for i in order[n_val:]), val


def write_synthetic(out, images, largest_height, seed, processes, difficulty="easy"):
    synthetic_marker.refuse_unless_ours(out, ALL_FILES)
    boundary, files = DIFFICULTIES[difficulty], FILES if difficulty == "easy" else ALL_FILES
    stale = os.path.join(out, ceiling.PLANTED_MASKS)
    if not boundary and os.path.isfile(stale):  # an earlier realistic set's, so the writer's
        os.remove(stale)
    synthetic_marker.begin(out, files)
    jobs = [(seed, i, largest_height, boundary) for i in range(images)]
    # fork: the parent holds no MPI or TensorFlow state here, and spawn would leave a
    # resource-tracker process behind for a moment after the stage exits.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pairs = []
        for pair in pool.imap(encoded_pair, jobs, chunksize=8):  # in order: the zip is deterministic
            pairs.append(pair)
            if len(pairs) % 200 == 0:
                log.info("%d/%d pairs drawn", len(pairs), images)
    ids = [p[0] for p in pairs]
    if len(set(ids)) != len(ids):
        raise RuntimeError("synthetic ids collided; pick another --seed")
    bboxes = write_zip(os.path.join(out, facts.ZIP_NAME), pairs)
    noise = {"difficulty": difficulty}
    if boundary:
        write_planted(stale, pairs)
        noise.update(boundary_noise=boundary, ceiling={"all": ceiling.dice_ceiling([p[-1] for p in pairs])})
    train, val = split_ids(ids, seed)
    for split, names in (("train", train), ("val", val)):
        write_lines(os.path.join(out, facts.SPLIT_LISTS[split]), names)
    sizes = [(b["height"], b["width"]) for b in bboxes.values()]
    synthetic_marker.finish(out, {
        "dataset": "kvasir-seg", "synthetic": True, "seed": seed, "images": images,
        "largest_height": largest_height, "train": len(train), "val": len(val),
        "smallest_hw": list(min(sizes)), "largest_hw": list(max(sizes)),
        "with_two_polyps": sum(len(b["bbox"]) > 1 for b in bboxes.values()), **noise}, files)
    return len(train), len(val)


def build_parser():
    p = flags.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for kvasir-seg.zip and the split lists")
    p.add_argument("--images", "--synthetic", type=flags.bounded(int, least=2, most=100_000), default=facts.REAL_PAIRS,
                   help="image/mask pairs, at least a train and a val one (default 1000, as real)")
    p.add_argument("--image-size", type=flags.bounded(int, least=32, most=4096), default=facts.REAL_LARGEST[0],
                   help="the largest frame height; others scale with it (default 1072, the real one)")
    p.add_argument("--seed", type=flags.SEED, default=0)
    p.add_argument("--processes", type=flags.bounded(int, least=1, most=1024), default=os.cpu_count() or 1)
    p.add_argument("--difficulty", choices=list(DIFFICULTIES), default="easy",
                   help="easy (default: masks are the drawn outlines) or realistic (annotators' boundary noise with "
                        "a known best Dice, recorded in SYNTHETIC.json; docs/data.md)")
    p.add_argument("--check-options", action="store_true",
                   help="check the options and that --out may be written, write nothing")
    return p


@main_guard
def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.check_options:
        synthetic_marker.refuse_unless_ours(a.out, ALL_FILES)
        return
    setup_logging(rank=0)
    t0 = time.perf_counter()
    n_train, n_val = write_synthetic(a.out, a.images, a.image_size, a.seed, a.processes, a.difficulty)
    log.info("wrote %d synthetic Kvasir-SEG pairs (%d train, %d val) to %s in %.1f s", a.images, n_train, n_val,
             a.out, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
