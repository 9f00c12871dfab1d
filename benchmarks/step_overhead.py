"""Benchmark: what each layer of the trainer costs a training step, against a bare loop of the same model.

    .venv/bin/python benchmarks/step_overhead.py [--workload chexnet] [--size 224] [--per-rank-batch 16]
                                                 [--images 600] [--ranks 1,2] [--rounds 3]
    .venv/bin/python benchmarks/step_overhead.py --tables-only     # the table again, from the records alone

The workload's model, loss and Adam, in float32, on the same records (synthetic data through the real
stages, read by the workload's own training batches), one epoch of the train split at each rank count,
timed after ``--warmup-steps`` steps, four ways:

- ``bare``: a ``tf.function`` step written here (forward, loss, Horovod's gradient tape through
  ``runtime.distributed``, Adam); the host waits for the device only at both ends of the timed span;
- ``fit``: Keras ``fit`` with the distributed optimizer and the initial broadcast, no other callback;
- ``benchmark``: the trainer's ``--benchmark`` mode (a host sync per timed step, no validation);
- ``training``: the trainer itself with every callback (its epoch record's throughput: spans between
  the stop checks; validation left out).

Images/s is all ranks' timed images over the slowest rank's time. Variants alternate within each of
``--rounds`` rounds (the machine is shared); the table shows medians and each variant's ratio to ``bare``
at the same ranks. Records: <out>/metrics.jsonl; <out>.md is built from it alone.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import (  # noqa: E402  (needs ROOT on sys.path)
    mpi_env, output_flags, ranks_command, sh, start_records, synthetic_data)

VARIANTS = ("bare", "fit", "benchmark", "training")
STAGES = {"chexnet": ("chestxray14", []), "segmentation": ("kvasir-seg", ["--split", "random"])}


def trainer_flags(args, data):
    model = ["--weights", "none", "--crop", str(args.size)] if args.workload == "chexnet" else \
        ["--model", args.seg_model]
    return ["--data-dir", data, *model, "--per-rank-batch", str(args.per_rank_batch), "--precision", "float32",
            "--throughput-warmup-steps", str(args.warmup_steps), "--epochs", "1", "--seed", "0"]


# ---------------------------------------------------------------- the two loops written here (one rank each)
def run_worker(args):
    """Under mpirun: ``bare`` or ``fit`` for one epoch; rank 0 writes {images_per_s, timed_steps} to --result."""
    import runtime  # noqa: F401  (legacy Keras before TensorFlow loads)
    from runtime.config import parse_args
    from training import workload
    from training.manifest import Manifest
    wl = workload.get(args.workload)
    cfg = parse_args(wl.config, trainer_flags(args, args.data_dir))
    from runtime import distributed
    ctx = distributed.init(cfg)
    manifest = Manifest.load(cfg.data_dir)
    steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch)
    model, loss = wl.device_model(wl.build_model(cfg, manifest)), wl.loss(cfg, manifest)  # as the trainer's
    batches = wl.train_dataset(cfg, manifest, ctx.rank, ctx.size, 0, 1, steps)
    elapsed = (bare_loop if args.worker == "bare" else fit_loop)(model, loss, batches, steps, args.warmup_steps,
                                                                 cfg)
    slowest = max(distributed.allgather_object(elapsed))
    timed = steps - args.warmup_steps
    if ctx.is_chief:
        with open(args.result, "w", encoding="utf-8") as fh:
            json.dump({"images_per_s": timed * cfg.per_rank_batch * ctx.size / slowest, "timed_steps": timed}, fh)


def bare_loop(model, loss_fn, batches, steps, warmup, cfg):
    import tensorflow as tf
    import tf_keras as keras
    from runtime import distributed
    optimizer = keras.optimizers.Adam(cfg.base_lr)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))  # as Keras reduces a loss function
        grads = distributed.gradient_tape(tape).gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    it = iter(batches)
    loss = step(*next(it))
    # Horovod: after the first step, when the optimizer's slots exist, every rank takes rank 0's state.
    distributed.broadcast_variables(model.variables + optimizer.variables(), 0)
    for _ in range(warmup - 1):
        loss = step(*next(it))
    float(loss)  # the host waits for the warm-up: the span starts on an idle device
    t0 = time.perf_counter()
    for _ in range(steps - warmup):
        loss = step(*next(it))
    float(loss)
    return time.perf_counter() - t0


def fit_loop(model, loss_fn, batches, steps, warmup, cfg):
    import tf_keras as keras
    from runtime import callbacks, distributed

    class Span(keras.callbacks.Callback):
        """The host waits at the warm-up's end and at the last batch only."""

        def __init__(self):
            super().__init__()
            self._supports_tf_logs, self.t = True, {}

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (warmup, steps):
                float(logs["loss"])
                self.t[batch + 1] = time.perf_counter()

    span = Span()
    model.compile(distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg), loss_fn)
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[callbacks.BroadcastInitialState(), span])
    return span.t[steps] - span.t[warmup]


# ---------------------------------------------------------------- the study
def measure(args, variant, ranks, data, work):
    """Images/s of one variant at ``ranks``."""
    from runtime.metrics import read_events
    log = os.path.join(work, f"{variant}-{ranks}.log")
    if variant in ("bare", "fit"):
        result = os.path.join(work, f"{variant}-{ranks}.json")
        sh(ranks_command(ranks, [os.path.abspath(__file__), "--worker", variant, "--data-dir", data,
                                 "--result", result, *study_flags(args)]), log, env=mpi_env())
        with open(result, encoding="utf-8") as fh:
            return json.load(fh)
    name = f"{variant}-{ranks}-{time.time_ns()}"
    extra = ["--benchmark", "--benchmark-steps", str(steps_at(data, ranks, args) - args.warmup_steps)] \
        if variant == "benchmark" else []
    sh(ranks_command(ranks, ["-m", f"{args.workload}.train", *trainer_flags(args, data), *extra,
                             "--runs-dir", work, "--run-name", name]), log, env=mpi_env())
    stream = os.path.join(work, name, "metrics.jsonl")
    record = read_events(stream, "benchmark")[-1] if extra else read_events(stream, "epoch")[-1]["throughput"]
    return {"images_per_s": record["images_per_s"], "timed_steps": record["timed_steps"]}


def steps_at(data, ranks, args):
    from training.manifest import Manifest
    return Manifest.load(data).steps_per_epoch("train", ranks, args.per_rank_batch)


def study_flags(args):
    return ["--workload", args.workload, "--size", str(args.size), "--seg-model", args.seg_model,
            "--per-rank-batch", str(args.per_rank_batch), "--warmup-steps", str(args.warmup_steps)]


def record_sides(args):
    """(synthetic image side, stored side): CheXNet crops ``--size`` from records of at least 256, the
    segmentation networks take records stored at ``--size``."""
    if args.workload == "chexnet":
        return max(256, args.size), max(256, args.size)
    return 2 * args.size, args.size


def make_records(args, work):
    dataset, write = STAGES[args.workload]
    source, stored = record_sides(args)
    return os.path.join(synthetic_data(dataset, os.path.join(work, "data"), args.images, source, stored, write),
                        "tfrecords")


def run_study(args):
    ranks = [int(r) for r in args.ranks.split(",")]
    if args.data_dir and args.workload == "segmentation":  # the networks take the records at their side
        from training.manifest import Manifest
        args.size = Manifest.load(args.data_dir).stored_size
    stream = start_records(args.out, study="step_overhead", workload=args.workload, size=args.size,
                           per_rank_batch=args.per_rank_batch, warmup_steps=args.warmup_steps, rounds=args.rounds,
                           precision="float32", data=args.data_dir or f"synthetic, {args.images} images")
    with tempfile.TemporaryDirectory(prefix="step-overhead-") as work:
        data = args.data_dir or make_records(args, work)
        for round_ in range(args.rounds):
            for n in ranks:
                order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]  # alternate: drift hits every variant
                for variant in order:
                    figure = measure(args, variant, n, data, work)
                    stream.write("run", variant=variant, ranks=n, round=round_, **figure)
                    print(f"round {round_ + 1} ranks {n} {variant}: {figure['images_per_s']:.2f} images/s",
                          flush=True)
    write_table(args.out)


def write_table(out):
    from runtime.metrics import read_events
    path = os.path.join(out, "metrics.jsonl")
    study, runs = read_events(path, "study")[0], read_events(path, "run")
    by = {}
    for r in runs:
        by.setdefault((r["ranks"], r["variant"]), []).append(r["images_per_s"])
    lines = [f"# Step overhead: {study['workload']} ({study['size']}), batch {study['per_rank_batch']} per rank, "
             f"{study['precision']}", "",
             f"`{study['command']}` on {study['date']}, {study['machine']['cpu']} ({study['machine']['cores']} "
             f"cores), TensorFlow {study['machine']['tensorflow']}, horovod {study['machine']['horovod']}; medians "
             f"of {study['rounds']} alternating rounds, images/s over one epoch after {study['warmup_steps']} "
             "warm-up steps.", "",
             "| ranks | variant | images/s (median) | rounds | x bare |", "|---|---|---|---|---|"]
    for n in sorted({r for r, _ in by}):
        bare = statistics.median(by.get((n, "bare"), [float("nan")]))
        for variant in VARIANTS:
            if (n, variant) in by:
                med = statistics.median(by[(n, variant)])
                shown = ", ".join(f"{v:.2f}" for v in by[(n, variant)])
                lines.append(f"| {n} | {variant} | {med:.2f} | {shown} | {med / bare:.3f} |")
    with open(out + ".md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(STAGES), default="chexnet")
    p.add_argument("--size", type=int, default=224,
                   help="CheXNet's crop (DenseNet121, random weights), or the segmentation records' side")
    p.add_argument("--seg-model", default="resunetpp", help="segmentation's network (records at their size)")
    p.add_argument("--per-rank-batch", type=int, default=16)
    p.add_argument("--images", type=int, default=600, help="synthetic images (the train split is one epoch)")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    output_flags(p, "step_overhead")
    p.add_argument("--worker", choices=("bare", "fit"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help="the workload's TFRecords to time (default: a synthetic set of --images made "
                   "by the data stages)")
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, low, high in (("size", 32, 4096), ("per_rank_batch", 1, 4096), ("images", 20, 10 ** 6),
                            ("warmup_steps", 1, 1000), ("rounds", 1, 100)):
        if not low <= getattr(args, name) <= high:
            p.error(f"--{name.replace('_', '-')} must be {low} to {high}, got {getattr(args, name)}")
    if args.data_dir and not os.path.isfile(os.path.join(args.data_dir, "manifest.json")):
        p.error(f"--data-dir {args.data_dir}: no manifest.json there; pass a folder write_tfrecords.sh wrote")
    if not all(r.isdigit() and 1 <= int(r) <= 64 for r in args.ranks.split(",")):
        p.error(f"--ranks {args.ranks!r}: give rank counts 1 to 64, comma-separated (1,2)")
    return args


def main(argv=None):
    args = parse(argv)
    if args.worker:
        return run_worker(args)
    if args.tables_only:
        return write_table(args.out)
    run_study(args)


if __name__ == "__main__":
    main()
