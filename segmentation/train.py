"""Train ResUNet++ (or U-Net, FCN-8s, SegNet) for polyp segmentation on N ranks (horovodrun/mpirun/srun) or one process.

    horovodrun -np 2 python -m segmentation.train --data-dir data/kvasir-seg/tfrecords --epochs 30 --run-name seg
    horovodrun -np 2 python -m segmentation.train --run-name seg --epochs 40 --resume
    python -m segmentation.train --benchmark --synthetic-input --model unet
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import UserError, main_guard
from segmentation.catalog import determinism_problem
from segmentation.config import DATASETS, SegmentationConfig, check_size
from training.preflight import preflight

MONITOR = "val_dice"  # picks best.npz and drives the plateau schedule


@main_guard
def main(argv=None):
    cfg, manifest = preflight(SegmentationConfig, argv, DATASETS, "segmentation.train")
    size = manifest.stored_size if manifest else cfg.synthetic_size
    check_size(size, cfg.model, f"{cfg.data_dir}: records of")
    # TensorFlow and Horovod load from here on, once the flags and the records' manifest passed.
    import tf_keras as keras
    from runtime import distributed
    from runtime.rundir import RunDir
    from segmentation import data, losses, model as seg_model, validation
    from training import benchmark, loop

    ctx, log = loop.start(cfg, manifest, "segmentation")
    if cfg.deterministic and determinism_problem(cfg.model, ctx.device):  # the same on every rank
        raise UserError(determinism_problem(cfg.model, ctx.device))
    run = RunDir.create(cfg, ctx, "segmentation", resume=cfg.resume)
    model = seg_model.build_model(cfg.model, size, bn_momentum=cfg.bn_momentum)
    seg_model.set_dropout_streams(model, cfg.seed, ctx.rank)
    loss = losses.build_loss(cfg.loss)
    optimizer = distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg)
    loop.compile_model(model, optimizer, loss, ctx)
    log.info("%s: %d parameters at %dx%d", cfg.model, seg_model.count_params(model), size, size)

    def train_input(ctx):
        steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch, cfg.grad_accum_steps) \
            if manifest else None

        def train_data(first_epoch, epochs=cfg.epochs, first_step=0):
            return data.train_dataset(manifest, ctx.rank, ctx.size, cfg.per_rank_batch, cfg.seed, first_epoch,
                                      epochs, steps, cfg.pipeline(), first_step)
        return steps, train_data

    if cfg.benchmark:
        return benchmark.run_benchmark(cfg, ctx, run, model, *train_input(ctx), (size, size, 3), (size, size, 1),
                                       image_size=size, network=cfg.model)

    def validators(ctx):
        val_ds = data.eval_dataset(manifest, "val", ctx.rank, ctx.size, cfg.eval_batch, cfg.pipeline())
        return [validation.WholeSplitDice(val_ds, manifest.images("val"), loss)]

    model_info = {"model": cfg.model, "stored_size": size, "output": seg_model.OUTPUT_KIND, "loss": cfg.loss}
    loop.fit(cfg, ctx, run, model, train_input, validators, model_info, MONITOR, "max",
             columns=[("val Dice", "val_dice", ".4f"), ("val IoU", "val_iou", ".4f")])

if __name__ == "__main__":
    main()
