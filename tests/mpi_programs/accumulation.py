"""Run by tests/test_distributed.py: N ranks x K accumulated batches against N*K ranks x 1 batch.

    mpirun -np 2 python tests/mpi_programs/accumulation.py --grad-accum-steps 1 --out DIR
    python tests/mpi_programs/accumulation.py --grad-accum-steps 2 --out DIR

Update u of either job trains on the same global batches, numbered
``u*N*K .. (u+1)*N*K - 1`` (rank r, accumulated batch k: ``(u*N + r)*K + k``),
from the same initial weights, with Adam: the final weights must agree and the
optimizer must count updates, not batches.
"""
import argparse
import os

import numpy as np

import runtime  # noqa: F401
from runtime import callbacks, distributed
from runtime.config import RuntimeConfig

UPDATES, BATCH, FEATURES, CLASSES = 6, 4, 12, 3


def batch(index):
    rng = np.random.default_rng(1000 + index)
    return (rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
            rng.integers(0, CLASSES, size=BATCH).astype(np.int64))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grad-accum-steps", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    k = args.grad_accum_steps
    cfg = RuntimeConfig(precision="float32", grad_accum_steps=k)
    ctx = distributed.init(cfg)
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(7)  # the same initial weights in both jobs
    model = keras.Sequential([keras.layers.Input((FEATURES,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(CLASSES)])
    model.compile(distributed.distributed_optimizer(keras.optimizers.Adam(1e-2), cfg),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    initial_kernel = model.get_weights()[0]
    order = [(u * ctx.size + ctx.rank) * k + j for u in range(UPDATES) for j in range(k)]
    xs, ys = zip(*(batch(i) for i in order))
    ds = tf.data.Dataset.from_tensor_slices((np.stack(xs), np.stack(ys)))
    model.fit(ds, epochs=1, steps_per_epoch=len(order), callbacks=[callbacks.BroadcastInitialState()], verbose=0)
    if ctx.rank == 0:
        np.savez(os.path.join(args.out, f"weights-k{k}.npz"), *model.get_weights(),
                 iterations=int(model.optimizer.iterations.numpy()), initial_kernel=initial_kernel)


if __name__ == "__main__":
    main()
