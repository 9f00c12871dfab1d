"""What a trainer checks before TensorFlow and Horovod load: a typo or a wrong folder costs no start-up.

    cfg, manifest = preflight(workload.get("chexnet"), argv)
    from training import loop            # TensorFlow loads here
    ctx, log = loop.start(cfg, manifest, "chexnet")

The manifest is None for ``--benchmark --synthetic-input``: random tensors need no data set.
"""
from runtime.config import parse_args
from runtime.files import check_writable_folder
from training.manifest import Manifest


def preflight(wl, argv):
    """The flags of workload ``wl`` (training.workload), the records' manifest (its data set, its shards'
    presence and sizes), the runs folder and the workload's own checks of the settings."""
    cfg = parse_args(wl.config, argv)
    check_writable_folder(cfg.runs_dir, "--runs-dir")
    manifest = None
    if not (cfg.benchmark and cfg.synthetic_input):
        manifest = Manifest.load(cfg.data_dir)
        manifest.expect_dataset(wl.datasets, wl.trainer)
        for split in splits_read(cfg):
            manifest.files(split)  # a missing split or shard, or one of another size in bytes, stops here
    wl.check_settings(cfg, manifest)
    return cfg, manifest


def splits_read(cfg):
    """The splits a run reads: validation too, unless it only times steps."""
    return ("train",) if cfg.benchmark else ("train", "val")
