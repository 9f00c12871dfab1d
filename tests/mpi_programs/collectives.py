"""Run on 2 ranks by tests/test_distributed.py: each rank writes what the collectives returned.

    mpirun -np 2 python tests/mpi_programs/collectives.py --out DIR
"""
import argparse
import json
import os

import runtime  # noqa: F401
from runtime import callbacks, distributed
from runtime.config import RuntimeConfig
from runtime.throughput import StepMeter

# Known step end times per rank (seconds): rank 1 is twice as slow.
STEP_ENDS = {0: [1.0, 2.0, 3.0], 1: [1.0, 3.0, 5.0]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ctx = distributed.init(RuntimeConfig(precision="float32"))
    result = {"rank": ctx.rank, "size": ctx.size, "threads": ctx.intra_op_threads,
              "mpi_yield_when_idle": os.environ.get("OMPI_MCA_mpi_yield_when_idle")}
    result["mean"] = distributed.allreduce_mean({"a": ctx.rank + 1.0, "b": 10.0 * ctx.rank})

    logs = {"loss": float(ctx.rank), "accuracy": 0.5 + 0.25 * ctx.rank}
    callbacks.MetricAverage().on_epoch_end(0, logs)
    result["averaged_logs"] = logs

    import numpy as np
    result["gathered"] = distributed.allgather(np.arange(ctx.rank + 2) + 100 * ctx.rank).tolist()

    meter = StepMeter(warmup_steps=1)
    meter.start(t=0.0)
    for t in STEP_ENDS[ctx.rank]:
        meter.step(images=10, t=t)
    result["throughput"] = callbacks.gather_throughput(meter)

    import tensorflow as tf
    state = [tf.Variable([float(ctx.rank), 10.0 * ctx.rank]), tf.Variable(3.0 + ctx.rank)]
    distributed.average_variables(state)  # what AverageModelState does to BatchNorm statistics
    result["averaged_variables"] = [v.numpy().tolist() for v in state]
    result["sum"] = distributed.allreduce_sum({"images": 8 * (ctx.rank + 1)})
    seen = callbacks.ImagesSeen(per_rank_batch=4)
    seen.on_epoch_begin(0)
    for _ in range(3 + ctx.rank):  # rank 0 runs 3 batches, rank 1 runs 4
        seen.on_train_batch_end(0)
    seen_logs = {}
    seen.on_epoch_end(0, seen_logs)
    result["images_seen"] = seen_logs["train_images_seen"]

    with open(os.path.join(args.out, f"rank{ctx.rank}.json"), "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
