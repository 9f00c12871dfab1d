"""Train CheXNet on N ranks (horovodrun/mpirun/srun) or one process.

    horovodrun -np 2 python -m chexnet.train --data-dir data/chestxray14/tfrecords --epochs 5 --run-name cx
    horovodrun -np 2 python -m chexnet.train --run-name cx --epochs 8 --resume
    python -m chexnet.train --benchmark --synthetic-input --crop 224
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

    manifest = data.Manifest.load(cfg.data_dir)
    manifest.check_crop(cfg.crop, log)
    run = RunDir.create(cfg, ctx, "chexnet", resume=cfg.resume)
    steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch)
    w_pos, w_neg = losses.class_weights(manifest.class_positives("train"), manifest.split("train")["images"])
    model = cx_model.build_model(cfg.crop, len(manifest.classes), cfg.weights, cfg.bn_momentum)
    target_lr = distributed.scaled_lr(cfg.base_lr, ctx.size)
    optimizer = distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg)
    model.compile(optimizer, losses.weighted_bce(w_pos, w_neg), jit_compile=ctx.jit_compile)
    if cfg.benchmark:
        return benchmark.time_steps(cfg, ctx, run, model, manifest, steps)

    # Rank 0 reads the checkpoint; BroadcastInitialState hands its weights and
    # optimizer state to the others, so the run folder need only exist on rank 0.
    state = checkpoint.restore(run.file("last.npz"), model) if cfg.resume and ctx.is_chief else None
    state = distributed.broadcast_object(state)
    if state:
        model.optimizer.build(model.trainable_variables)  # same variables on every rank before the broadcast
        keras.backend.set_value(model.optimizer.learning_rate, state["lr"])
    first_epoch = state["epoch"] if state else 0
    log.info("%d ranks x %d images = global batch %d; %d steps/epoch; LR %.2e -> %.2e; epochs %d..%d; %s",
             ctx.size, cfg.per_rank_batch, ctx.size * cfg.per_rank_batch, steps, cfg.base_lr, target_lr,
             first_epoch + 1, cfg.epochs, run.path)

    train_ds = data.train_dataset(manifest, ctx.rank, ctx.size, cfg.per_rank_batch, cfg.crop, cfg.seed,
                                  first_epoch, cfg.epochs, steps, cfg.shuffle_buffer)
    val_ds = data.eval_dataset(manifest, "val", ctx.rank, ctx.size, cfg.eval_batch, cfg.crop)
    plateau = checkpoint.Plateau(restored=state and state["plateau"], monitor="val_mean_auc", mode="max",
                                 factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr,
                                 verbose=0)
    epoch_end = [validation.WholeSplitAUC(val_ds, manifest.split("val")["images"], manifest.classes, w_pos, w_neg),
                 plateau, checkpoint.CheckpointSaver(
                     run, plateau, {"classes": manifest.classes, "stored_size": manifest.stored_size, "crop": cfg.crop},
                     best=state["best"] if state else float("-inf"))]
    if cfg.tensorboard and ctx.is_chief:
        epoch_end.append(keras.callbacks.TensorBoard(run.file("tensorboard"), profile_batch=0))
    hooks = callbacks.standard_callbacks(run, cfg, ctx, cfg.base_lr, target_lr, steps, cfg.per_rank_batch,
                                         initial_epoch=first_epoch, epoch_end=epoch_end)
    model.fit(train_ds, epochs=cfg.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
              callbacks=hooks.callbacks, verbose=hooks.verbose)

    if ctx.is_chief:
        tables = (f"## Throughput ({ctx.size} ranks)\n\n{report.throughput_table(run.stream.path)}\n\n"
                  f"## Training\n\n{report.epoch_table(run.stream.path)}\n")
        with open(run.file("training.md"), "w", encoding="utf-8") as fh:
            fh.write(tables)
        print(tables, flush=True)


if __name__ == "__main__":
    main()
