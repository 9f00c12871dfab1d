"""Polyp segmentation on Kvasir-SEG: ResUNet++, and U-Net, FCN-8s and SegNet to compare it with, on the shared
trainer skeleton in training/.

    horovodrun -np 2 python -m segmentation.train --data-dir data/kvasir-seg/tfrecords --model unet --run-name seg
    python -m segmentation.evaluate --run runs/seg --split val
    python -m segmentation.predict --checkpoint runs/seg/best.npz --out-dir masks/ a.jpg b.png

What is segmentation's own: ``workload`` (all of it as one training.workload Workload, which the shared
trainer, evaluate, predict and export ask), ``model`` (the four networks, logits out), ``catalog`` (their names, losses and
the image sides each takes, without TensorFlow), ``preprocess`` (the transforms; image and mask move
together), ``data`` (the record schema on the shared sharding), ``losses`` (Dice, BCE, their sum), ``metrics``
(per-image Dice, IoU, precision, recall and their bootstrap intervals), ``validation`` (whole-split figures
every epoch), ``grading`` (evaluate's tables), ``config`` (its settings); ``train``, ``evaluate``, ``predict`` and ``export`` are the entry
points. None of these modules imports Horovod.
"""
