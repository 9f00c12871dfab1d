"""A small example of the user's own X-rays: a CheXpert-style labels.csv and the images it names.

    python -m dataprep.csv_set.example --out example-xrays --images 60
    ./write_tfrecords.sh --dataset csv --csv example-xrays/labels.csv --images example-xrays --out data \
        --name example --image-column Path --patient-column Patient --label-columns Cardiomegaly,Edema,Effusion \
        --uncertain ignore

Patients ``pat-NN`` have one to three studies each, stored as
``patients/pat-NN/studyK.png``; each label column holds 1, 0, -1 (uncertain) or
blank, as CheXpert writes them. Pixels are the synthetic ChestX-ray14 renderer's,
so a network can learn the labels. The same seed gives the same files; an
existing non-empty ``--out`` that this script did not make is refused.
"""
import csv
import os
import sys

import cv2
import numpy as np

from dataprep import flags, synthetic_marker
from dataprep.chestxray14 import facts, synthetic
from runtime.errors import main_guard
from runtime.logs import setup_logging

CLASSES = ("Cardiomegaly", "Edema", "Effusion")
CSV_NAME = "labels.csv"


def rows(n_images, seed):
    """[(path, patient, {class: '1'|'0'|'-1'|''})] of ``n_images`` studies."""
    rng = np.random.default_rng(seed)
    out, patient = [], 0
    while len(out) < n_images:
        patient += 1
        for study in range(1, 1 + min(int(rng.integers(1, 4)), n_images - len(out))):
            values = {c: str(rng.choice(["1", "0", "0", "-1", ""])) for c in CLASSES}
            out.append((f"patients/pat-{patient:02d}/study{study}.png", f"pat-{patient:02d}", values))
    return out


def render(values, size, seed):
    """The image of one row: the renderer's motif of each class marked 1 (uncertain ones drawn half the time)."""
    row = np.zeros(len(facts.CLASSES), dtype=np.int64)
    for c, v in values.items():
        row[facts.CLASSES.index(c)] = v == "1" or (v == "-1" and seed % 2 == 0)
    return synthetic.render(row, size, seed)


def generate(out_dir, n_images, size, seed):
    table = rows(n_images, seed)
    names = [CSV_NAME] + [path for path, _, _ in table]
    synthetic_marker.refuse_unless_ours(out_dir, names)
    synthetic_marker.begin(out_dir, names)
    for i, (path, _, values) in enumerate(table):
        os.makedirs(os.path.dirname(os.path.join(out_dir, path)), exist_ok=True)
        cv2.imwrite(os.path.join(out_dir, path), render(values, size, seed * 100_003 + i))
    with open(os.path.join(out_dir, CSV_NAME), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Path", "Patient", *CLASSES])
        writer.writerows([path, patient, *(values[c] for c in CLASSES)] for path, patient, values in table)
    synthetic_marker.finish(out_dir, {"images": n_images, "image_size": size, "seed": seed}, names)
    return table


def build_parser():
    p = flags.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write labels.csv and patients/ into")
    p.add_argument("--images", type=flags.bounded(int, least=1, most=100_000), default=60, help="studies to write")
    p.add_argument("--image-size", type=flags.bounded(int, least=32, most=4096), default=256, help="image side")
    p.add_argument("--seed", type=flags.SEED, default=0, help="seed of labels and pixels")
    return p


@main_guard
def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging(0, "example")
    table = generate(args.out, args.images, args.image_size, args.seed)
    print(f"wrote {len(table)} images of {len({p for _, p, _ in table})} patients and "
          f"{os.path.join(args.out, CSV_NAME)}")


if __name__ == "__main__":
    sys.exit(main())
