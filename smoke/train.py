"""Train the smoke CNN through the runtime; prints a throughput line.

    horovodrun -np 2 python -m smoke.train --epochs 2 --run-name smoke-demo
"""
import dataclasses

import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from runtime.config import RuntimeConfig, field, parse_args
from runtime.errors import UserError, main_guard
from runtime.logs import setup_logging


@dataclasses.dataclass
class SmokeConfig(RuntimeConfig):
    """Smoke test of the distributed runtime on synthetic stripes."""

    epochs: int = field(3, "passes of --steps-per-epoch batches", at_least=1, at_most=100_000)
    steps_per_epoch: int = field(40, "batches per rank per epoch (the same on every rank)", at_least=1,
                                 at_most=10 ** 6)
    per_rank_batch: int = field(32, "images per rank per step; global batch = this x ranks", at_least=1,
                                at_most=65536)
    image_size: int = field(32, "side of the square synthetic images", at_least=8, at_most=4096)
    base_lr: float = field(2e-3, "single-rank Adam learning rate; scaled by the number of ranks", above=0,
                           at_most=10)
    eval_images: int = field(1024, "held-out images, split across ranks", at_least=1, at_most=10 ** 7)


@main_guard
def main(argv=None):
    cfg = parse_args(SmokeConfig, argv)
    from runtime import callbacks, distributed  # TensorFlow and Horovod: after the flags passed
    from runtime.rundir import RunDir
    ctx = distributed.init(cfg)
    log = setup_logging(ctx.rank, "smoke")
    from smoke import data, model as smoke_model  # after init: TF threads are set
    import tf_keras as keras

    run = RunDir.create(cfg, ctx, prefix="smoke")
    log.info("run folder %s; %d ranks, %s, %d threads per rank",
             run.path, ctx.size, ctx.device, ctx.intra_op_threads)
    train_ds = data.train_dataset(cfg.per_rank_batch, cfg.image_size, seed=cfg.seed + 1000 + ctx.rank)
    eval_ds = data.eval_dataset(cfg.eval_images, cfg.per_rank_batch, cfg.image_size,
                                seed=cfg.seed + 999, shard_index=ctx.rank, num_shards=ctx.size)

    model = smoke_model.build_cnn(cfg.image_size, 1, data.NUM_CLASSES)
    optimizer = distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=ctx.jit_compile)
    hooks = callbacks.standard_callbacks(run, cfg, ctx, cfg.steps_per_epoch, cfg.per_rank_batch)
    model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
              validation_data=eval_ds, callbacks=hooks.callbacks, verbose=hooks.verbose)

    in_sync = distributed.replicas_in_sync(model.trainable_variables)
    final = distributed.allreduce_mean(model.evaluate(eval_ds, verbose=0, return_dict=True))
    final["weights_in_sync"] = in_sync
    run.stream.write("eval", **final)
    if not in_sync:
        raise UserError("weights differ between ranks after training: the allreduce or broadcast is broken")
    if ctx.is_chief:
        tp = hooks.throughput.last
        rate = f"{tp['images_per_s']:.1f} images/s" if tp else "n/a (too few steps)"
        print(f"throughput: {rate} on {ctx.size} rank(s), last epoch, "
              f"{cfg.throughput_warmup_steps} warm-up steps excluded; "
              f"val accuracy {final['accuracy']:.3f}; metrics in {run.stream.path}", flush=True)


if __name__ == "__main__":
    main()
