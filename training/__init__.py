"""The trainer skeleton every workload shares: a trainer is its model, its data and its metrics.

    from training import config, loop, shards
    @dataclasses.dataclass
    class CxConfig(config.TrainConfig):      # epochs, batches, LR schedule, resume, benchmark...
        crop: int = field(224, "...")
    cfg, ctx, log, manifest = loop.start(CxConfig, argv, "chexnet")
    loop.fit(cfg, ctx, run, model, train_input=lambda ctx: (steps, lambda first_epoch, ...: shards.train_batches(...)),
             validators=lambda ctx: [...], model_info={...}, monitor="val_mean_auc", columns=[...])

Modules: ``config`` (the settings every trainer shares), ``shards`` (manifest,
record-level rank sharding, equal steps, deterministic epochs), ``gather``
(whole-split predictions from every rank, each record exactly once),
``checkpoint`` (resumable .npz state, plateau schedule), ``loop`` (start-up,
resume, the callbacks in order, ``fit``, the tables), ``elastic`` (the same
training across lost and added workers), ``benchmark`` (timed
steps, no validation), ``report`` (tables from metrics.jsonl), ``evaluation``
and ``prediction`` (what the evaluate and predict entry points share). None
imports Horovod: the collectives come from ``runtime.distributed``.
"""
