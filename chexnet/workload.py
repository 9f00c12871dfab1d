"""CheXNet as a workload (training.workload): DenseNet121 on X-ray records, one logit per class.

    wl = training.workload.get("chexnet")
    model = wl.build_model(cfg, manifest)       # the manifest's classes (the 14 NIH ones, or a CSV's own)

The class list is the manifest's; the loss weights each class by its positives
among the train split's known labels; validation is the whole-split AUC
(chexnet.validation); evaluate's tables are chexnet.grading's.
"""
from chexnet.config import DATASETS, CheXNetConfig, CheXNetEvalConfig
from training.workload import Workload


class CheXNet(Workload):
    name = "chexnet"
    trainer = "chexnet.train"
    config = CheXNetConfig
    eval_config = CheXNetEvalConfig
    datasets = DATASETS
    monitor = "val_mean_auc"  # picks best.npz and drives the plateau schedule (CheXNet: validation AUC)
    columns = (("val mean AUC", "val_mean_auc", ".4f"),)
    export_module = "chexnet.export"
    stored_channels = 1  # gray X-rays (the network sees RGB)

    def classes(self, manifest):
        from chexnet.data import CLASSES
        return manifest.classes if manifest else list(CLASSES)

    def input_size(self, cfg, manifest):
        return cfg.crop

    def model_info(self, cfg, manifest):
        from chexnet.model import OUTPUT_KIND
        return {"classes": self.classes(manifest), "stored_size": manifest.stored_size if manifest else None,
                "crop": cfg.crop, "output": OUTPUT_KIND}

    def check_runtime(self, cfg, ctx, manifest, log):
        if manifest:
            manifest.check_crop(cfg.crop, log)

    def build_model(self, cfg, manifest):
        from chexnet.model import build_model
        # --init-from replaces the backbone's start: ImageNet weights would be fetched for nothing.
        return build_model(cfg.crop, len(self.classes(manifest)), "none" if cfg.init_from else cfg.weights,
                           cfg.bn_momentum)

    def class_weights(self, manifest):
        from chexnet import data, losses
        if not manifest:
            return losses.uniform_weights(len(self.classes(manifest)))
        return losses.class_weights(data.class_positives(manifest, "train"), data.class_known(manifest, "train"))

    def loss(self, cfg, manifest):
        from chexnet.losses import weighted_bce
        return weighted_bce(*self.class_weights(manifest))

    def train_dataset(self, cfg, manifest, rank, size, first_epoch, epochs, steps, first_step=0):
        from chexnet import data
        return data.train_dataset(manifest, rank, size, cfg.per_rank_batch, cfg.crop, cfg.seed, first_epoch,
                                  epochs, steps, cfg.pipeline(), first_step)

    def eval_dataset(self, manifest, split, rank, size, batch, state, pipeline=None):
        from chexnet import data
        from training import shards
        return data.eval_dataset(manifest, split, rank, size, batch, state["crop"], pipeline or shards.Pipeline())

    def validators(self, cfg, manifest, ctx):
        from chexnet.validation import WholeSplitAUC
        val_ds = self.eval_dataset(manifest, "val", ctx.rank, ctx.size, cfg.eval_batch, {"crop": cfg.crop},
                                   cfg.pipeline())
        return [WholeSplitAUC(val_ds, manifest.images("val"), manifest.classes, *self.class_weights(manifest))]

    def sample_shapes(self, cfg, manifest):
        return (cfg.crop, cfg.crop, self.stored_channels), (len(self.classes(manifest)),)

    def normalise(self, images):
        from chexnet.preprocess import normalise
        return normalise(images)

    def benchmark_settings(self, cfg, manifest):
        return {"crop": cfg.crop, "network": "densenet121"}

    def check_checkpoint(self, state, path, manifest=None):
        from chexnet.model import check_checkpoint
        check_checkpoint(state, path, *((manifest.classes, manifest.stored_size) if manifest else ()))

    def model_from_checkpoint(self, state):
        from chexnet.model import build_model
        return build_model(state["crop"], len(state["classes"]))

    def grade(self, ev, predictor):
        from chexnet import grading
        return grading.gather_split(ev, predictor)

    def write_grades(self, ev, predictor, graded):
        from chexnet import grading
        grading.write_split(ev, *graded)

    def after_grades(self, ev, gathered):
        from chexnet import grading
        grading.write_operating_points(ev, gathered)


WORKLOAD = CheXNet()
