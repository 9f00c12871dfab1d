"""The trainer skeleton every workload shares: a trainer is its model, its data and its metrics.

    from training import config, loop, shards
    @dataclasses.dataclass
    class CxConfig(config.TrainConfig):      # epochs, batches, LR schedule, resume, benchmark...
        crop: int = field(224, "...")
    manifest = shards.Manifest.load(cfg.data_dir)
    steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch)
    loop.fit(cfg, ctx, run, model, steps, lambda first: shards.train_batches(...),
             validators=[...], model_info={...}, monitor="val_mean_auc", columns=[...])

Modules: ``config`` (the settings every trainer shares), ``shards`` (manifest,
record-level rank sharding, equal steps, deterministic epochs), ``gather``
(whole-split predictions from every rank, each record exactly once),
``checkpoint`` (resumable .npz state, plateau schedule), ``loop`` (resume, the
callbacks in order, ``fit``, the tables), ``benchmark`` (timed steps, no
validation), ``report`` (tables from metrics.jsonl). None imports Horovod: the
collectives come from ``runtime.distributed``.
"""
