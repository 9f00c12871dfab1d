"""Evaluate a segmentation checkpoint on a split: Dice, IoU, precision, recall with bootstrap 95% CIs.

    python -m segmentation.evaluate --run runs/seg --split val           # best.npz
    mpirun -np 2 python -m segmentation.evaluate --run runs/seg --split val --checkpoint last.npz
    mpirun -np 2 python -m segmentation.evaluate --run runs/seg --split val,test    # both, one model load

Writes, for each split, <run>/eval-<split>/{metrics.md, metrics.csv, per_image.csv, panels.png},
appends an ``eval`` record (the figures, their intervals and the inference
images/s) to <run>/metrics.jsonl, and prints the table (rank 0). Figures are
per image on predictions thresholded at 0.5, then averaged (segmentation.grading).
A read-only run folder, or a checkpoint that is unreadable or not
segmentation.train's, stops it before any work (training.evaluation).
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from training import evaluation


def main(argv=None):
    evaluation.main("segmentation", argv, "Evaluate a segmentation checkpoint: Dice, IoU, precision, recall with "
                                          "bootstrap intervals, and image panels.")


if __name__ == "__main__":
    main()
