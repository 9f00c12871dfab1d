"""CheXNet: DenseNet121 with 14 pathology logits, trained on ChestX-ray14 TFRecords.

    horovodrun -np 2 python -m chexnet.train --data-dir data/chestxray14/tfrecords --epochs 5
    python -m chexnet.evaluate --run runs/<name>
    python -m chexnet.predict --checkpoint runs/<name>/best.npz --out predictions.csv image1.png image2.jpg

Modules: ``model`` (the network, logits out), ``preprocess`` (the one input transform of
training, evaluation and prediction), ``data`` (manifest, rank-sharded
datasets), ``losses`` (class-weighted BCE on logits), ``auc`` (per-pathology AUC,
bootstrap intervals, tables), ``validation`` (whole-split AUC across ranks),
``checkpoint`` (atomic, resumable state), ``config`` (the run's settings).
Only ``validation``/``train`` touch the runtime; none imports Horovod.
"""
