"""Data preparation stages: download, extract, TFRecords (no Horovod here).

Each data set has a sub-package; the shell stages at the repository root
(download_dataset.sh, extract_images.sh, write_tfrecords.sh) call into them.
"""
