"""Mid-epoch checkpoints, and stopping every rank at one agreed step when a signal asks for it.

    requests = runtime.stop.install()                       # in loop.start
    cb = StepCheckpoints(run, saver, requests, steps, every_steps=200, epochs=10, resumed_at=(2, 40),
                         check_s=2.0, on_sync=throughput.synced)   # on_sync(t): after each check's host wait
    model.fit(..., callbacks=[..., EpochLog(...), cb])      # last, after the epoch record

At its check steps the ranks agree (one allreduce of a flag) on whether any
of them was asked to stop. The check steps are about ``check_s`` seconds of
batches apart: each check agrees on the steps to the next one (the least any
rank proposes from its own step time), and the last batch of an epoch and
every checkpoint step are checks too; ``check_s`` 0 checks after every batch.
Between checks the host never waits for the device: the loss is read only
there, and there is no collective. A stop thus comes at most about
``check_s`` seconds (and one update) after the signal. If so, or every
``every_steps`` batches of an epoch,
the BatchNorm statistics are averaged (as at an epoch end: the checkpoint is
the model all ranks hold) and rank 0 writes last.npz at (epoch, step). A stop
then raises ``Stopped`` on every rank after the same batch: no rank is left
waiting in a collective the others never join. A request that arrives during
validation is acted on after the epoch's own checkpoint.

The same allreduce carries a second flag: a rank whose running loss (the
epoch's mean so far, so a bad batch since the last check shows) is NaN or
infinite. Then every rank stops with one line naming the epoch, step,
learning rate and the last good checkpoint, and nothing more is saved (the
weights are already broken; the epoch-end checkpoint would overwrite the
last good one).

Each batch and epoch end is also a beat of ``runtime.watchdog``, which ends
a rank that waits on a frozen peer for ``--stall-timeout-s``.

With --grad-accum-steps K a stop waits for the end of the update in progress
(at most K - 1 more batches) and checkpoints fall between updates.

A mid-epoch checkpoint resumes at the exact batch (``training.shards`` skips
the batches already trained), so a stopped and resumed run trains on what an
uninterrupted one would have.
"""
import logging
import math
import os
import time

import tf_keras as keras

from runtime import callbacks, distributed, watchdog
from runtime.errors import UserError
from runtime.stop import Stopped

log = logging.getLogger(__name__)


MAX_CHECK_STEPS = 100_000  # the longest agreed gap between two checks, whatever the step time


class StepCheckpoints(keras.callbacks.Callback):
    def __init__(self, run, saver, requests, steps_per_epoch, every_steps, epochs, resumed_at=(0, 0),
                 batches_per_update=1, on_checkpoint=None, check_s=0.0, on_sync=None, warmup_steps=0):
        """``every_steps`` 0: checkpoints only at epoch ends (and on a stop); ``batches_per_update``
        (--grad-accum-steps): checkpoints and stops between updates only; ``on_checkpoint()``: called
        after each mid-epoch checkpoint (an elastic run's commit); ``check_s``: seconds of batches between
        the stop checks (0: every batch); ``on_sync(t)``: called at each check, when the host has waited
        for the batches so far (the throughput's spans); ``warmup_steps``: each epoch has a check right
        after its first ``warmup_steps`` batches (where the throughput's timed spans begin)."""
        super().__init__()
        self._supports_tf_logs = True  # the loss stays on the device but at the checks
        self.on_checkpoint, self.on_sync = on_checkpoint, on_sync
        self.batches_per_update, self.check_s = batches_per_update, check_s
        self.run, self.saver, self.requests = run, saver, requests
        self.steps_per_epoch, self.every_steps, self.epochs = steps_per_epoch, every_steps, epochs
        self.resumed_at = resumed_at
        self.epoch, self.step = 0, 0
        self.interval = batches_per_update  # steps between checks: the same on every rank, agreed at each check
        self.next_check, self.last_check, self.previous_check = 0, (0, 0.0), 0
        self.warmup_steps, self.epoch_start = -(-warmup_steps // batches_per_update) * batches_per_update, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.step = self.epoch_start = self.resumed_at[1] if epoch == self.resumed_at[0] else 0
        self.last_check = (self.step, time.perf_counter())
        self._plan_next_check()

    def on_train_begin(self, logs=None):
        watchdog.beat()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        watchdog.beat()
        if not self._check_due():
            return
        loss = float((logs or {}).get("loss", 0.0))  # the host waits for the batches here, and only here
        stop, diverged = self._agree(loss)
        if diverged:
            raise UserError(self._divergence(loss))  # before any checkpoint can hold the broken weights
        if self.step == self.steps_per_epoch:
            return  # the epoch's own checkpoint follows; a stop is taken after it
        if self.step % self.batches_per_update:
            return  # mid-update: checkpoints and stops wait for its last batch (accumulated sums are not saved)
        if stop or (self.every_steps and self.step % self.every_steps == 0):
            self._checkpoint()
        if stop:
            self._stop(f"epoch {self.epoch + 1} step {self.step}/{self.steps_per_epoch}")

    def _check_due(self):
        if self.step == self.steps_per_epoch:
            return True  # before the epoch-end checkpoint: a broken loss must not reach it
        if self.step % self.batches_per_update:
            return False
        return self.step >= self.next_check or bool(self.every_steps and self.step % self.every_steps == 0)

    def _agree(self, loss):
        """Collective: (a stop asked on any rank, a non-finite loss on any rank); sets the next check step."""
        now = time.perf_counter()
        if self.on_sync:
            self.on_sync(now)
        (stop, diverged), steps = distributed.any_rank_and_least(
            (self.requests.pending is not None, not math.isfinite(loss)), self._proposed_interval(now))
        self.previous_check, self.last_check = self.last_check[0], (self.step, now)
        self.interval = int(steps)
        self._plan_next_check()
        return stop, diverged

    def _plan_next_check(self):
        # Never past the end of the warm-up: the throughput's timed spans start there (the same on every rank).
        self.next_check = self.step + self.interval
        warmed = self.epoch_start + self.warmup_steps
        if self.step < warmed:
            self.next_check = min(self.next_check, warmed)

    def _proposed_interval(self, now):
        """This rank's steps to the next check: about ``check_s`` seconds at its own step time so far, a
        whole number of updates."""
        k = self.batches_per_update
        if self.check_s <= 0:
            return k
        done, since = self.step - self.last_check[0], now - self.last_check[1]
        steps = int(self.check_s * done / since) if since > 0 and done > 0 else k
        return max(k, min(steps, MAX_CHECK_STEPS) // k * k)

    def on_epoch_end(self, epoch, logs=None):
        watchdog.beat()
        if epoch + 1 < self.epochs and distributed.any_rank(self.requests.pending is not None)[0]:
            self.step = 0
            self.epoch = epoch + 1
            self._stop(f"the end of epoch {epoch + 1}")  # last.npz was written by the saver

    def _checkpoint(self):
        # BatchNorm moving statistics follow each rank's batches: save their
        # mean, which is what the next epoch end would average anyway (the
        # moving average is linear), so resuming from it changes nothing.
        callbacks.average_model_state(self.model)
        self.saver.write_last(self.epoch, self.step)
        if self.on_checkpoint:
            self.on_checkpoint()

    def _divergence(self, loss):
        seen = f"on rank {self.run.ctx.rank}" if not math.isfinite(loss) else "on another rank"
        saved = self.saver.last_written
        if saved is None:
            last = "no checkpoint was written yet"
        else:
            at = f"after epoch {saved[0]}" if saved[1] == 0 else f"at epoch {saved[0] + 1} step {saved[1]}"
            last = f"the last good checkpoint is {self.run.file('last.npz')} ({at})"
        lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        since = f" (the check before was after step {self.previous_check}: it broke in between)" \
            if self.step - self.previous_check > 1 else ""
        return (f"the training loss is not finite ({seen}) at epoch {self.epoch + 1} step {self.step}/"
                f"{self.steps_per_epoch}{since}, learning rate {lr:.3g}; every rank stopped and nothing was saved "
                f"after it; {last}: resume from it with a lower --base-lr or more --warmup-epochs, or check "
                f"the input")

    def _stop(self, where):
        why = self.requests.pending or "another rank's stop signal"
        # epoch: the one in progress (1-based, as in the epoch records); step: its batches done.
        self.run.stream.write("stop", epoch=self.epoch + 1, step=self.step, signal=why, checkpoint="last.npz")
        if self.run.ctx.is_chief:  # every rank stops here; one line says so
            log.warning("stopped at %s on %s; %s holds the run: continue it with --resume --run-name %s",
                        where, why, self.run.file("last.npz"), os.path.basename(self.run.path))
        # Nothing is left to save: from here a signal ends the rank at once (mpirun,
        # seeing the first rank exit 75, sends SIGTERM to the others and would
        # otherwise wait out its kill timeout for ranks that ignore it).
        self.requests.uninstall()
        raise Stopped(where)
