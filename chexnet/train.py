"""Train CheXNet on N ranks (horovodrun/mpirun/srun) or one process.

    horovodrun -np 2 python -m chexnet.train --data-dir data/chestxray14/tfrecords --epochs 5 --run-name cx
    horovodrun -np 2 python -m chexnet.train --run-name cx --epochs 8 --resume
    python -m chexnet.train --benchmark --synthetic-input --crop 224 --weights none
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.errors import main_guard
from chexnet.config import DATASETS, CheXNetConfig
from training.preflight import preflight

MONITOR = "val_mean_auc"  # picks best.npz and drives the plateau schedule (CheXNet: validation AUC)


@main_guard
def main(argv=None):
    cfg, manifest = preflight(CheXNetConfig, argv, DATASETS, "chexnet.train")
    # TensorFlow and Horovod load from here on, once the flags and the records' manifest passed.
    import tf_keras as keras
    from runtime import distributed
    from runtime.rundir import RunDir
    from chexnet import data, losses, model as cx_model, validation
    from training import benchmark, loop

    ctx, log = loop.start(cfg, manifest, "chexnet")

    if manifest:
        manifest.check_crop(cfg.crop, log)
    run = RunDir.create(cfg, ctx, "chexnet", resume=cfg.resume)
    classes = manifest.classes if manifest else data.CLASSES
    w_pos, w_neg = losses.class_weights(data.class_positives(manifest, "train"), data.class_known(manifest, "train")) \
        if manifest else losses.uniform_weights(len(classes))
    # --init-from replaces the backbone's start: ImageNet weights would be fetched for nothing.
    model = cx_model.build_model(cfg.crop, len(classes), "none" if cfg.init_from else cfg.weights, cfg.bn_momentum)
    optimizer = distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg)
    loop.compile_model(model, optimizer, losses.weighted_bce(w_pos, w_neg), ctx)

    def train_input(ctx):
        steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch, cfg.grad_accum_steps) \
            if manifest else None

        def train_data(first_epoch, epochs=cfg.epochs, first_step=0):
            return data.train_dataset(manifest, ctx.rank, ctx.size, cfg.per_rank_batch, cfg.crop, cfg.seed,
                                      first_epoch, epochs, steps, cfg.pipeline(), first_step)
        return steps, train_data

    if cfg.benchmark:
        return benchmark.run_benchmark(cfg, ctx, run, model, *train_input(ctx), (cfg.crop, cfg.crop, 3),
                                       (len(classes),), crop=cfg.crop, network="densenet121")

    def validators(ctx):
        val_ds = data.eval_dataset(manifest, "val", ctx.rank, ctx.size, cfg.eval_batch, cfg.crop, cfg.pipeline())
        return [validation.WholeSplitAUC(val_ds, manifest.images("val"), classes, w_pos, w_neg)]

    model_info = {"classes": classes, "stored_size": manifest.stored_size, "crop": cfg.crop,
                  "output": cx_model.OUTPUT_KIND}
    loop.fit(cfg, ctx, run, model, train_input, validators, model_info, MONITOR, "max",
             columns=[("val mean AUC", MONITOR, ".4f")])

if __name__ == "__main__":
    main()
