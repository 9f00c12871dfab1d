"""The epoch engine both training fronts share (``training.loop`` fixed-size, ``training.elastic``).

    steps, train_data = engine.train_input(cfg, wl, manifest, ctx)   # workload wl's batches on ctx's ranks
    engine.train(cfg, ctx, run, model, steps, train_data, validators, model_info, monitor, mode, state,
                 requests)          # the fit calls from state's position, every callback in its order
    engine.finish(ctx, run, columns)

``train`` assembles the callbacks (runtime.callbacks' standard ones, the
trainer's validators, the plateau schedule, the checkpoints, the mid-epoch
checkpoints and the agreed stop, an elastic commit) and runs Keras' fit from
a resumed position; ``resume_position`` and ``resumed_lr`` map a checkpoint
onto the ranks present.
"""
import contextlib
import logging
import os

import tf_keras as keras

from runtime import callbacks, distributed, nvtx, schedule, trace, watchdog
from training import checkpoint, interrupt, report

log = logging.getLogger(__name__)


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


def train_input(cfg, wl, manifest, ctx):
    """(steps per epoch on ``ctx``'s ranks, or None for random input; ``train_data(first_epoch, epochs=cfg.epochs,
    first_step=0)``, workload ``wl``'s batches of this rank)."""
    steps = manifest.steps_per_epoch("train", ctx.size, cfg.per_rank_batch, cfg.grad_accum_steps) \
        if manifest else None

    def train_data(first_epoch, epochs=cfg.epochs, first_step=0):
        return wl.train_dataset(cfg, manifest, ctx.rank, ctx.size, first_epoch, epochs, steps, first_step)
    return steps, train_data


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


def start_from(cfg, ctx, model):
    """--init-from: rank 0 loads the weights (the initial broadcast hands them to every rank) and says which
    layers start fresh; a refusal reaches every rank."""
    path = cfg.init_from_checkpoint()
    report = distributed.on_chief(checkpoint.init_from, path, model, collective=not cfg.elastic)
    if ctx.is_chief:
        fresh = f"; started fresh (other shapes): {', '.join(report['fresh'])}" if report["fresh"] else ""
        log.info("--init-from %s: loaded the weights of %d of %d layers%s", path, len(report["loaded"]),
                 len(report["loaded"]) + len(report["fresh"]), fresh)


def precision_change(state, compute_dtype):
    """The warning for a run resumed in another precision than its checkpoint's (a requeued job on
    another GPU generation), or None: allowed, the weights are float32 either way."""
    saved = (state or {}).get("precision")
    if not saved or saved == compute_dtype:
        return None
    scale = " (float16's loss scale is in no checkpoint: it starts again from 2^15)" if compute_dtype == "float16" \
        else ""
    return (f"the checkpoint was trained in {saved}, this run computes in {compute_dtype}{scale}: going on in "
            f"{compute_dtype}; pass --precision {saved} to keep the checkpoint's")


def train(cfg, ctx, run, model, steps, train_data, validators, model_info, monitor, mode, state, requests,
          commit=None):
    """The fit calls from ``state``'s position (None: a new run), with every callback in its order;
    ``commit(saver)``: an elastic run's commit (training.elastic), a callback that runs right after the
    epoch record, before the stop check's collective: a peer lost there rolls back to this epoch's commit,
    not to the previous one, so no epoch is recorded (or its best.npz written) twice. Mid-epoch it is called
    after each checkpoint."""
    first_epoch, first_step = resume_position(state, ctx, cfg, steps)
    plan = schedule.Schedule.of(cfg, ctx.size, steps)  # the rate's plan for these ranks, handed down
    accum = f" x {cfg.grad_accum_steps} accumulated" if cfg.grad_accum_steps > 1 else ""
    log.info("%d ranks x %d images%s = global batch %d; %d steps/epoch; LR %.2e -> %.2e (%s scaling, %g warm-up "
             "epochs); precision %s (%s); epochs %d..%d%s; %s", ctx.size, cfg.per_rank_batch, accum,
             ctx.size * cfg.per_rank_batch * cfg.grad_accum_steps, steps, cfg.base_lr,
             plan.target_lr, cfg.lr_scaling, cfg.warmup_epochs,
             ctx.precision.policy, ctx.precision.reason, first_epoch + 1, cfg.epochs,
             f" (from step {first_step + 1} of epoch {first_epoch + 1})" if first_step else "", run.path)
    change = precision_change(state, ctx.compute_dtype)
    if change and ctx.is_chief:
        log.warning("%s", change)
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
    # Throughput in spans ended by the stop checks: no host sync of its own between batches.
    hooks = callbacks.standard_callbacks(run, cfg, ctx, steps, cfg.per_rank_batch, initial_epoch=first_epoch,
                                         epoch_end=epoch_end, initial_step=first_step, plan=plan,
                                         every_step_timing=False)
    committer = commit(saver) if commit else None
    if committer:
        hooks.callbacks.append(committer)
    hooks.callbacks.append(interrupt.StepCheckpoints(run, saver, requests, steps, cfg.checkpoint_every_steps,
                                                     cfg.epochs, resumed_at=(first_epoch, first_step),
                                                     batches_per_update=cfg.grad_accum_steps,
                                                     on_checkpoint=committer.commit if committer else None,
                                                     check_s=cfg.stop_check_s, on_sync=hooks.throughput.synced,
                                                     warmup_steps=cfg.throughput_warmup_steps))
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
