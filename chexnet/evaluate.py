"""Evaluate a CheXNet checkpoint on a split: per-pathology AUC with patient-bootstrap and DeLong 95% CI, ROC curves.

    python -m chexnet.evaluate --run runs/cx                    # best.npz on the test split
    mpirun -np 2 python -m chexnet.evaluate --run runs/cx --split val --checkpoint last.npz
    mpirun -np 2 python -m chexnet.evaluate --run runs/cx --split val,test    # both, one model load

Writes, for each split, <run>/eval-<split>/{auc.md, auc.csv, roc.csv, roc.png, predictions.csv}, appends
an ``eval`` record to <run>/metrics.jsonl, and prints the table (rank 0). Operating points (chexnet.operating)
are chosen on val: when val is graded, <run>/operating_points.json holds each pathology's threshold at
Youden's J and at ``--sensitivity``, and eval-<split>/operating_points.{md,csv} give each graded split's
sensitivity and specificity at them (a later job grading test alone reuses the json of the same checkpoint).
A read-only run folder, or a checkpoint that is unreadable or not chexnet.train's, stops it before any work
(training.evaluation). The tables are chexnet.grading's.
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from training import evaluation


def main(argv=None):
    evaluation.main("chexnet", argv, "Evaluate a CheXNet checkpoint: per-pathology AUC table, bootstrap intervals, "
                                     "ROC curves.")


if __name__ == "__main__":
    main()
