"""The training loop every trainer shares: start-up, resume, the callbacks in order, ``fit``, the tables.

    cfg, manifest = preflight(CheXNetConfig, argv, "chestxray14", "chexnet.train")  # before TensorFlow loads
    ctx, log = start(cfg, manifest, "chexnet")   # manifest None for random input
    fit(cfg, ctx, run, model, train_input=lambda ctx: (steps, lambda first_epoch, ...: dataset),
        validators=lambda ctx: [WholeSplitAUC(...)], model_info={"classes": ..., "crop": ...},
        monitor="val_mean_auc", mode="max", columns=[("val mean AUC", "val_mean_auc", ".4f")])

``model`` is compiled with the distributed optimizer (``compile_model``). ``train_input(ctx)``
gives the steps per epoch on ``ctx``'s ranks and ``train_data(first_epoch,
epochs, first_step)``, the batches from ``first_epoch`` (less its first
``first_step`` batches) to ``epochs - 1``: where a resumed run starts.
``validators(ctx)`` are callbacks that add the validation figures to the epoch
logs; the plateau schedule and the checkpoints act on ``monitor`` after them,
then the epoch record is written (runtime.callbacks); last, the mid-epoch
checkpoints and the agreed stop on a signal (training.interrupt).
"""
import contextlib
import logging
import os

import tf_keras as keras

from runtime import callbacks, distributed, nvtx, schedule, stop, trace, watchdog
from runtime.errors import UserError
from runtime.logs import setup_logging
from training import checkpoint, interrupt, report
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
    manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch, cfg.grad_accum_steps)  # too few images for the ranks stop here
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
    # A first step that creates variables is traced twice: DenseNet121 at crop 56 took 25.3 s to its
    # first step, 16.8 s with the slots made here (Intel Xeon, 1 process).
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


@contextlib.contextmanager
def timeline(cfg, ctx, run):
    """--timeline: Horovod's timeline while training, closed as valid JSON however training ends
    (finished, stopped by a signal, a second Ctrl-C, an error); a killed run's file is repaired by
    ``python -m runtime.trace FILE``."""
    if not cfg.timeline:
        yield
        return
    path = run.file("horovod_timeline.json")
    distributed.start_timeline(path)
    try:
        yield
    finally:
        distributed.stop_timeline()
        if ctx.is_chief and os.path.exists(path):
            log.info("Horovod timeline: %d events in %s", trace.finalize_timeline(path), path)


def resume_position(state, ctx, cfg, steps):
    """(epoch, step) a resumed run starts at: epochs completed, batches of the next one already trained."""
    if not state:
        return 0, 0
    epoch, step = state["epoch"], state.get("step", 0)
    saved = (state.get("ranks", ctx.size), state.get("per_rank_batch", cfg.per_rank_batch))
    if step and saved != (ctx.size, cfg.per_rank_batch):
        # Another global batch: go on from the same share of the epoch's images. The
        # ranks' slices differ at another size, so the rest of this epoch is not the
        # one an uninterrupted run would have seen (later epochs are unaffected).
        moved = min(step * saved[0] * saved[1] // (ctx.size * cfg.per_rank_batch), steps - 1)
        moved -= moved % cfg.grad_accum_steps  # between updates, as checkpoints are
        if ctx.is_chief:
            log.warning("the checkpoint stopped at step %d of epoch %d with %d ranks x %d images; this run has "
                        "%d x %d: continuing at step %d, the rest of this epoch in another order", step, epoch + 1,
                        saved[0], saved[1], ctx.size, cfg.per_rank_batch, moved)
        step = moved
    return epoch, step


def fit(cfg, ctx, run, model, train_input, validators, model_info, monitor, mode="max", columns=()):
    """Train ``cfg.epochs`` epochs (continuing a resumed run); rank 0 writes the tables.

    ``train_input(ctx)`` gives (steps per epoch, train_data) and ``validators(ctx)`` the validation
    callbacks for the ranks of ``ctx``: an elastic run (--elastic, training.elastic) asks again after
    every change of its workers."""
    if cfg.elastic:
        from training import elastic
        return elastic.fit(cfg, ctx, run, model, train_input, validators, model_info, monitor, mode, columns)
    requests = stop.install()
    state = resume_state(cfg, ctx, run, model, model_info)
    if state and not epochs_left(cfg, ctx, run, state):
        return
    if state:
        run.write_config(cfg, ctx)  # the settings it goes on with, once they are known to be good
    steps, train_data = train_input(ctx)
    if state:
        keras.backend.set_value(model.optimizer.learning_rate, resumed_lr(cfg, state, ctx.size, steps))
    train(cfg, ctx, run, model, steps, train_data, validators(ctx), model_info, monitor, mode, state, requests)
    finish(ctx, run, columns)


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


def resumed_lr(cfg, state, size, steps=None):
    """The learning rate to go on with on ``size`` ranks (``steps`` per epoch) from a checkpoint's ``state``.

    On the ranks it was saved with, the saved rate. On others, the saved rate times the ratio of the
    two sizes' scheduled rates (scaling rule and warm-up) at the saved point, so that a plateau cut
    carries over and the scaling follows the new global batch."""
    saved_size = state.get("ranks", size)
    if saved_size == size:
        return state["lr"]
    saved_steps = state.get("steps_per_epoch")  # absent from checkpoints of older versions: epoch ends only
    epochs_done = state["epoch"] + (state.get("step", 0) / saved_steps if saved_steps else 0)
    saved_plan = schedule.Schedule.of(cfg, saved_size, saved_steps or steps or 1)
    plan = schedule.Schedule.of(cfg, size, steps or saved_steps or 1)
    return state["lr"] * plan.at_epochs(epochs_done) / saved_plan.at_epochs(epochs_done)


def train(cfg, ctx, run, model, steps, train_data, validators, model_info, monitor, mode, state, requests,
          commit=None):
    """The fit calls from ``state``'s position (None: a new run), with every callback in its order;
    ``commit(saver)``: an elastic run's commit (training.elastic), a callback that runs right after the
    epoch record, before the stop check's collective: a peer lost there rolls back to this epoch's commit,
    not to the previous one, so no epoch is recorded (or its best.npz written) twice. Mid-epoch it is called
    after each checkpoint."""
    first_epoch, first_step = resume_position(state, ctx, cfg, steps)
    accum = f" x {cfg.grad_accum_steps} accumulated" if cfg.grad_accum_steps > 1 else ""
    log.info("%d ranks x %d images%s = global batch %d; %d steps/epoch; LR %.2e -> %.2e (%s scaling, %g warm-up "
             "epochs); precision %s (%s); epochs %d..%d%s; %s", ctx.size, cfg.per_rank_batch, accum,
             ctx.size * cfg.per_rank_batch * cfg.grad_accum_steps, steps, cfg.base_lr,
             schedule.Schedule.of(cfg, ctx.size, steps).target_lr, cfg.lr_scaling, cfg.warmup_epochs,
             ctx.precision.policy, ctx.precision.reason, first_epoch + 1, cfg.epochs,
             f" (from step {first_step + 1} of epoch {first_epoch + 1})" if first_step else "", run.path)
    plateau = checkpoint.Plateau(restored=state and state["plateau"], monitor=monitor, mode=mode,
                                 factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr,
                                 verbose=0)
    saver = checkpoint.CheckpointSaver(run, plateau, dict(model_info, precision=ctx.compute_dtype, ranks=ctx.size,
                                                          per_rank_batch=cfg.per_rank_batch,
                                                          steps_per_epoch=steps),
                                       monitor, mode, best=state["best"] if state else None)
    saver.last_written = (first_epoch, first_step) if state else None  # the checkpoint resumed from
    epoch_end = [*validators, plateau, saver]
    if cfg.tensorboard and ctx.is_chief:
        # Profiling on rank 0 only: every rank runs the same steps, and a trace per rank would
        # multiply the cost (and the files) by the ranks.
        epoch_end.append(keras.callbacks.TensorBoard(
            run.file("tensorboard"), profile_batch=cfg.profile_range() if cfg.profile_steps else 0))
    hooks = callbacks.standard_callbacks(run, cfg, ctx, steps, cfg.per_rank_batch, initial_epoch=first_epoch,
                                         epoch_end=epoch_end, initial_step=first_step)
    committer = commit(saver) if commit else None
    if committer:
        hooks.callbacks.append(committer)
    hooks.callbacks.append(interrupt.StepCheckpoints(run, saver, requests, steps, cfg.checkpoint_every_steps,
                                                     cfg.epochs, resumed_at=(first_epoch, first_step),
                                                     batches_per_update=cfg.grad_accum_steps,
                                                     on_checkpoint=committer.commit if committer else None))
    if cfg.nvtx:  # first: its range closes before the stop allreduce and checkpoints of the batch end
        hooks.callbacks.insert(0, nvtx.StepRanges(initial_step=first_step))
    with timeline(cfg, ctx, run):
        if first_step and first_epoch < cfg.epochs:
            # Keras gives every epoch of a fit call the same steps: the rest of a
            # partly trained epoch is a fit call of its own, with the same callbacks.
            model.fit(train_data(first_epoch, first_epoch + 1, first_step), epochs=first_epoch + 1,
                      initial_epoch=first_epoch, steps_per_epoch=steps - first_step, callbacks=hooks.callbacks,
                      verbose=hooks.verbose)
            first_epoch += 1
        if first_epoch < cfg.epochs:
            model.fit(train_data(first_epoch), epochs=cfg.epochs, initial_epoch=first_epoch,
                      steps_per_epoch=steps, callbacks=hooks.callbacks, verbose=hooks.verbose)


def finish(ctx, run, columns):
    watchdog.stop()  # rank 0 alone writes the tables
    if ctx.is_chief:
        report.write_training_tables(run, ctx.size, columns)
