"""CheXNet: DenseNet121 with 14 pathology logits, trained on ChestX-ray14 TFRecords.

    horovodrun -np 2 python -m chexnet.train --data-dir data/chestxray14/tfrecords --epochs 5
    python -m chexnet.evaluate --run runs/<name>
    python -m chexnet.predict --checkpoint runs/<name>/best.npz --out predictions.csv image1.png image2.jpg

What is CheXNet's own: ``workload`` (all of it as one training.workload
Workload, which the shared trainer, evaluate, predict and export ask), ``model`` (the network, logits out), ``preprocess``
(the one input transform of training, evaluation and prediction), ``data``
(the record schema and preprocess on the shared sharding), ``losses``
(class-weighted BCE on logits), ``auc`` (per-pathology AUC, bootstrap
intervals, tables), ``validation`` (whole-split AUC every epoch), ``grading`` (evaluate's tables), ``operating``
(per-pathology thresholds chosen on one split), ``cam`` (Grad-CAM heatmaps),
``weights`` (the ``--weights`` check, the ImageNet download), ``config`` (its
settings); ``train``, ``evaluate``, ``predict`` and ``export`` are the entry
points. The rest (sharding, gathering, checkpoints, the loop,
benchmark mode, tables) is the shared skeleton in ``training/``. None of
these modules imports Horovod.
"""
