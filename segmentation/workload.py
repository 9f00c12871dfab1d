"""Polyp segmentation as a workload (training.workload): ResUNet++, U-Net, FCN-8s or SegNet, one logit a pixel.

    wl = training.workload.get("segmentation")
    model = wl.build_model(cfg, manifest)       # cfg.model at the records' stored size

The network trains at the records' stored size (``--synthetic-size`` for
random input); validation is the whole-split Dice (segmentation.validation);
evaluate's tables are segmentation.grading's.
"""
from training.evaluation import EvalConfig
from training.workload import Workload
from segmentation.config import DATASETS, SegmentationConfig, check_size


class Segmentation(Workload):
    name = "segmentation"
    trainer = "segmentation.train"
    config = SegmentationConfig
    eval_config = EvalConfig
    datasets = DATASETS
    monitor = "val_dice"  # picks best.npz and drives the plateau schedule
    columns = (("val Dice", "val_dice", ".4f"), ("val IoU", "val_iou", ".4f"))
    export_module = "segmentation.export"
    stored_channels = 3

    def input_size(self, cfg, manifest):
        return manifest.stored_size if manifest else cfg.synthetic_size

    def check_settings(self, cfg, manifest):
        check_size(self.input_size(cfg, manifest), cfg.model, f"{cfg.data_dir}: records of")

    def model_info(self, cfg, manifest):
        from segmentation.model import OUTPUT_KIND
        return {"model": cfg.model, "stored_size": self.input_size(cfg, manifest), "output": OUTPUT_KIND,
                "loss": cfg.loss}

    def check_runtime(self, cfg, ctx, manifest, log):
        from runtime.errors import UserError
        from segmentation.catalog import determinism_problem
        if cfg.deterministic and determinism_problem(cfg.model, ctx.device):  # the same on every rank
            raise UserError(determinism_problem(cfg.model, ctx.device))

    def build_model(self, cfg, manifest):
        from segmentation.model import build_model
        return build_model(cfg.model, self.input_size(cfg, manifest), bn_momentum=cfg.bn_momentum)

    def prepare(self, model, cfg, rank):
        from segmentation.model import set_dropout_streams
        set_dropout_streams(model, cfg.seed, rank)

    def loss(self, cfg, manifest):
        from segmentation.losses import build_loss
        return build_loss(cfg.loss)

    def train_dataset(self, cfg, manifest, rank, size, first_epoch, epochs, steps, first_step=0):
        from segmentation import data
        return data.train_dataset(manifest, rank, size, cfg.per_rank_batch, cfg.seed, first_epoch, epochs, steps,
                                  cfg.pipeline(), first_step)

    def eval_dataset(self, manifest, split, rank, size, batch, state, pipeline=None):
        from segmentation import data
        from training import shards
        return data.eval_dataset(manifest, split, rank, size, batch, pipeline or shards.Pipeline())

    def validators(self, cfg, manifest, ctx):
        from segmentation.validation import WholeSplitDice
        val_ds = self.eval_dataset(manifest, "val", ctx.rank, ctx.size, cfg.eval_batch, None, cfg.pipeline())
        return [WholeSplitDice(val_ds, manifest.images("val"), self.loss(cfg, manifest))]

    def sample_shapes(self, cfg, manifest):
        side = self.input_size(cfg, manifest)
        return (side, side, self.stored_channels), (side, side, 1)

    def normalise(self, images):
        from segmentation.preprocess import normalize
        return normalize(images)

    def benchmark_settings(self, cfg, manifest):
        return {"image_size": self.input_size(cfg, manifest), "network": cfg.model}

    def check_checkpoint(self, state, path, manifest=None):
        from segmentation.model import check_checkpoint
        check_checkpoint(state, path, manifest.stored_size if manifest else None)

    def model_from_checkpoint(self, state):
        from segmentation.model import build_model
        return build_model(state["model"], state["stored_size"])

    def grade(self, ev, predictor):
        from segmentation import grading
        from segmentation.losses import build_loss
        return grading.timed_gather(ev, predictor, grading.split_dataset(ev), build_loss(ev.state["loss"]))

    def write_grades(self, ev, predictor, graded):
        from segmentation import grading
        grading.write_split(ev, predictor, *graded)


WORKLOAD = Segmentation()
