"""The trainer skeleton every workload shares: a trainer is its model, its data and its metrics.

    from training import config, loop, shards
    from training.preflight import preflight
    @dataclasses.dataclass
    class CxConfig(config.TrainConfig):      # epochs, batches, LR schedule, resume, benchmark...
        crop: int = field(224, "...")
    cfg, manifest = preflight(CxConfig, argv, DATASETS, "chexnet.train")   # before TensorFlow loads
    ctx, log = loop.start(cfg, manifest, "chexnet")
    loop.fit(cfg, ctx, run, model, train_input=lambda ctx: (steps, lambda first_epoch, ...: shards.train_batches(...)),
             validators=lambda ctx: [...], model_info={...}, monitor="val_mean_auc", columns=[...])

Modules: ``config`` (the settings every trainer shares), ``preflight`` (flags,
data and weights checked before TensorFlow loads), ``manifest`` (the records'
manifest.json, without TensorFlow), ``shards`` (record-level rank sharding,
equal steps, deterministic epochs), ``gather`` (whole-split predictions from
every rank, each record exactly once), ``checkpoint`` (resumable .npz state,
plateau schedule), ``loop`` (start-up, resume, the callbacks in order,
``fit``, the tables), ``interrupt`` (mid-epoch checkpoints, one agreed stop
step), ``elastic`` (the same training across lost and added workers),
``benchmark`` (timed steps, no validation), ``report`` (tables from
metrics.jsonl), ``paths`` (the checkpoint and output paths of predict and
evaluate), ``evaluation`` and ``prediction`` (what the evaluate and predict
entry points share), ``export``, ``serving``, ``image_graph`` and ``card``
(what the export entry points share: the SavedModel and its image decoding in
TensorFlow ops, ONNX, the model card). None imports Horovod: the collectives
come from ``runtime.distributed``.
"""
