"""CheXNet run settings: every field is a command-line flag (see runtime.config).

    cfg = parse_args(TrainConfig, ["--data-dir", "data/chestxray14/tfrecords", "--epochs", "3"])
"""
import dataclasses

from runtime.config import RuntimeConfig, field
from runtime.errors import UserError


@dataclasses.dataclass
class TrainConfig(RuntimeConfig):
    """Train CheXNet (DenseNet121, 14 pathologies) on ChestX-ray14 TFRecords."""

    data_dir: str = field("data/chestxray14/tfrecords", "folder with manifest.json and the shards")
    weights: str = field("imagenet", "backbone start: imagenet (as in CheXNet; downloaded once, needs internet), "
                         "none (random) or a local .h5 PATH of DenseNet121 no-top weights")
    epochs: int = field(10, "training epochs")
    per_rank_batch: int = field(16, "images per rank per step; global batch = this x ranks")
    base_lr: float = field(1e-3, "single-rank Adam learning rate (CheXNet: 1e-3 at batch 16); scaled for "
                           "N ranks by --lr-scaling")
    crop: int = field(224, "side of the crop fed to the network (random when training, centre otherwise)")
    bn_momentum: float = field(0.99, "BatchNorm moving-average momentum; 0.99 needs thousands of steps "
                               "to settle, short runs (demo, tests) want 0.9")
    plateau_patience: int = field(1, "epochs without a better val mean AUC before the LR drops")
    plateau_factor: float = field(0.1, "LR multiplier on a plateau")
    min_lr: float = field(1e-6, "floor for plateau reductions")
    eval_batch: int = field(64, "images per rank per step when predicting the validation split")
    shuffle_buffer: int = field(10000, "records in each rank's shuffle buffer")
    resume: bool = field(False, "continue the run in --run-name from its last checkpoint")
    tensorboard: bool = field(True, "write TensorBoard logs to <run>/tensorboard (rank 0)")
    benchmark: bool = field(False, "time --benchmark-steps steps (no validation) and write a benchmark record")
    benchmark_steps: int = field(50, "steps per rank timed in --benchmark mode (after the warm-up steps)")
    synthetic_input: bool = field(False, "--benchmark on random tensors instead of the TFRecords (no data needed)")

    def validate(self):
        super().validate()
        for name in ("epochs", "per_rank_batch", "crop", "eval_batch", "benchmark_steps", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.bn_momentum < 1:
            raise UserError(f"--bn-momentum must be in (0, 1), got {self.bn_momentum}")
        if self.crop < 32:
            raise UserError(f"--crop must be >= 32 (DenseNet121's smallest input), got {self.crop}")
        if self.synthetic_input and not self.benchmark:
            raise UserError("--synthetic-input only goes with --benchmark (training needs the TFRecords)")
        if self.resume and not self.run_name:
            raise UserError("--resume needs --run-name: the run folder whose last checkpoint to continue")
