"""Mid-epoch checkpoints, and stopping every rank at one agreed step when a signal asks for it.

    requests = runtime.stop.install()                       # in loop.start
    cb = StepCheckpoints(run, saver, requests, steps, every_steps=200, epochs=10, resumed_at=(2, 40))
    model.fit(..., callbacks=[..., EpochLog(...), cb])      # last, after the epoch record

After every batch the ranks agree (one allreduce of a flag) on whether any of
them was asked to stop. If so, or every ``every_steps`` batches of an epoch,
the BatchNorm statistics are averaged (as at an epoch end: the checkpoint is
the model all ranks hold) and rank 0 writes last.npz at (epoch, step). A stop
then raises ``Stopped`` on every rank after the same batch: no rank is left
waiting in a collective the others never join. A request that arrives during
validation is acted on after the epoch's own checkpoint.

The same allreduce carries a second flag: a rank whose running loss is NaN
or infinite. Then every rank stops with one line naming the epoch, step,
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

import tf_keras as keras

from runtime import callbacks, distributed, watchdog
from runtime.errors import UserError
from runtime.stop import Stopped

log = logging.getLogger(__name__)


class StepCheckpoints(keras.callbacks.Callback):
    def __init__(self, run, saver, requests, steps_per_epoch, every_steps, epochs, resumed_at=(0, 0),
                 batches_per_update=1, on_checkpoint=None):
        """``every_steps`` 0: checkpoints only at epoch ends (and on a stop); ``batches_per_update``
        (--grad-accum-steps): checkpoints and stops between updates only; ``on_checkpoint()``: called
        after each mid-epoch checkpoint (an elastic run's commit)."""
        super().__init__()
        self.on_checkpoint = on_checkpoint
        self.batches_per_update = batches_per_update
        self.run, self.saver, self.requests = run, saver, requests
        self.steps_per_epoch, self.every_steps, self.epochs = steps_per_epoch, every_steps, epochs
        self.resumed_at = resumed_at
        self.epoch, self.step = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.step = self.resumed_at[1] if epoch == self.resumed_at[0] else 0

    def on_train_begin(self, logs=None):
        watchdog.beat()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        watchdog.beat()
        loss = float((logs or {}).get("loss", 0.0))
        # Every rank joins this allreduce after every batch, so every rank learns
        # of a request or a broken loss on any of them after the same batch.
        stop, diverged = distributed.any_rank(self.requests.pending is not None, not math.isfinite(loss))
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
        return (f"the training loss is not finite ({seen}) at epoch {self.epoch + 1} step {self.step}/"
                f"{self.steps_per_epoch}, learning rate {lr:.3g}; every rank stopped and nothing was saved "
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
