"""The training loop every trainer shares: start-up, resume, ``fit`` (fixed-size, or elastic), the tables.

    cfg, manifest = preflight(wl, argv)          # before TensorFlow loads; wl = training.workload.get("chexnet")
    ctx, log = start(cfg, manifest, wl.name)     # manifest None for random input
    compile_model(model, optimizer, loss, ctx)
    fit(cfg, ctx, run, model, wl, manifest)      # training.trainer does these steps for every workload

``model`` is compiled with the distributed optimizer (``compile_model``). The
workload ``wl`` gives the batches (``train_input``: the steps per epoch on
``ctx``'s ranks and ``train_data(first_epoch, epochs, first_step)``, the
batches from ``first_epoch``, less its first ``first_step`` batches, to
``epochs - 1``: where a resumed run starts) and the validators, callbacks
that add the validation figures to the epoch logs; the plateau schedule and
the checkpoints act on ``wl.monitor`` after them,
then the epoch record is written (runtime.callbacks); last, the mid-epoch
checkpoints and the agreed stop on a signal (training.interrupt). The epochs
themselves run in ``training.engine``, which the elastic front
(``training.elastic``) shares.
"""
import logging

import tf_keras as keras

from runtime import distributed, nvtx, stop, watchdog
from runtime.errors import UserError
from runtime.logs import setup_logging
from training import checkpoint, elastic, engine
from training.preflight import splits_read

log = logging.getLogger(__name__)


def start(cfg, manifest, name):
    """Every trainer's first step after ``training.preflight``: the runtime (Horovod, threads, precision),
    then the records checked against the manifest by rank 0 (every shard's record count and first
    record), all before any run folder exists (a bad input leaves none behind)."""
    ctx = distributed.init(cfg)
    nvtx.enable(cfg.nvtx)  # before any dataset is built: the record ranges are added when it is
    trainer_log = setup_logging(ctx.rank, name)
    if not cfg.benchmark:  # benchmark mode has no checkpoints and no beats: a signal or a hang is the launcher's
        # From here a SIGTERM/SIGUSR1/SIGINT asks for a checkpoint and a clean stop
        # at the next step instead of killing the rank (runtime.stop).
        stop.install()
        # From here a rank whose peers stop answering ends itself (runtime.watchdog):
        # start-up has collectives too (the run folder's name, the resumed state).
        watchdog.start(cfg.stall_timeout_s, "training", ranks=ctx.size)
    if manifest is None:
        return ctx, trainer_log
    # Too few images for the ranks (and the accumulated batches) stop here.
    manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch, cfg.grad_accum_steps)
    # One reader of every shard's record headers, not one per rank; an elastic worker checks alone.
    distributed.on_chief(check_data, manifest, splits_read(cfg), collective=not cfg.elastic)
    record_bytes = manifest.record_bytes("train")
    trainer_log.info("input: shuffle buffer of %d records per rank (%g MB of %.1f KB records); data threads %s",
                     cfg.pipeline().records_for(record_bytes), cfg.shuffle_buffer_mb, record_bytes / 1024,
                     cfg.data_threads or "autotuned")
    return ctx, trainer_log


def check_data(manifest, splits):
    """Each split's shards hold the records the manifest promises, of the manifest's image size."""
    for split in splits:
        manifest.check_counts(split)
        manifest.check_records(split)


def compile_model(model, optimizer, loss, ctx):
    """Compile ``model`` and create the optimizer's slots now, the same on every rank, before any broadcast."""
    model.compile(optimizer, loss, jit_compile=ctx.jit_compile)
    # A first step that creates variables is traced twice; slots made here spare one trace (docs/decisions.md).
    model.optimizer.build(model.trainable_variables)


def resume_state(cfg, ctx, run, model, model_info):
    """The saved state of ``run``'s last.npz on every rank (None for a new run); weights loaded on rank 0.

    A checkpoint written with other ``model_info`` settings is refused on every rank."""
    # Rank 0 reads the checkpoint; BroadcastInitialState hands its weights and
    # optimizer state to the others, so the run folder need only exist on rank 0.
    state = None
    if cfg.resume and ctx.is_chief:
        try:
            state = checkpoint.restore(run.file("last.npz"), model, expected=model_info)
        except UserError as err:  # every rank must learn of it, or they wait in the broadcast below
            state = {"error": str(err)}
    state = distributed.broadcast_object(state)
    if state and "error" in state:
        raise UserError(state["error"])
    return state


def fit(cfg, ctx, run, model, wl, manifest):
    """Train ``cfg.epochs`` epochs of workload ``wl`` (continuing a resumed run); rank 0 writes the tables.

    An elastic run (--elastic, training.elastic) asks ``wl`` for the batches and validators again after
    every change of its workers."""
    if cfg.elastic:
        return elastic.fit(cfg, ctx, run, model, wl, manifest)
    requests = stop.install()
    model_info = wl.model_info(cfg, manifest)
    state = resume_state(cfg, ctx, run, model, model_info)
    if state and not epochs_left(cfg, ctx, run, state):
        return
    if state:
        run.write_config(cfg, ctx)  # the settings it goes on with, once they are known to be good
    if not state and cfg.init_from:
        engine.start_from(cfg, ctx, model)
    steps, train_data = engine.train_input(cfg, wl, manifest, ctx)
    if state:
        keras.backend.set_value(model.optimizer.learning_rate, engine.resumed_lr(cfg, state, ctx.size, steps))
    engine.train(cfg, ctx, run, model, steps, train_data, wl.validators(cfg, manifest, ctx), model_info, wl.monitor,
                 wl.mode, state, requests)
    engine.finish(ctx, run, wl.columns)


def epochs_left(cfg, ctx, run, state):
    """Whether a resumed run has epochs to train: fewer --epochs than it trained is refused, as many is a no-op."""
    done = state["epoch"]
    if done > cfg.epochs:
        raise UserError(f"{run.path} already trained {done} epochs; --epochs {cfg.epochs} asks for fewer: pass "
                        f"--epochs above {done} to train on (--resume continues a run, it does not cut it)")
    if done == cfg.epochs:
        watchdog.stop()
        if ctx.is_chief:
            log.warning("%s already trained all %d epochs: nothing to do (pass --epochs above %d to train on)",
                        run.path, done, done)
        return False
    return True


