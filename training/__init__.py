"""The trainer skeleton every workload shares: a trainer is its model, its data and its metrics.

    from training import trainer, workload
    wl = workload.get("chexnet")             # a Workload (training.workload): config, model, data, loss, metrics
    trainer.main("chexnet", argv)            # flags, records, runtime, model, then loop.fit(cfg, ctx, run, model, wl, manifest)

Modules: ``workload`` (the registry and the interface a workload supplies),
``trainer`` (the one trainer: any workload's flags to ``loop.fit``),
``config`` (the settings every trainer shares), ``preflight`` (flags, data
and weights checked before TensorFlow loads), ``manifest`` (the records'
manifest.json, without TensorFlow), ``shards`` (record-level rank sharding,
equal steps, deterministic epochs), ``gather`` (whole-split predictions from
every rank, each record exactly once), ``checkpoint`` (resumable .npz state,
plateau schedule), ``loop`` (start-up, resume, ``fit``), ``engine`` (the
epochs both fronts share: the callbacks in order, the tables), ``interrupt`` (mid-epoch checkpoints, one agreed stop
step), ``elastic`` (the same training across lost and added workers),
``benchmark`` (timed steps, no validation), ``report`` (tables from
metrics.jsonl), ``paths`` (the checkpoint and output paths of predict and
evaluate), ``evaluation`` and ``prediction`` (what the evaluate and predict
entry points share), ``export``, ``serving``, ``image_graph`` and ``card``
(what the export entry points share: the SavedModel and its image decoding in
TensorFlow ops, ONNX, the model card). None imports Horovod: the collectives
come from ``runtime.distributed``.
"""
