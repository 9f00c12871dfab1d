"""The settings every trainer shares; a trainer subclasses ``TrainConfig`` and adds its own.

    @dataclasses.dataclass
    class SegConfig(TrainConfig):
        data_dir: str = field("data/kvasir-seg/tfrecords", TrainConfig.DATA_DIR_HELP)  # a new default
        model: str = field("resunetpp", "network", choices=["resunetpp", "unet"])

    cfg = parse_args(SegConfig, ["--epochs", "3"])
    cfg.epochs, cfg.model   # (3, 'resunetpp')

Every field is a flag (``runtime.config``); ``--preset FILE`` fills them from a
JSON file first, and flags given on the command line win.
"""
import dataclasses
import os

from runtime.config import RuntimeConfig, field
from runtime.errors import UserError


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """What a rank's input pipeline may hold and use: shuffle-buffer memory, and its threads.

    The buffer holds serialized records, so its size in records follows from the
    data set's mean record size (``records_for``): the same memory for 64 KB raw
    X-rays as for 35 KB PNG ones or 256 KB colour frames.
    """
    shuffle_mb: float = 256.0  # benchmarks/README.md: a rank's RSS grows by the buffer's bytes
    threads: int = 0           # tf.data threads and parallel decodes per rank; 0: TensorFlow's autotuning

    def records_for(self, record_bytes):
        """Records the buffer holds: at least 1."""
        return max(1, int(self.shuffle_mb * 2 ** 20 // max(1.0, record_bytes)))


@dataclasses.dataclass
class TrainConfig(RuntimeConfig):
    """Train a model on TFRecords written by write_tfrecords.sh."""

    DATA_DIR_HELP = "folder with manifest.json and the shards of write_tfrecords.sh"

    data_dir: str = field("", DATA_DIR_HELP)
    epochs: int = field(10, "training epochs", at_least=1, at_most=100_000)
    per_rank_batch: int = field(16, "images per rank per step; global batch = this x ranks", at_least=1,
                                at_most=65536)
    base_lr: float = field(1e-3, "single-rank Adam learning rate; scaled for N ranks by --lr-scaling", above=0,
                           at_most=10)
    plateau_patience: int = field(1, "epochs without a better monitored validation figure before the LR drops",
                                  at_least=0, at_most=100_000)
    plateau_factor: float = field(0.1, "LR multiplier on a plateau", above=0, at_most=0.999)
    min_lr: float = field(1e-6, "floor for plateau reductions (at most --base-lr)", at_least=0, at_most=10)
    eval_batch: int = field(32, "images per rank per step when predicting the validation split", at_least=1,
                            at_most=65536)
    shuffle_buffer_mb: float = field(256.0, "MB of serialized records in each rank's shuffle buffer; the record "
                                     "count follows from the records' mean size in manifest.json (256 MB: 4,096 "
                                     "raw 256x256 X-rays)", above=0, at_most=1_048_576)
    data_threads: int = field(0, "tf.data threads (and parallel decodes) per rank; 0: TensorFlow's autotuning "
                              "over all cores. Ranks sharing a node may cap it (benchmarks/input_pipeline.py)",
                              at_least=0, at_most=1024)
    bn_momentum: float = field(0.99, "BatchNorm moving-average momentum; 0.99 needs thousands of steps "
                               "to settle, short runs (demo, tests) want 0.9", above=0, at_most=0.9999)
    resume: bool = field(False, "continue the run in --run-name from its last checkpoint")
    stall_timeout_s: float = field(600.0, "seconds without progress (a step, a validation batch) after which a "
                                   "rank ends itself, and so the job: a frozen peer would hang it; 0: never",
                                   at_least=0, at_most=7 * 86400)
    init_from: str = field("", "fine-tune: start from the weights of RUN_FOLDER (its best.npz) or of an .npz "
                           "checkpoint; layers whose shapes differ (the head, for other classes) start fresh; "
                           "no optimizer state or position (that is --resume)")
    checkpoint_every_steps: int = field(0, "also write last.npz every N steps within an epoch, resumed at the "
                                        "exact step (0: at epoch ends only; a stop signal always writes one)",
                                        at_least=0, at_most=10 ** 9)
    stop_check_s: float = field(2.0, "about this many seconds of batches between the ranks' agreement on a stop "
                                "signal or a non-finite loss (the only host read of the loss and the only "
                                "collective between batches; the steps are agreed at each check); 0: after "
                                "every batch", at_least=0, at_most=3600)
    elastic: bool = field(False, "elastic training under horovodrun --min-np/--max-np --host-discovery-script "
                          "(Gloo): a lost worker leaves the others training from the last commit (each "
                          "checkpoint), added workers join at the next one; needs --run-name (training.elastic)")
    tensorboard: bool = field(True, "write TensorBoard logs to <run>/tensorboard (rank 0)")
    timeline: bool = field(False, "record Horovod's timeline of collectives to <run>/horovod_timeline.json "
                           "(rank 0; Chrome-trace JSON, open in chrome://tracing or Perfetto)")
    profile_steps: str = field("", "A:B records TensorFlow's profiler over steps A to B of the first epoch on "
                               "rank 0, into <run>/tensorboard (its Profile tab)")
    nvtx: bool = field(False, "NVTX ranges for nsys profile (GPU): each train step, each record's decode, and "
                       "Horovod's collectives (runtime.nvtx)")
    benchmark: bool = field(False, "time --benchmark-steps steps (no validation) and write a benchmark record")
    benchmark_steps: int = field(50, "steps per rank timed in --benchmark mode (after the warm-up steps)",
                                 at_least=1, at_most=10 ** 6)
    synthetic_input: bool = field(False, "--benchmark on random tensors instead of the TFRecords (no data needed)")

    def pipeline(self):
        return Pipeline(self.shuffle_buffer_mb, self.data_threads)

    def validate(self):
        super().validate()
        if self.min_lr > self.base_lr:
            raise UserError(f"--min-lr {self.min_lr:g} is above --base-lr {self.base_lr:g}: plateau cuts would "
                            f"raise the learning rate; lower --min-lr")
        if self.synthetic_input and not self.benchmark:
            raise UserError("--synthetic-input only goes with --benchmark (training needs the TFRecords)")
        if self.profile_steps:
            self.profile_range()  # a bad value is refused before any work
            if not self.tensorboard:
                raise UserError("--profile-steps writes into the TensorBoard folder: drop --no-tensorboard")
        if self.elastic and not self.run_name:
            raise UserError("--elastic needs --run-name: a worker that joins later must find the run's folder")
        if self.xla and self.elastic:  # --xla trains one rank without Horovod's optimizer wrapper
            raise UserError("--xla trains one rank only and cannot join an elastic job: drop --xla or --elastic")
        if self.elastic and self.grad_accum_steps > 1:  # a rolled-back or joining worker's sums would be stale
            raise UserError("--elastic with --grad-accum-steps > 1 is refused: a worker lost mid-update would leave "
                            "the others' accumulated gradients out of step; drop one of them (a larger "
                            "--per-rank-batch gives the same global batch)")
        if self.checkpoint_every_steps % self.grad_accum_steps:
            raise UserError(f"--checkpoint-every-steps {self.checkpoint_every_steps} is not a multiple of "
                            f"--grad-accum-steps {self.grad_accum_steps}: checkpoints are written between "
                            f"updates only; pass a multiple")
        if self.init_from:
            self.init_from_checkpoint()  # a missing run or file is refused before TensorFlow loads
            if self.resume:
                raise UserError("--init-from starts a new run from other weights, --resume continues this one: "
                                "drop one of them")
        if self.resume and not self.run_name:
            raise UserError("--resume needs --run-name: the run folder whose last checkpoint to continue")
        if not self.data_dir and not (self.benchmark and self.synthetic_input):
            raise UserError("--data-dir is empty: pass the folder write_tfrecords.sh wrote")

    def init_from_checkpoint(self):
        """The checkpoint --init-from names: RUN/best.npz for a run folder, else the file itself."""
        path = os.path.join(self.init_from, "best.npz") if os.path.isdir(self.init_from) else self.init_from
        if not os.path.isfile(path):
            what = "best.npz in that run folder" if os.path.isdir(self.init_from) else "such file"
            raise UserError(f"--init-from {self.init_from}: no {what}; pass a run folder that holds best.npz, or an "
                            f".npz checkpoint of one")
        return path

    def profile_range(self):
        """(A, B) of --profile-steps A:B, 1-based steps with 1 <= A <= B."""
        try:
            first, last = (int(v) for v in self.profile_steps.split(":"))
        except ValueError:
            first = last = 0
        if not 1 <= first <= last:
            raise UserError(f"--profile-steps takes A:B with 1 <= A <= B (steps of the first epoch), got "
                            f"{self.profile_steps!r}")
        return first, last
