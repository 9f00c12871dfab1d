"""Train CheXNet on N ranks (horovodrun/mpirun/srun) or one process.

    horovodrun -np 2 python -m chexnet.train --data-dir data/chestxray14/tfrecords --epochs 5 --run-name cx
    horovodrun -np 2 python -m chexnet.train --run-name cx --epochs 8 --resume
    python -m chexnet.train --benchmark --synthetic-input --crop 224 --weights none
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime import callbacks, distributed
from runtime.config import parse_args
from runtime.errors import main_guard
from runtime.logs import setup_logging
from runtime.rundir import RunDir
from chexnet.config import TrainConfig


@main_guard
def main(argv=None):
    cfg = parse_args(TrainConfig, argv)
    ctx = distributed.init(cfg)
    log = setup_logging(ctx.rank, "chexnet")
    import tf_keras as keras  # after init: threads and devices are set
    from chexnet import benchmark, checkpoint, data, losses, model as cx_model, report, validation

    # Random tensors need no data set; everything else reads the manifest.
    manifest = None if cfg.benchmark and cfg.synthetic_input else data.Manifest.load(cfg.data_dir)
    if manifest:
        manifest.check_crop(cfg.crop, log)
    run = RunDir.create(cfg, ctx, "chexnet", resume=cfg.resume)
    classes = manifest.classes if manifest else data.CLASSES
    w_pos, w_neg = losses.class_weights(manifest.class_positives("train"), manifest.split("train")["images"]) \
        if manifest else losses.uniform_weights(len(classes))
    model = cx_model.build_model(cfg.crop, len(classes), cfg.weights, cfg.bn_momentum)
    optimizer = distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg)
    model.compile(optimizer, losses.weighted_bce(w_pos, w_neg), jit_compile=ctx.jit_compile)
    if cfg.benchmark:
        return benchmark.time_steps(cfg, ctx, run, model, manifest)

    # Rank 0 reads the checkpoint; BroadcastInitialState hands its weights and
    # optimizer state to the others, so the run folder need only exist on rank 0.
    state = checkpoint.restore(run.file("last.npz"), model) if cfg.resume and ctx.is_chief else None
    state = distributed.broadcast_object(state)
    if state:
        model.optimizer.build(model.trainable_variables)  # same variables on every rank before the broadcast
        keras.backend.set_value(model.optimizer.learning_rate, state["lr"])  # the rate is not a broadcast variable
    first_epoch = state["epoch"] if state else 0
    steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch)
    log.info("%d ranks x %d images = global batch %d; %d steps/epoch; LR %.2e -> %.2e (%s scaling); "
             "precision %s (%s); epochs %d..%d; %s", ctx.size, cfg.per_rank_batch, ctx.size * cfg.per_rank_batch,
             steps, cfg.base_lr, distributed.scaled_lr(cfg.base_lr, ctx.size, cfg.lr_scaling), cfg.lr_scaling,
             ctx.precision.policy, ctx.precision.reason, first_epoch + 1, cfg.epochs, run.path)

    train_ds = data.train_dataset(manifest, ctx.rank, ctx.size, cfg.per_rank_batch, cfg.crop, cfg.seed,
                                  first_epoch, cfg.epochs, steps, cfg.shuffle_buffer)
    val_ds = data.eval_dataset(manifest, "val", ctx.rank, ctx.size, cfg.eval_batch, cfg.crop)
    plateau = checkpoint.Plateau(restored=state and state["plateau"], monitor="val_mean_auc", mode="max",
                                 factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr,
                                 verbose=0)
    model_info = {"classes": classes, "stored_size": manifest.stored_size, "crop": cfg.crop,
                  "output": cx_model.OUTPUT_KIND, "precision": ctx.compute_dtype}
    epoch_end = [validation.WholeSplitAUC(val_ds, manifest.split("val")["images"], classes, w_pos, w_neg),
                 plateau, checkpoint.CheckpointSaver(run, plateau, model_info,
                                                     best=state["best"] if state else float("-inf"))]
    if cfg.tensorboard and ctx.is_chief:
        epoch_end.append(keras.callbacks.TensorBoard(run.file("tensorboard"), profile_batch=0))
    hooks = callbacks.standard_callbacks(run, cfg, ctx, steps, cfg.per_rank_batch,
                                         initial_epoch=first_epoch, epoch_end=epoch_end)
    model.fit(train_ds, epochs=cfg.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
              callbacks=hooks.callbacks, verbose=hooks.verbose)
    if ctx.is_chief:
        report.write_training_tables(run, ctx.size)


if __name__ == "__main__":
    main()
