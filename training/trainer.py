"""The one trainer: a workload's flags, records, model, loss and validation through the shared loop.

    python -m chexnet.train ...          # chexnet/train.py: main("chexnet", argv)
    python -m segmentation.train ...     # segmentation/train.py: main("segmentation", argv)

Order: flags, the records' manifest and the workload's settings checked
before TensorFlow loads (training.preflight); then the runtime (Horovod,
device, precision), the run folder, the model compiled with the distributed
optimizer, and either ``--benchmark``'s timed steps or ``loop.fit``.
"""
from runtime.errors import main_guard
from training import workload
from training.preflight import preflight


def main(name, argv=None):
    """Train workload ``name`` (training.workload) with the command line ``argv``."""
    return main_guard(_train)(workload.get(name), argv)


def _train(wl, argv):
    cfg, manifest = preflight(wl, argv)
    # TensorFlow and Horovod load from here on, once the flags and the records' manifest passed.
    import tf_keras as keras
    from runtime import distributed
    from runtime.rundir import RunDir
    from training import benchmark, loop

    ctx, log = loop.start(cfg, manifest, wl.name)
    wl.check_runtime(cfg, ctx, manifest, log)
    run = RunDir.create(cfg, ctx, wl.name, resume=cfg.resume)
    model = wl.build_model(cfg, manifest)
    wl.prepare(model, cfg, ctx.rank)
    log.info("%s: %d parameters, input %s", model.name, model.count_params(), wl.sample_shapes(cfg, manifest)[0])
    model = wl.device_model(model)  # uint8 batches to the device; the network's weights, its checkpoints
    optimizer = distributed.distributed_optimizer(keras.optimizers.Adam(cfg.base_lr), cfg)
    loop.compile_model(model, optimizer, wl.loss(cfg, manifest), ctx)
    if cfg.benchmark:
        return benchmark.run_benchmark(cfg, ctx, run, model, wl, manifest)
    loop.fit(cfg, ctx, run, model, wl, manifest)

