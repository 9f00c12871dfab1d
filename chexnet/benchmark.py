"""--benchmark mode of chexnet.train: a fixed number of timed steps, no validation.

    horovodrun -np 2 python -m chexnet.train --benchmark --synthetic-input --crop 224 --run-name bench

Times ``--benchmark-steps`` steps after ``--throughput-warmup-steps`` untimed
ones, on the TFRecords or on random tensors (``--synthetic-input``: no disk,
no decoding, no data set needed), and writes one ``benchmark`` record: global
and per-rank images/s, step-time p50/p90/p99, batch and precision settings.
"""
from chexnet import data
from runtime import callbacks


def time_steps(cfg, ctx, run, model, manifest):
    """Time ``benchmark_steps`` steps after ``throughput_warmup_steps``; no validation.

    ``manifest`` None means random inputs (``--synthetic-input``).
    """
    total = cfg.throughput_warmup_steps + cfg.benchmark_steps
    if manifest is None:
        ds = data.synthetic_dataset(cfg.per_rank_batch, cfg.crop, model.output_shape[-1], cfg.seed + ctx.rank)
    else:
        steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch)
        ds = data.train_dataset(manifest, ctx.rank, ctx.size, cfg.per_rank_batch, cfg.crop, cfg.seed, 0,
                                -(-total // steps), steps, cfg.shuffle_buffer)
    meter = callbacks.Throughput(cfg.per_rank_batch, cfg.throughput_warmup_steps)
    model.fit(ds, epochs=1, steps_per_epoch=total, verbose=0,
              callbacks=[callbacks.BroadcastInitialState(), meter])
    record = dict(meter.last or {}, input="synthetic" if manifest is None else "tfrecords",
                  crop=cfg.crop, per_rank_batch=cfg.per_rank_batch, global_batch=cfg.per_rank_batch * ctx.size,
                  precision=ctx.precision.policy, xla=cfg.xla, fp16_allreduce=cfg.fp16_allreduce,
                  cpu_model=ctx.cpu_model)
    run.stream.write("benchmark", **record)
    if ctx.is_chief and meter.last:
        print(f"benchmark: {meter.last['images_per_s']:.1f} images/s on {ctx.size} rank(s), {ctx.precision.policy}; "
              f"step p50/p90/p99 {meter.last['step_time_p50_s']:.3f}/{meter.last['step_time_p90_s']:.3f}/"
              f"{meter.last['step_time_p99_s']:.3f} s; {run.stream.path}", flush=True)
