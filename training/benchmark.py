"""--benchmark mode of every trainer: a fixed number of timed steps, no validation.

    horovodrun -np 2 python -m chexnet.train --benchmark --synthetic-input --crop 224 --run-name bench
    run_benchmark(cfg, ctx, run, model, wl, manifest)   # from training.trainer; manifest None: random input

Times ``--benchmark-steps`` steps after ``--throughput-warmup-steps`` untimed
ones, on the trainer's TFRecord input or on random tensors
(``--synthetic-input``: no disk, no decoding, no data set needed), and writes
one ``benchmark`` record: global and per-rank images/s, step-time
p50/p90/p99, peak resident memory (max over ranks and per rank, MB), the
trainable parameters (the gradient an allreduce carries), batch and precision
settings, CPU model, and the trainer's ``settings`` (input size, model).
"""
import resource

from runtime import callbacks, distributed, nvtx
from training import engine, shards


def total_steps(cfg):
    return cfg.throughput_warmup_steps + cfg.benchmark_steps


def run_benchmark(cfg, ctx, run, model, wl, manifest):
    """Benchmark mode of workload ``wl``: random tensors of its example shapes when ``manifest`` is None
    (``--synthetic-input``), else enough epochs of its training batches."""
    if manifest is None:
        ds = shards.random_batches(cfg.per_rank_batch, *wl.sample_shapes(cfg, manifest), cfg.seed + ctx.rank)
    else:
        steps, train_data = engine.train_input(cfg, wl, manifest, ctx)
        ds = train_data(0, -(-total_steps(cfg) // steps))
    time_steps(cfg, ctx, run, model, ds, "synthetic" if manifest is None else "tfrecords",
               **wl.benchmark_settings(cfg, manifest))


def time_steps(cfg, ctx, run, model, dataset, input_kind, **settings):
    """Time ``benchmark_steps`` steps of ``dataset`` after ``throughput_warmup_steps``; no validation."""
    meter = callbacks.Throughput(cfg.per_rank_batch, cfg.throughput_warmup_steps)
    model.fit(dataset, epochs=1, steps_per_epoch=total_steps(cfg), verbose=0,
              callbacks=([nvtx.StepRanges()] if cfg.nvtx else []) + [callbacks.BroadcastInitialState(), meter])
    # A collective on every rank: each process's own peak, so the record shows the largest and each.
    peak_mb = distributed.allgather_object(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KB on Linux
    record = dict(meter.last or {}, input=input_kind, **settings, per_rank_batch=cfg.per_rank_batch,
                  global_batch=cfg.per_rank_batch * ctx.size, precision=ctx.precision.policy, xla=cfg.xla,
                  fp16_allreduce=cfg.fp16_allreduce, cpu_model=ctx.cpu_model,
                  trainable_parameters=sum(int(v.shape.num_elements()) for v in model.trainable_variables),
                  peak_rss_mb=max(peak_mb), peak_rss_mb_per_rank=peak_mb)
    run.stream.write("benchmark", **record)
    if ctx.is_chief and meter.last:
        print(f"benchmark: {meter.last['images_per_s']:.1f} images/s on {ctx.size} rank(s), {ctx.precision.policy}; "
              f"step p50/p90/p99 {meter.last['step_time_p50_s']:.3f}/{meter.last['step_time_p90_s']:.3f}/"
              f"{meter.last['step_time_p99_s']:.3f} s; {run.stream.path}", flush=True)

