"""A synthetic ChestX-ray14 with the real on-disk layout and learnable labels.

    python -m dataprep.chestxray14.synthetic --out data/chestxray14 --images 2000 --image-size 256

writes what the real download plus the hand-placed metadata give:

    images_01.tar.gz .. images_12.tar.gz   each holding images/<8-digit patient>_<3-digit>.png
    Data_Entry_2017.csv                    real header, 11 fields a row, '|'-separated labels
    train_val_list.txt, test_list.txt      split by patient
    SYNTHETIC.json                         how it was made (seed, counts, difficulty, ceiling), each file's SHA-256
    planted_scores.csv                     --difficulty realistic only: the oracle's score per image and class

Patients have one to several follow-up images. Prevalence follows the real set
(No Finding the majority, Hernia the rarest) with a floor (``--min-prevalence``)
so that every class has positives in a small split. Each pathology is drawn as
its own motif on a chest-like background, so a CNN can learn every label.
``--difficulty realistic`` draws findings at a per-class evidence strength and
writes labels with missed and false reports (``plant``); planted_scores.csv
then holds each image's P(label | planted), from which dataprep.ceiling
computes the best achievable AUC. The same seed gives the same bytes (and
``easy``, the default, the bytes it always gave). It always writes the 12 archives (so it
needs at least 12 images), and rewrites only a folder it made itself
(``dataprep.synthetic_marker``): any other non-empty folder is refused.
"""
import csv
import gzip
import io
import logging
import multiprocessing
import os
import tarfile
import time

import cv2
import numpy as np

from dataprep import ceiling, flags, synthetic_marker
from dataprep.chestxray14 import facts
from runtime.errors import main_guard
from runtime.logs import setup_logging

log = logging.getLogger("synthetic")


# --------------------------------------------------------------------- labels
def class_probabilities(min_prevalence):
    """P(label | image has a finding): real shares, floored, over the abnormal images."""
    abnormal = facts.REAL_IMAGE_COUNT - facts.REAL_NO_FINDING
    return np.array([max(facts.REAL_COUNTS[c] / abnormal, min_prevalence / (1 - no_finding_share()))
                     for c in facts.CLASSES])


def no_finding_share():
    return facts.REAL_NO_FINDING / facts.REAL_IMAGE_COUNT  # 0.538


def draw_labels(rng, n, min_prevalence):
    """(n, 14) 0/1 matrix: No Finding with the real share, else >= 1 finding."""
    probs = np.minimum(class_probabilities(min_prevalence), 0.9)
    labels = np.zeros((n, len(facts.CLASSES)), dtype=np.uint8)
    abnormal = rng.random(n) >= no_finding_share()
    for i in np.flatnonzero(abnormal):
        row = rng.random(len(probs)) < probs
        if not row.any():
            row[rng.choice(len(probs), p=probs / probs.sum())] = True
        labels[i] = row
    return labels


def draw_patients(rng, n):
    """Follow-up counts per patient (1..8, mean about 3.6 as in the real set) summing to n."""
    counts = []
    while sum(counts) < n:
        counts.append(int(min(8, 1 + rng.geometric(1 / 3.0))))
    counts[-1] -= sum(counts) - n
    return [c for c in counts if c > 0]


# --------------------------------------------------------------------- difficulty
DIFFICULTIES = ("easy", "realistic")
# realistic: each class's faintest evidence (lowest motif contrast) and its false reports per true finding,
# spread over the classes so that their ceilings differ.
EVIDENCE_FLOOR = (0.15, 0.6)
FALSE_REPORTS = (0.1, 0.5)


def class_noise(difficulty):
    """(evidence floor, false reports per true finding), each (14,): easy is (1, 0) for every class."""
    n = len(facts.CLASSES)
    if difficulty == "easy":
        return np.ones(n), np.zeros(n)
    # Fixed orders, not the seed's: the same classes are the hard ones in every synthetic set.
    floor = np.linspace(*EVIDENCE_FLOOR, n)[np.random.default_rng(14).permutation(n)]
    false = np.linspace(*FALSE_REPORTS, n)[np.random.default_rng(15).permutation(n)]
    return floor, false


def false_report_rate(difficulty, min_prevalence):
    """P(label | no finding) per class: ``false`` false reports per finding at the planted prevalence."""
    prevalence = (1 - no_finding_share()) * np.minimum(class_probabilities(min_prevalence), 0.9)
    return class_noise(difficulty)[1] * prevalence / (1 - prevalence)


def plant(findings, difficulty, seed, min_prevalence):
    """(written labels, evidence strength or None, oracle score) for the planted ``findings`` (n, 14).

    Realistic: a finding's strength s ~ U(floor, 1) is its motif's contrast; the report names it with
    probability s (faint ones are missed) and names an absent finding at ``false_report_rate``. The oracle's
    score is P(label | finding, s): s, or that rate. Easy: labels are the findings, every motif at full contrast.
    """
    if difficulty == "easy":
        return findings, None, findings.astype(np.float64)
    rng = np.random.default_rng([seed, 3])  # its own stream: the plan and the images' draws stay as in easy
    floor, rate = class_noise(difficulty)[0], false_report_rate(difficulty, min_prevalence)
    present = findings == 1
    strength = np.where(present, floor + (1 - floor) * rng.random(findings.shape), 0.0)
    reported = np.where(present, rng.random(findings.shape) < strength, rng.random(findings.shape) < rate)
    return reported.astype(np.uint8), strength, np.where(present, strength, rate)


# --------------------------------------------------------------------- images
def _background(rng, s):
    img = np.full((s, s), 25, np.float32)
    cx, cy = s / 2 + rng.normal(0, s * 0.01), s / 2 + rng.normal(0, s * 0.01)
    body = (int(cx), int(cy + s * 0.05)), (int(s * 0.42), int(s * 0.46))
    cv2.ellipse(img, body[0], body[1], 0, 0, 360, 70, -1)
    for side in (-1, 1):  # lungs
        centre = (int(cx + side * s * 0.18), int(cy))
        cv2.ellipse(img, centre, (int(s * 0.14), int(s * 0.3)), 0, 0, 360, 110, -1)
    cv2.rectangle(img, (int(cx - s * 0.025), int(s * 0.1)), (int(cx + s * 0.025), int(s * 0.95)), 150, -1)
    for k in range(6):  # ribs
        y = int(s * (0.25 + 0.09 * k))
        cv2.ellipse(img, (int(cx), y), (int(s * 0.33), int(s * 0.06)), 0, 200, 340, 135, max(1, s // 128))
    return img


def _lung_point(rng, s, side=None, top=0.3, bottom=0.7):
    side = rng.choice((-1, 1)) if side is None else side
    x = s / 2 + side * s * rng.uniform(0.12, 0.24)
    return int(x), int(s * rng.uniform(top, bottom))


def _motif(img, k, rng, s):
    """Draw pathology ``k`` (index into facts.CLASSES); each has its own shape and place."""
    t = max(1, s // 64)
    bright, dark = 235, 5
    name = facts.CLASSES[k]
    if name == "Atelectasis":        # thick horizontal band, lower left lung
        y = int(s * rng.uniform(0.6, 0.7))
        cv2.line(img, (int(s * 0.2), y), (int(s * 0.42), y), bright, 3 * t)
    elif name == "Cardiomegaly":     # large heart shadow
        cv2.circle(img, (int(s * 0.55), int(s * 0.62)), int(s * rng.uniform(0.16, 0.2)), 200, -1)
    elif name == "Effusion":         # fluid level at the base of the right lung
        y = int(s * rng.uniform(0.72, 0.78))
        cv2.rectangle(img, (int(s * 0.6), y), (int(s * 0.82), int(s * 0.85)), bright, -1)
    elif name == "Infiltration":     # diffuse speckles
        for _ in range(40):
            cv2.circle(img, _lung_point(rng, s, top=0.25, bottom=0.75), t, bright, -1)
    elif name == "Mass":             # one large round opacity
        cv2.circle(img, _lung_point(rng, s), int(s * 0.08), bright, -1)
    elif name == "Nodule":           # a few small round opacities
        for _ in range(3):
            cv2.circle(img, _lung_point(rng, s), max(2, int(s * 0.025)), bright, -1)
    elif name == "Pneumonia":        # cloudy patch, upper right
        patch = np.zeros_like(img)
        cv2.circle(patch, (int(s * 0.7), int(s * rng.uniform(0.3, 0.4))), int(s * 0.1), 120, -1)
        img += cv2.GaussianBlur(patch, (0, 0), s * 0.03)
    elif name == "Pneumothorax":     # black crescent at the apex of the left lung
        cv2.ellipse(img, (int(s * 0.32), int(s * 0.22)), (int(s * 0.12), int(s * 0.06)), 0, 180, 360, dark, -1)
    elif name == "Consolidation":    # dense rectangle, mid right lung
        x, y = int(s * rng.uniform(0.6, 0.66)), int(s * rng.uniform(0.42, 0.5))
        cv2.rectangle(img, (x, y), (x + int(s * 0.12), y + int(s * 0.08)), bright, -1)
    elif name == "Edema":            # vertical streaks around the hilum
        for dx in (-0.1, -0.07, 0.07, 0.1):
            x = int(s * (0.5 + dx))
            cv2.line(img, (x, int(s * 0.35)), (x, int(s * 0.6)), bright, t)
    elif name == "Emphysema":        # dark bullae in the upper lungs
        for side in (-1, 1):
            cv2.circle(img, _lung_point(rng, s, side, 0.28, 0.36), int(s * 0.05), dark, -1)
    elif name == "Fibrosis":         # reticular net in the left lung
        x0, y0, w = int(s * 0.22), int(s * 0.35), int(s * 0.16)
        for i in range(4):
            cv2.line(img, (x0, y0 + i * w // 3), (x0 + w, y0 + i * w // 3), 200, t)
            cv2.line(img, (x0 + i * w // 3, y0), (x0 + i * w // 3, y0 + w), 200, t)
    elif name == "Pleural_Thickening":  # bright line along the right lateral wall
        cv2.line(img, (int(s * 0.84), int(s * 0.3)), (int(s * 0.84), int(s * 0.7)), bright, 2 * t)
    elif name == "Hernia":           # dome above the diaphragm, bottom centre
        cv2.ellipse(img, (int(s * 0.5), int(s * 0.88)), (int(s * 0.1), int(s * 0.07)), 0, 180, 360, bright, -1)


def render(labels_row, image_size, seed, strength=None):
    """One 8-bit grayscale image for a 14-label row; deterministic in ``seed``.

    ``strength``: (14,) contrast of each drawn motif in (0, 1] (None: all 1, the easy set).
    """
    rng = np.random.default_rng(seed)
    img = _background(rng, image_size)
    for k in np.flatnonzero(labels_row):
        before = None if strength is None or strength[k] >= 1 else img.copy()
        _motif(img, int(k), rng, image_size)
        if before is not None:  # a faint finding: the motif blended into the background at its strength
            img[...] = before + strength[k] * (img - before)
    img = cv2.GaussianBlur(img, (0, 0), max(0.5, image_size / 512))
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def motif_mask(labels_row, image_size, seed, k):
    """Where ``render(labels_row, image_size, seed)`` drew pathology ``k``: (S, S) bool.

    Replays the image's random draws on an empty canvas, so the positions are
    the rendered ones (for checking that a heatmap points at the finding).
    """
    rng = np.random.default_rng(seed)
    _background(rng, image_size)
    canvas = np.zeros((image_size, image_size), np.float32)
    for j in np.flatnonzero(labels_row):
        before = canvas.copy()
        _motif(canvas, int(j), rng, image_size)
        if j == k:
            return canvas != before
    raise ValueError(f"class {k} is not among the labels {np.flatnonzero(labels_row).tolist()}")


# --------------------------------------------------------------------- layout
def plan(n_images, seed, min_prevalence, test_fraction):
    """Names, patients, labels, follow-ups and the test patients, all from ``seed``."""
    rng = np.random.default_rng(seed)
    counts = draw_patients(rng, n_images)
    first_id = int(rng.integers(1, 20000))
    names, patients, followups = [], [], []
    for p, count in enumerate(counts):
        pid = first_id + p
        for f in range(count):
            names.append(f"{pid:08d}_{f:03d}.png")
            patients.append(pid)
            followups.append(f)
    labels = draw_labels(rng, len(names), min_prevalence)
    unique = np.unique(patients)
    n_test = max(1, int(round(len(unique) * test_fraction)))
    test_patients = set(rng.choice(unique, size=n_test, replace=False).tolist())
    meta = {"age": rng.integers(1, 95, len(names)), "gender": rng.choice(["M", "F"], len(names)),
            "view": rng.choice(["PA", "AP"], len(names), p=[0.6, 0.4])}
    return names, patients, followups, labels, test_patients, meta


def finding_labels(row):
    found = [facts.CLASSES[k] for k in np.flatnonzero(row)]
    return "|".join(found) if found else facts.NO_FINDING


def write_csv(path, names, patients, followups, labels, meta, image_size):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fh.write(facts.CSV_HEADER + "\n")
        writer = csv.writer(fh, lineterminator="\n")
        for i, name in enumerate(names):
            writer.writerow([name, finding_labels(labels[i]), followups[i], patients[i],
                             int(meta["age"][i]), meta["gender"][i], meta["view"][i],
                             image_size, image_size, 0.143, 0.143])


def _write_archive(job):
    path, names, label_rows, image_size, seeds, strengths = job
    tmp = path + ".part"
    # gzip records a time and file name in its header: fix both for identical bytes.
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for i, (name, row, seed) in enumerate(zip(names, label_rows, seeds)):
            strength = None if strengths is None else strengths[i]
            ok, png = cv2.imencode(".png", render(row, image_size, seed, strength), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            info = tarfile.TarInfo(f"images/{name}")
            info.size, info.mtime, info.mode = len(png), 1500000000, 0o644
            tar.addfile(info, io.BytesIO(png.tobytes()))
    os.replace(tmp, path)
    return os.path.basename(path), len(names)


FILES = [a.name for a in facts.ARCHIVES] + [facts.CSV_NAME, facts.TRAIN_VAL_LIST, facts.TEST_LIST]
ALL_FILES = FILES + [ceiling.PLANTED_SCORES]  # the planted scores: realistic sets only


def files_of(difficulty):
    return FILES if difficulty == "easy" else ALL_FILES


def already_generated(out_dir, params):
    """True when SYNTHETIC.json records ``params`` and every file it made is there."""
    done = synthetic_marker.read(out_dir) or {}
    return (all(done.get(k) == v for k, v in params.items())
            and all(os.path.isfile(os.path.join(out_dir, f)) for f in files_of(params["difficulty"])))


def generate(out_dir, n_images, image_size=256, seed=0, min_prevalence=0.02, test_fraction=0.2,
             workers=None, difficulty="easy"):
    synthetic_marker.refuse_unless_ours(out_dir, ALL_FILES)
    remove_stale_scores(out_dir, difficulty)
    files = files_of(difficulty)
    synthetic_marker.begin(out_dir, files)
    names, patients, followups, findings, test_patients, meta = plan(n_images, seed, min_prevalence,
                                                                     test_fraction)
    labels, strength, scores = plant(findings, difficulty, seed, min_prevalence)
    image_seeds = np.random.default_rng(seed + 1).integers(0, 2**63 - 1, len(names))
    parts = np.array_split(np.arange(len(names)), len(facts.ARCHIVES))
    jobs = [(os.path.join(out_dir, a.name), [names[i] for i in idx], findings[idx], image_size,
             image_seeds[idx].tolist(), None if strength is None else strength[idx])
            for a, idx in zip(facts.ARCHIVES, parts)]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for done, (archive, count) in enumerate(pool.imap(_write_archive, jobs), 1):
            log.info("[%2d/%d] %s: %d images", done, len(jobs), archive, count)
    write_csv(os.path.join(out_dir, facts.CSV_NAME), names, patients, followups, labels, meta,
              image_size)
    test = sorted(n for n, p in zip(names, patients) if p in test_patients)
    train_val = sorted(n for n, p in zip(names, patients) if p not in test_patients)
    for fname, items in ((facts.TEST_LIST, test), (facts.TRAIN_VAL_LIST, train_val)):
        with open(os.path.join(out_dir, fname), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{n}\n" for n in items))
    summary = {"images": len(names), "patients": len(set(patients)), "image_size": image_size,
               "seed": seed, "min_prevalence": min_prevalence, "test_fraction": test_fraction,
               "difficulty": difficulty, "test_images": len(test),
               "train_val_images": len(train_val),
               "positives": dict(zip(facts.CLASSES, labels.sum(0).tolist())),
               "no_finding": int((labels.sum(1) == 0).sum()),
               "seconds": round(time.perf_counter() - t0, 1)}
    if difficulty != "easy":
        ceiling.write_scores(os.path.join(out_dir, ceiling.PLANTED_SCORES), names, scores, facts.CLASSES)
        summary.update(planted_ceiling(names, labels, scores, test, difficulty, min_prevalence),
                       planted_findings=dict(zip(facts.CLASSES, findings.sum(0).tolist())))
    synthetic_marker.finish(out_dir, summary, files)
    return summary


def remove_stale_scores(out_dir, difficulty):
    """An easy set leaves no planted scores of an earlier realistic one behind (they are the writer's)."""
    stale = os.path.join(out_dir, ceiling.PLANTED_SCORES)
    if difficulty == "easy" and os.path.isfile(stale):
        os.remove(stale)


def planted_ceiling(names, labels, scores, test, difficulty, min_prevalence):
    """SYNTHETIC.json's record of the noise and the oracle's AUC on every image and on the test list."""
    floor, false = class_noise(difficulty)
    by_name = dict(zip(names, scores))
    index = {n: i for i, n in enumerate(names)}
    test_rows = [index[n] for n in test]
    return {"evidence_floor": dict(zip(facts.CLASSES, floor.round(4).tolist())),
            "false_reports_per_finding": dict(zip(facts.CLASSES, false.round(4).tolist())),
            "false_report_rate": dict(zip(facts.CLASSES, false_report_rate(difficulty, min_prevalence).round(5).tolist())),
            "ceiling": {"all": ceiling.auc_ceiling(names, labels, by_name, facts.CLASSES),
                        "test": ceiling.auc_ceiling(test, labels[test_rows], by_name, facts.CLASSES)}}


def build_parser():
    p = flags.Parser(description="Write a synthetic ChestX-ray14 with the real layout.")
    p.add_argument("--out", required=True, help="folder for the archives and metadata")
    p.add_argument("--images", "--synthetic", type=flags.bounded(int, least=len(facts.ARCHIVES), most=1_000_000),
                   required=True, help="images to write (at least one per archive)")
    p.add_argument("--image-size", type=flags.bounded(int, least=32, most=4096), default=256)
    p.add_argument("--seed", type=flags.SEED, default=0)
    p.add_argument("--min-prevalence", type=flags.bounded(float, least=0, most=0.5), default=0.02,
                   help="floor on each class's share so small splits have positives")
    p.add_argument("--test-fraction", type=flags.bounded(float, least=0, below=1), default=0.2,
                   help="share of patients in test_list.txt")
    p.add_argument("--difficulty", choices=DIFFICULTIES, default="easy",
                   help="easy (default: labels are the drawn findings, ceiling AUC 1) or realistic (faint findings "
                        "and label noise with a known ceiling, recorded in SYNTHETIC.json; docs/data.md)")
    p.add_argument("--check-options", action="store_true",
                   help="check the options and that --out may be written, write nothing")
    return p


@main_guard
def main(argv=None):
    args = build_parser().parse_args(argv)
    params = {"images": args.images, "image_size": args.image_size, "seed": args.seed,
              "min_prevalence": args.min_prevalence, "test_fraction": args.test_fraction,
              "difficulty": args.difficulty}
    if already_generated(args.out, params):
        if not args.check_options:
            setup_logging(rank=0)
            log.info("%s already holds this synthetic set (SYNTHETIC.json): nothing to do", args.out)
        return
    if args.check_options:
        synthetic_marker.refuse_unless_ours(args.out, ALL_FILES)
        return
    setup_logging(rank=0)
    summary = generate(args.out, args.images, args.image_size, args.seed, args.min_prevalence,
                       args.test_fraction, difficulty=args.difficulty)
    log.info("wrote %d synthetic images of %d patients (%d test) to %s in %.1f s",
             summary["images"], summary["patients"], summary["test_images"], args.out, summary["seconds"])


if __name__ == "__main__":
    main()
