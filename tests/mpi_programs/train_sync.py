"""Run on 2 ranks by tests/test_distributed.py: train a few steps, report weight digests.

    mpirun -np 2 python tests/mpi_programs/train_sync.py --mode runtime --out DIR

(and on 1 rank, which trains with Keras's own optimizer unless it accumulates).

Ranks start from deliberately different weights and read different data.
``--mode runtime`` trains through the runtime (broadcast, distributed
optimizer, warm-up); ``--mode plain`` without it, the control that must diverge.
"""
import argparse
import json
import os

import runtime  # noqa: F401
from runtime import callbacks, distributed
from runtime.config import RuntimeConfig

BASE_LR, TARGET_LR, WARMUP_STEPS, STEPS = 1e-3, 2e-3, 4, 6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["runtime", "plain"], required=True)
    parser.add_argument("--grad-accum-steps", type=int, default=1)
    parser.add_argument("--fp16-allreduce", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # float32: the test's duration must not depend on whether this CPU has bfloat16 units.
    cfg = RuntimeConfig(precision="float32", grad_accum_steps=args.grad_accum_steps,
                        fp16_allreduce=args.fp16_allreduce)
    ctx = distributed.init(cfg)
    import tf_keras as keras
    from smoke import data, model as smoke_model

    keras.utils.set_random_seed(100 + ctx.rank)  # different initial weights per rank
    model = smoke_model.build_cnn(16, 1, data.NUM_CLASSES, widths=(8, 16))
    optimizer = keras.optimizers.Adam(BASE_LR)
    seen_lr = []

    class RecordLR(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen_lr.append(callbacks.current_lr(self.model))

    cbs = [RecordLR()]
    if args.mode == "runtime":
        optimizer = distributed.distributed_optimizer(optimizer, cfg)
        cbs = [callbacks.BroadcastInitialState(),
               callbacks.LearningRateWarmup(BASE_LR, TARGET_LR, WARMUP_STEPS)] + cbs
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = data.train_dataset(per_rank_batch=8, size=16, seed=500 + ctx.rank, pool=256)
    model.fit(ds, steps_per_epoch=STEPS, epochs=1, callbacks=cbs, verbose=0)

    digests = distributed.allgather_object(distributed.weights_digest(model.trainable_variables))
    if ctx.rank == 0:
        with open(os.path.join(args.out, "result.json"), "w") as fh:
            json.dump({"digests": digests, "lr": seen_lr, "wrapped": type(optimizer) is not keras.optimizers.Adam,
                       "in_sync": distributed.replicas_in_sync(model.trainable_variables)}, fh)
    else:
        distributed.replicas_in_sync(model.trainable_variables)  # collective: all ranks call


if __name__ == "__main__":
    main()
