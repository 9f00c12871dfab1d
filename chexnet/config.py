"""CheXNet run settings: the shared trainer settings plus the backbone's (see training.config).

    cfg = parse_args(CheXNetConfig, ["--data-dir", "data/chestxray14/tfrecords", "--epochs", "3"])
"""
import dataclasses

from runtime.config import field
from chexnet.weights import check_weights_flag
from training.config import TrainConfig
from training.evaluation import EvalConfig

DATASETS = ("chestxray14", "csv")  # the writers whose records CheXNet trains on (csv: the user's own classes)


@dataclasses.dataclass
class CheXNetConfig(TrainConfig):
    """Train CheXNet (DenseNet121, 14 pathologies) on ChestX-ray14 TFRecords."""

    data_dir: str = field("data/chestxray14/tfrecords", TrainConfig.DATA_DIR_HELP)
    base_lr: float = field(1e-3, "single-rank Adam learning rate (CheXNet: 1e-3 at batch 16); scaled for "
                           "N ranks by --lr-scaling", above=0, at_most=10)
    eval_batch: int = field(64, "images per rank per step when predicting the validation split", at_least=1,
                            at_most=65536)
    weights: str = field("imagenet", "backbone start: imagenet (as in CheXNet; downloaded once, needs internet), "
                         "none (random) or a local .h5 PATH of DenseNet121 no-top weights")
    crop: int = field(224, "side of the crop fed to the network (random when training, centre otherwise); "
                      "DenseNet121 takes 32 and up", at_least=32, at_most=4096)

    def validate(self):
        super().validate()
        check_weights_flag(self.weights)  # a missing or foreign file is refused before TensorFlow loads


@dataclasses.dataclass
class CheXNetEvalConfig(EvalConfig):
    """Evaluate a CheXNet checkpoint: the shared settings and the operating points' target."""

    sensitivity: float = field(0.9, "target sensitivity of the second operating point, chosen on val (the "
                               "first is Youden's J)", above=0.0, at_most=1.0)
