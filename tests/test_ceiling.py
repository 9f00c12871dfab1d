"""The synthetic sets' known ceiling (dataprep.ceiling): recorded right, carried to the records, shown in the
tables, and able to expose a defect that the easy setting hides.

The ceiling checks recompute it independently: scikit-learn's AUC over the written CSV, test list and planted
scores; Dice by hand over the extracted masks, the planted masks and val.txt.
"""
import concurrent.futures
import csv
import io
import json
import zipfile

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chexnet import auc
from dataprep import ceiling
from dataprep.chestxray14 import facts, synthetic as cx_synthetic
from dataprep.kvasir_seg import synthetic as kv_synthetic
from helpers import run_job
from segmentation import metrics

# The stated bounds of the can-fail checks: a sound pipeline's oracle stays at its ceiling.
SOUND = 0.99      # easy hides the defect: the fraction of ceiling stays above this
EXPOSED = 0.95    # realistic shows it: the fraction of ceiling falls below this
FAINT = 0.6       # the planted defect misses every finding drawn fainter than this contrast


def cx_planted(difficulty, images=3000, seed=0):
    """(written labels, evidence strength, oracle scores) of the demo-sized plan, without drawing images."""
    findings = cx_synthetic.plan(images, seed, 0.02, 0.2)[3]
    labels, strength, scores = cx_synthetic.plant(findings, difficulty, seed, 0.02)
    return findings, labels, findings.astype(float) if strength is None else strength, scores


def misses_faint(findings, strength, scores, difficulty):
    """The oracle with a defect that loses faint evidence (as a crop cutting motifs, or wrong normalisation
    washing out low contrast, would): a finding fainter than FAINT is scored as no finding."""
    absent = cx_synthetic.false_report_rate(difficulty, 0.02)
    return np.where((findings == 1) & (strength < FAINT), absent, scores)


def mean_fraction(labels, scores, ceiling_scores, graded=None):
    """Mean AUC of ``scores`` against ``graded`` (default ``labels``) over the oracle's against ``labels``."""
    graded = labels if graded is None else graded
    return auc.mean_auc(auc.per_class_auc(graded, scores)) / auc.mean_auc(auc.per_class_auc(labels, ceiling_scores))


def test_a_defect_losing_faint_evidence_is_hidden_by_easy_and_shown_by_realistic():
    fractions = {}
    for difficulty in cx_synthetic.DIFFICULTIES:
        findings, labels, strength, scores = cx_planted(difficulty)
        fractions[difficulty] = mean_fraction(labels, misses_faint(findings, strength, scores, difficulty), scores)
    assert fractions["easy"] >= SOUND, fractions
    assert fractions["realistic"] < EXPOSED, fractions


def test_three_permuted_label_columns_fall_below_the_bound():
    _, labels, _, scores = cx_planted("realistic")
    permuted = labels.copy()
    permuted[:, [0, 1, 2]] = labels[:, [1, 2, 0]]  # the records' labels of three classes in the wrong columns
    assert mean_fraction(labels, scores, scores) == 1.0
    assert mean_fraction(labels, scores, scores, graded=permuted) < EXPOSED


def test_masks_shifted_by_4_pixels_fall_below_the_bound():
    for difficulty, boundary in kv_synthetic.DIFFICULTIES.items():
        counts, shifted = [], []
        for index in range(60):
            _, written, planted = kv_synthetic.draw_pair(0, index, 200, boundary)
            written, planted = (cv2.resize(m, (64, 64), interpolation=cv2.INTER_NEAREST) for m in (written, planted))
            moved = np.zeros_like(planted)
            moved[:, 4:] = planted[:, :-4]
            counts.append(metrics.confusion_counts(written[None], planted[None] - 0.5)[0])
            shifted.append(metrics.confusion_counts(written[None], moved[None] - 0.5)[0])
        fraction = metrics.summary(np.array(shifted))["dice"] / metrics.summary(np.array(counts))["dice"]
        assert fraction < 0.9, (difficulty, fraction)  # caught at either difficulty: docs/data.md says so


def test_faint_findings_are_drawn_fainter():
    row = np.zeros(len(facts.CLASSES), np.uint8)
    row[facts.CLASSES.index("Mass")] = 1
    background = cx_synthetic.render(np.zeros_like(row), 64, 7).astype(float)
    full, faint = (cx_synthetic.render(row, 64, 7, np.full(len(row), s)).astype(float) for s in (1.0, 0.3))
    where = cx_synthetic.motif_mask(row, 64, 7, facts.CLASSES.index("Mass"))
    assert abs(faint - background)[where].mean() < 0.5 * abs(full - background)[where].mean()


@pytest.fixture(scope="module")
def realistic_sets(tmp_path_factory):
    """Tiny realistic ChestX-ray14 and Kvasir-SEG made by the three shell stages (official Kvasir lists), the
    two data sets side by side (each writer's start-up is most of its time)."""
    root = tmp_path_factory.mktemp("realistic")

    def stages(dataset, images, size, stored):
        for script, extra in (("download_dataset.sh", ["--synthetic", str(images), "--image-size", str(size),
                                                       "--difficulty", "realistic"]),
                              ("extract_images.sh", []),
                              ("write_tfrecords.sh", ["--image-size", str(stored), "--processes", "1"])):
            run_job(["bash", script, "--dataset", dataset, "--out", str(root), *extra], timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(stages, "chestxray14", 120, 32, 32), pool.submit(stages, "kvasir-seg", 50, 96, 32)]:
            done.result()
    return root


def read_manifest(folder):
    return json.loads((folder / "tfrecords" / "manifest.json").read_text())


def test_chestxray14_ceiling_is_the_planted_scores_auc_on_the_written_labels(realistic_sets):
    folder = realistic_sets / "chestxray14"
    with open(folder / facts.CSV_NAME, newline="") as fh:
        found = {r["Image Index"]: r["Finding Labels"].split("|") for r in csv.DictReader(fh)}
    with open(folder / ceiling.PLANTED_SCORES, newline="") as fh:
        planted = {r["image"]: r for r in csv.DictReader(fh)}
    test = (folder / facts.TEST_LIST).read_text().split()
    expected = {}
    for c in facts.CLASSES:
        y = [c in found[n] for n in test]
        if 0 < sum(y) < len(y):
            expected[c] = roc_auc_score(y, [float(planted[n][c]) for n in test])
    recorded = json.loads((folder / "SYNTHETIC.json").read_text())["ceiling"]["test"]
    carried = read_manifest(folder)["splits"]["test"]["ceiling"]
    for c, value in expected.items():
        assert recorded["auc"][c] == pytest.approx(value, abs=1e-6) == carried["auc"][c]
    assert carried["mean_auc"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    assert carried["mean_auc"] < 0.97  # realistic: not the saturated easy set


def test_kvasir_ceiling_is_the_planted_masks_dice_on_the_written_masks(realistic_sets):
    folder = realistic_sets / "kvasir-seg"
    val = (folder / "val.txt").read_text().split()
    dice = []
    with zipfile.ZipFile(folder / ceiling.PLANTED_MASKS) as z:
        for name in val:
            written = cv2.imread(str(folder / "Kvasir-SEG" / "masks" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE) > 127
            planted = cv2.imdecode(np.frombuffer(z.read(f"{name}.png"), np.uint8), cv2.IMREAD_GRAYSCALE) > 127
            w, p = (cv2.resize(m.astype(np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST) > 0
                    for m in (written, planted))
            both = (w & p).sum()
            dice.append(1.0 if w.sum() + p.sum() == 0 else 2 * both / (w.sum() + p.sum()))
    carried = read_manifest(folder)["splits"]["val"]["ceiling"]
    assert carried["dice"] == pytest.approx(np.mean(dice), abs=1e-6)
    assert carried["dice"] < 0.95


def test_an_easy_set_has_no_ceiling_and_leaves_none_behind(tmp_path):
    out = tmp_path / "cx"
    cx_synthetic.generate(str(out), 24, image_size=32, workers=1, difficulty="realistic")
    assert (out / ceiling.PLANTED_SCORES).is_file()
    cx_synthetic.generate(str(out), 24, image_size=32, workers=1)
    assert not (out / ceiling.PLANTED_SCORES).exists()
    assert ceiling.planted_file(str(out), ceiling.PLANTED_SCORES) is None


def test_tables_show_the_ceiling_only_when_known():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.3], [0.3, 0.1]])
    rows = auc.auc_table(labels, scores, ["A", "B"], n_boot=20)
    assert "ceiling" not in auc.markdown(rows)
    rows = auc.with_ceiling(rows, {"auc": {"A": 1.0, "B": 0.8}})
    assert rows[1]["of_ceiling"] == pytest.approx(rows[1]["auc"] / 0.8)
    assert rows[-1]["of_ceiling"] == pytest.approx(rows[-1]["auc"] / 0.9)
    assert "| ceiling | of ceiling |" in auc.markdown(rows) and "of_ceiling" in auc.csv_text(rows)
    seg = metrics.table(np.array([[3, 1, 1, 11], [2, 0, 2, 12]]), n_boot=20)
    assert "ceiling" not in metrics.markdown(seg)
    seg = metrics.with_ceiling(seg, {"dice": 0.8, "iou": 0.7})
    assert seg[0]["of_ceiling"] == pytest.approx(seg[0]["mean"] / 0.8) and seg[2]["ceiling"] is None
    assert "| ceiling | of ceiling |" in metrics.markdown(seg)
    list(csv.reader(io.StringIO(metrics.csv_text(seg))))
