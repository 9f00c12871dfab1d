"""Facts about Kvasir-SEG that every stage shares (sources: REFERENCE.md section 3).

    from dataprep.kvasir_seg import facts
    facts.URL                     # the official zip
    facts.official_split("val")   # the 120 ids of the official validation list

The zip unpacks to ``Kvasir-SEG/images/<id>.jpg``, ``Kvasir-SEG/masks/<id>.jpg``
(1,000 pairs, the mask under the image's name) and ``Kvasir-SEG/kavsir_bboxes.json``
(``{id: {height, width, bbox: [{label, xmin, ymin, xmax, ymax}]}}``; the
misspelling is the data set's). Images range from 332x487 to 1920x1072 pixels;
masks are JPEG (lossy), so they are binarised (> 127) and resized with
nearest neighbour, never bilinear.
"""
import os

URL = "https://datasets.simula.no/downloads/kvasir-seg.zip"
ZIP_NAME = "kvasir-seg.zip"
TOP = "Kvasir-SEG"
IMAGES = "images"
MASKS = "masks"
BBOXES = "kavsir_bboxes.json"
REAL_PAIRS = 1000
# (height, width) of the smallest and the largest real frame.
REAL_SMALLEST, REAL_LARGEST = (332, 487), (1072, 1920)
MASK_THRESHOLD = 127  # a JPEG mask pixel above this is polyp

# The official 880 train / 120 validation lists published for comparison with
# the MediaEval 2020 Medico task (DebeshJha/2020-MediaEval-Medico-polyp-segmentation,
# folder kvasir-seg-train-val, commit d594c08); shipped in splits/.
SPLIT_LISTS = {"train": "train.txt", "val": "val.txt"}
SHIPPED_SPLITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")


def read_list(path):
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def official_split(split):
    return read_list(os.path.join(SHIPPED_SPLITS, SPLIT_LISTS[split]))
