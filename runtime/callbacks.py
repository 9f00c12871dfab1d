"""Keras callbacks for distributed training, on ``runtime.distributed`` collectives.

horovod 0.28.1's own Keras callbacks import Keras 3 and fail under TF 2.18
(REFERENCE.md section 1), so these replace them. Order matters in ``fit``:

    callbacks = [
        BroadcastInitialState(),          # same starting weights everywhere
        MetricAverage(),                  # before anything that reads epoch logs
        LearningRateWarmup(base_lr, scaled, warmup_steps),
        Throughput(stream, per_rank_batch, warmup_steps=5),
        EpochLog(stream),                 # rank 0 writes, last
    ]
"""
import logging
import os
import sys
import time

import numpy as np
import tf_keras as keras

from runtime import distributed, throughput

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


class MetricAverage(keras.callbacks.Callback):
    """Replaces each epoch log value with its mean over ranks."""

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            # Each rank saw only its shard; callbacks after this one (plateau,
            # checkpoints, logging) must act on the same, global figure.
            logs.update(distributed.allreduce_mean(logs))


def warmup_lr(step, warmup_steps, base_lr, target_lr):
    """Linear ramp from ``base_lr`` at step 0 to ``target_lr`` at ``warmup_steps``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return target_lr
    return base_lr + (target_lr - base_lr) * step / warmup_steps


class LearningRateWarmup(keras.callbacks.Callback):
    """Sets the learning rate before each of the first ``warmup_steps`` batches.

    A large scaled rate from step one diverges; ramping from the single-rank
    rate to ``base_lr x ranks`` over the first epochs avoids it (Goyal et al.).
    After the warm-up the rate is left alone (a plateau callback may lower it).
    """

    def __init__(self, base_lr, target_lr, warmup_steps, initial_step=0):
        super().__init__()
        self.base_lr, self.target_lr, self.warmup_steps = base_lr, target_lr, warmup_steps
        self.step = initial_step

    def on_train_batch_begin(self, batch, logs=None):
        if self.step < self.warmup_steps:
            lr = warmup_lr(self.step, self.warmup_steps, self.base_lr, self.target_lr)
            keras.backend.set_value(self.model.optimizer.learning_rate, lr)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.warmup_steps:
            # Reach the target here, not at the next batch: a plateau callback may
            # lower the rate at this epoch's end and must not be overridden.
            keras.backend.set_value(self.model.optimizer.learning_rate, self.target_lr)


def current_lr(model):
    return float(keras.backend.get_value(model.optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Per-epoch images/s over all ranks, warm-up steps of each epoch excluded.

    Leaves ``images_per_s`` and friends in the epoch logs (for EpochLog) and
    logs one line on rank 0. Every rank must take part: it runs collectives.
    """

    def __init__(self, per_rank_batch, warmup_steps):
        super().__init__()
        self.per_rank_batch = per_rank_batch
        self.meter = throughput.StepMeter(warmup_steps)
        self.last = None

    def on_epoch_begin(self, epoch, logs=None):
        self.meter.start()

    def on_train_batch_end(self, batch, logs=None):
        # Keras converts ``logs`` to numpy for callbacks like this one, which
        # waits for the step to finish: each timestamp is a host sync.
        self.meter.step(self.per_rank_batch)

    def on_epoch_end(self, epoch, logs=None):
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

    def __init__(self, stream, throughput_cb=None):
        super().__init__()
        self.stream, self.throughput_cb = stream, throughput_cb
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "epoch_time_s": time.perf_counter() - self._t0,
                  "lr": current_lr(self.model)}
        record.update({k: v for k, v in (logs or {}).items() if k != "images_per_s"})
        if self.throughput_cb is not None and self.throughput_cb.last:
            record["throughput"] = self.throughput_cb.last
        self.stream.write("epoch", **record)


class ProgressLog(keras.callbacks.Callback):
    """A log line every ``every_s`` seconds: readable in Slurm logs, unlike a progress bar."""

    def __init__(self, every_s, steps_per_epoch):
        super().__init__()
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


def standard_callbacks(run, cfg, ctx, base_lr, target_lr, steps_per_epoch, per_rank_batch,
                       initial_epoch=0, epoch_end=()):
    """The runtime's callbacks in the order they must run.

    ``epoch_end``: the trainer's callbacks that add to or act on the epoch logs
    (validation, plateau LR, checkpoints); they run after the metric averaging
    and before the epoch record is written. Warm-up lasts ``cfg.warmup_epochs``
    epochs of ``steps_per_epoch`` batches; on resume it continues from where the
    interrupted run stood.
    """
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    meter = Throughput(per_rank_batch, cfg.throughput_warmup_steps)
    cbs = [
        BroadcastInitialState(),
        MetricAverage(),
        LearningRateWarmup(base_lr, target_lr, warmup_steps,
                           initial_step=initial_epoch * steps_per_epoch),
        meter,
        *epoch_end,
        EpochLog(run.stream, meter),
    ]
    mode = progress_mode(cfg.progress, ctx.is_chief, sys.stdout.isatty(),
                         under_mpi="OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ)
    if mode == "log":
        cbs.append(ProgressLog(cfg.progress_every_s, steps_per_epoch))
    # Keras verbose: 1 = bar; 2 = one line per epoch (kept with "log"); 0 = silent.
    verbose = {"bar": 1, "log": 2, "none": 0}[mode]
    return TrainingHooks(cbs, meter, verbose)
