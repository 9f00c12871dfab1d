"""Segmentation run settings: the shared trainer settings plus the network's (see training.config).

    cfg = parse_args(SegmentationConfig, ["--model", "unet", "--epochs", "3"])
"""
import dataclasses

from runtime.config import field
from runtime.errors import UserError
from segmentation.catalog import DOWNSAMPLING, LOSS_NAMES, size_problem
from training.config import TrainConfig

DATASETS = ("kvasir-seg", "masks")  # the writers whose records segmentation trains on (masks: the user's folders)


@dataclasses.dataclass
class SegmentationConfig(TrainConfig):
    """Train a polyp segmentation network (ResUNet++, U-Net, FCN-8s or SegNet) on Kvasir-SEG TFRecords."""

    data_dir: str = field("data/kvasir-seg/tfrecords", TrainConfig.DATA_DIR_HELP)
    model: str = field("resunetpp", "network", choices=sorted(DOWNSAMPLING))
    loss: str = field("dice_bce", "per-image loss: Dice + BCE, Dice, or BCE (all from logits)",
                      choices=list(LOSS_NAMES))
    per_rank_batch: int = field(8, "images per rank per step; global batch = this x ranks", at_least=1,
                                at_most=65536)
    eval_batch: int = field(16, "images per rank per step when predicting the validation split", at_least=1,
                            at_most=65536)
    synthetic_size: int = field(256, "image side of --benchmark --synthetic-input (otherwise the network "
                                "takes the stored size of the records)", at_least=32, at_most=4096)

    def validate(self):
        super().validate()
        check_size(self.synthetic_size, self.model, "--synthetic-size")


def check_size(size, model, what):
    problem = size_problem(size, model)
    if problem:
        raise UserError(f"{what} {size}: {problem}; rewrite the records with write_tfrecords.sh --image-size 256, "
                        f"for example")
