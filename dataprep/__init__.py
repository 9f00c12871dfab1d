"""Data preparation stages: download, extract, TFRecords (no Horovod here).

Each data set has a sub-package (``chestxray14``, ``kvasir_seg``, and
``csv_set`` for your own CSV and images); the shell stages at the repository
root (download_dataset.sh, extract_images.sh, write_tfrecords.sh) call into
them. Shared by all: ``extract`` (archives, safely and in parallel),
``shards`` (planned, resumable shard writing over MPI ranks), ``records``
(the TFRecord formats), ``flags`` (bounded command-line parsing),
``synthetic_marker`` (which files a synthetic writer made).
"""
