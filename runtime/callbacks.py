"""Keras callbacks for distributed training, on ``runtime.distributed`` collectives.

horovod 0.28.1's own Keras callbacks import Keras 3 and fail under TF 2.18
(REFERENCE.md section 1), so these replace them. Order matters in ``fit``:

    callbacks = [
        BroadcastInitialState(),          # same starting weights everywhere
        MetricAverage(),                  # before anything that reads epoch logs
        AverageModelState(),              # BatchNorm statistics agree before validation
        ImagesSeen(per_rank_batch),       # train_images_seen, summed over ranks
        LearningRateWarmup(base_lr, target_lr, warmup_updates),
        Throughput(stream, per_rank_batch, warmup_steps=5),
        EpochLog(stream),                 # rank 0 writes, last
    ]
"""
import logging
import math
import os
import sys
import time

import numpy as np
import tf_keras as keras

from runtime import distributed, schedule, throughput

log = logging.getLogger(__name__)


class BroadcastInitialState(keras.callbacks.Callback):
    """Copies rank 0's weights (and optimizer state, if built) to all ranks at train start."""

    def __init__(self, root_rank=0):
        super().__init__()
        self.root_rank = root_rank
        self._done = False

    def on_train_begin(self, logs=None):
        if self._done:
            return
        # Ranks initialise (or load) weights independently; without this they
        # would train different models from the first step on. Fresh optimizer
        # slots are zeros everywhere and then see identical averaged gradients,
        # so broadcasting the variables that exist now is enough.
        variables = list(self.model.variables) + list(self.model.optimizer.variables())
        distributed.broadcast_variables(variables, self.root_rank)
        self._done = True


class AverageModelState(keras.callbacks.Callback):
    """At each epoch end, every rank's non-trainable weights become their mean over ranks.

    BatchNorm moving statistics follow each rank's own batches, so without this
    every rank would validate a slightly different model than the one rank 0
    saves: the validated model would not be the saved model. Place it before
    validation and checkpoints.
    """

    def on_epoch_end(self, epoch, logs=None):
        average_model_state(self.model)


def average_model_state(model):
    """Collective: the model's floating non-trainable weights (BatchNorm statistics) become their mean."""
    distributed.average_variables([v for v in model.non_trainable_variables if v.dtype.is_floating])


class ImagesSeen(keras.callbacks.Callback):
    """Adds ``train_images_seen`` to the epoch logs: images all ranks trained on this epoch.

    Counted from the batches each rank actually ran, summed over ranks; place it
    after MetricAverage (which would average it). ``resumed_at=(epoch, step)``:
    a run resumed from a mid-epoch checkpoint, whose ``step`` batches per rank
    of ``epoch`` ran before the interruption; they count, and that epoch's
    record says ``resumed_at_step`` (its loss covers only the batches after it).
    """

    def __init__(self, per_rank_batch, resumed_at=(0, 0)):
        super().__init__()
        self._supports_tf_logs = True  # counts batches, reads no figure: no host sync per batch
        self.per_rank_batch, self.batches = per_rank_batch, 0
        self.resumed_at = resumed_at

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = self.resumed_at[1] if epoch == self.resumed_at[0] else 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_images_seen"] = int(round(distributed.allreduce_sum(
                {"images": self.batches * self.per_rank_batch})["images"]))
            if epoch == self.resumed_at[0] and self.resumed_at[1]:
                logs["resumed_at_step"] = self.resumed_at[1]


class MetricAverage(keras.callbacks.Callback):
    """Replaces each epoch log value with its mean over ranks."""

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            # Each rank saw only its shard; callbacks after this one (plateau,
            # checkpoints, logging) must act on the same, global figure.
            logs.update(distributed.allreduce_mean(logs))


class LearningRateWarmup(keras.callbacks.Callback):
    """Ramps the learning rate from ``base_lr`` to ``target_lr`` over ``warmup_updates`` optimizer updates.

    A large scaled rate from step one diverges; ramping from the single-rank
    rate to the scaled one over the first epochs avoids it (Goyal et al.).
    ``warmup_updates`` 0 gives the target from the very first step. Updates,
    not batches: with gradient accumulation one update spans
    ``batches_per_update`` batches. A reduction made by someone else during the
    warm-up (a plateau callback, a resumed checkpoint) is kept: the rest of the
    ramp is scaled by it. After the warm-up the rate is left alone.
    """

    def __init__(self, base_lr, target_lr, warmup_updates, batches_per_update=1, initial_batch=0):
        super().__init__()
        self.base_lr, self.target_lr, self.warmup_updates = base_lr, target_lr, warmup_updates
        self.batches_per_update = batches_per_update
        self._supports_tf_logs = True  # sets the rate, reads no figure: no host sync per batch
        self.batch = initial_batch  # batches run before this fit call (resume)
        self.scale = 1.0
        self._last_set, self._started = None, False

    def _rate(self, batch):
        return schedule.warmup_lr(batch // self.batches_per_update, self.warmup_updates, self.base_lr, self.target_lr)

    def _warming(self):
        return self.batch // self.batches_per_update <= self.warmup_updates  # after it the plateau owns the rate

    def _adopt(self):
        # A host read of the rate: at train and epoch begins only, where someone else may have set it
        # (a plateau cut at an epoch end, a resumed checkpoint), never between batches.
        current = current_lr(self.model)
        if self._last_set is not None and not math.isclose(current, self._last_set, rel_tol=1e-6):
            self.scale *= current / self._last_set
        self._last_set = current

    def _set_for_next_batch(self):
        if self._warming():
            self._last_set = self._rate(self.batch) * self.scale
            keras.backend.set_value(self.model.optimizer.learning_rate, self._last_set)

    def on_train_begin(self, logs=None):
        if self._started:
            return  # a second fit call of the same run (after a resumed partial epoch): its epoch begin adopts
        self._started = True
        if self.batch > 0:
            # Resumed: the checkpoint holds the rate set for this batch at the end
            # of the previous one; a difference from the ramp is a plateau cut to keep.
            self._last_set = self._rate(self.batch)
        if self._warming():
            self._adopt()
        self._set_for_next_batch()

    def on_epoch_begin(self, epoch, logs=None):
        if self._warming():
            self._adopt()
            self._set_for_next_batch()

    def on_train_batch_end(self, batch, logs=None):
        # Set here rather than at the next batch's start: the epoch record then
        # shows the rate the next epoch starts with, and a plateau callback at
        # this epoch's end acts on it (and is adopted at the next epoch's begin).
        self.batch += 1
        self._set_for_next_batch()


def current_lr(model):
    return float(keras.backend.get_value(model.optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Per-epoch images/s over all ranks, warm-up steps of each epoch excluded.

    Leaves ``images_per_s`` and friends in the epoch logs (for EpochLog) and
    logs one line on rank 0. Every rank must take part: it runs collectives.
    ``every_step``: a timestamp after each batch, which Keras makes a host sync
    (it converts the logs for this callback): benchmark mode's method. Otherwise
    spans, each ended by ``synced()`` right after a host sync (the trainer's stop
    checks) and by the epoch end: no sync of its own between batches.
    """

    def __init__(self, per_rank_batch, warmup_steps, every_step=True):
        super().__init__()
        self.per_rank_batch, self.every_step = per_rank_batch, every_step
        self._supports_tf_logs = not every_step  # spans: Keras may leave the batch logs on the device
        self.meter = throughput.StepMeter(warmup_steps)
        self.last = None
        self._pending = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.meter.start()
        self._pending = 0

    def on_train_batch_end(self, batch, logs=None):
        if self.every_step:
            self.meter.step(self.per_rank_batch)
        else:
            self._pending += 1

    def synced(self, t=None):
        """The batches since the last span ended, done at ``t`` (the caller just waited for them)."""
        self.meter.span(self.per_rank_batch, self._pending, t)
        self._pending = 0

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_step:
            self.synced()  # the epoch logs were read (MetricAverage, before this): the last batch is done
        self.last = gather_throughput(self.meter)
        if logs is not None and self.last:
            logs["images_per_s"] = self.last["images_per_s"]
        if self.last:
            log.info("epoch %d throughput: %.1f images/s on %d ranks (%s per rank), step p50 %.3f s",
                     epoch + 1, self.last["images_per_s"], self.last["ranks"],
                     ", ".join(f"{v:.1f}" for v in self.last["images_per_s_per_rank"]),
                     self.last["step_time_p50_s"])
        else:
            log.warning("epoch %d: no throughput figure, fewer steps than the %d warm-up steps",
                        epoch + 1, self.meter.warmup_steps)


def gather_throughput(meter):
    """Collective: every rank's StepMeter -> one record (None if a rank timed nothing)."""
    mine = meter.summary()
    per_rank = distributed.allgather_object(mine)
    durations = np.concatenate([np.asarray(d, dtype=np.float64)
                                for d in distributed.allgather_object(meter.durations)])
    return throughput.combine(per_rank, durations)


class EpochLog(keras.callbacks.Callback):
    """Writes one ``epoch`` record per epoch to the metrics stream (rank 0 only).

    Place it after MetricAverage (global figures) and Throughput (its record).
    """

    def __init__(self, stream, throughput_cb=None, ranks=None):
        super().__init__()
        self.stream, self.throughput_cb, self.ranks = stream, throughput_cb, ranks
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # ranks: those that ran the epoch's end (an elastic run's size changes; a short resumed part
        # of an epoch may have no throughput figure to tell it)
        record = {"epoch": epoch + 1, "epoch_time_s": time.perf_counter() - self._t0,
                  "lr": current_lr(self.model), "ranks": self.ranks}
        record.update({k: v for k, v in (logs or {}).items() if k != "images_per_s"})
        if self.throughput_cb is not None and self.throughput_cb.last:
            record["throughput"] = self.throughput_cb.last
        self.stream.write("epoch", **record)


class ProgressLog(keras.callbacks.Callback):
    """A log line every ``every_s`` seconds: readable in Slurm logs, unlike a progress bar."""

    def __init__(self, every_s, steps_per_epoch):
        super().__init__()
        self._supports_tf_logs = True  # the figures are read (a host sync) only when a line is due
        self.every_s, self.steps_per_epoch = every_s, steps_per_epoch
        self._epoch, self._next = 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._next = time.perf_counter() + self.every_s

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() < self._next:
            return
        self._next = time.perf_counter() + self.every_s
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
        log.info("epoch %d step %d/%d: %s", self._epoch, batch + 1, self.steps_per_epoch, shown)


def progress_mode(requested, is_chief, interactive, under_mpi):
    """'bar', 'log' or 'none' for this rank: output belongs to rank 0 only.

    Under mpirun stdout is a pseudo-terminal whose lines come back tagged and
    split, so a ``\r`` progress bar turns into noise there: auto picks log.
    """
    if not is_chief or requested == "none":
        return "none"
    if requested != "auto":
        return requested
    return "bar" if interactive and not under_mpi else "log"


class TrainingHooks:
    """What a trainer passes to ``fit``: ``callbacks`` (in order), ``verbose``; and ``throughput``."""

    def __init__(self, callbacks, throughput_cb, verbose):
        self.callbacks, self.throughput, self.verbose = callbacks, throughput_cb, verbose


def standard_callbacks(run, cfg, ctx, steps_per_epoch, per_rank_batch, initial_epoch=0, epoch_end=(),
                       initial_step=0, plan=None, every_step_timing=True):
    """The runtime's callbacks in the order they must run.

    ``cfg`` carries ``base_lr``, ``lr_scaling``, ``warmup_epochs`` and
    ``grad_accum_steps``: the target rate is derived here (``runtime.schedule``) unless ``plan``, the
    trainer's Schedule, is given. ``epoch_end``: the
    trainer's callbacks that add to or act on the epoch logs (validation,
    plateau LR, checkpoints); they run after the metric averaging and the
    BatchNorm averaging, and before the epoch record is written. On resume the
    warm-up continues from where the interrupted run stood (``initial_step``
    batches into ``initial_epoch`` for a mid-epoch checkpoint). ``every_step_timing`` False: the
    throughput is timed in spans the caller ends (``TrainingHooks.throughput.synced``, Throughput).
    """
    plan = plan or schedule.Schedule.of(cfg, ctx.size, steps_per_epoch)
    meter = Throughput(per_rank_batch, cfg.throughput_warmup_steps, every_step=every_step_timing)
    cbs = [
        BroadcastInitialState(),
        MetricAverage(),
        AverageModelState(),
        ImagesSeen(per_rank_batch, resumed_at=(initial_epoch, initial_step)),
        LearningRateWarmup(plan.base_lr, plan.target_lr, plan.warmup_updates, plan.batches_per_update,
                           initial_batch=initial_epoch * steps_per_epoch + initial_step),
        meter,
        *epoch_end,
        EpochLog(run.stream, meter, ctx.size),
    ]
    mode = progress_mode(cfg.progress, ctx.is_chief, sys.stdout.isatty(),
                         under_mpi="OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ)
    if mode == "log":
        cbs.append(ProgressLog(cfg.progress_every_s, steps_per_epoch))
    # Keras verbose: 1 = bar; 2 = one line per epoch (kept with "log"); 0 = silent.
    verbose = {"bar": 1, "log": 2, "none": 0}[mode]
    return TrainingHooks(cbs, meter, verbose)
