"""Elastic training (``--elastic``): workers may be lost or added while the run goes on.

    horovodrun -np 3 --min-np 2 --max-np 3 --host-discovery-script ./hosts.sh \\
        python -m chexnet.train --elastic --run-name cx --checkpoint-every-steps 50 ...

Built on Horovod's elastic mode (Gloo controller; ``runtime.distributed``):

- **State.** Every worker keeps in memory the model's and optimizer's
  variables and the run's position (the state of the last checkpoint: epoch,
  step, learning rate, best figure, plateau counters, ranks). It is committed
  where a checkpoint is written: at each epoch end and every
  ``--checkpoint-every-steps`` batches, right after the epoch record and
  before any later collective, so a peer lost after an epoch was recorded
  does not make the survivors train and record it again.
- **A worker lost.** The survivors' next collective fails; they go back to
  the last commit, a new rendezvous numbers them, and training goes on from
  there. Lost: the batches since the last commit.
- **Workers added** (the discovery script lists more slots, or a failed
  host's cool-down ends): noticed at the next commit. Every worker stops
  there; the new ones start and receive rank 0's state.
- **On every (re)start** the ranks, the steps per epoch, the training and
  validation shards and the learning rate (``engine.resumed_lr``: the scaling
  rule at the new size, plateau cuts kept) are derived again for the workers
  present; the position maps to the same share of the epoch
  (``engine.resume_position``). An ``elastic`` record in metrics.jsonl says
  when, on how many ranks, and from where.
- **Run folder.** Any worker may become rank 0, so ``--runs-dir`` must be a
  folder every worker sees (on one node, any folder). An elastic job continues
  its ``--run-name`` folder from last.npz when there is one, as a job that is
  started again should.

No collective may run before the elastic loop: a worker that joins later runs
the same start-up while the others wait in the loop's state broadcast.
"""
import logging
import os

import tf_keras as keras

from runtime import distributed, stop
from runtime.errors import UserError
from runtime.rundir import RunDir
from training import checkpoint, engine

log = logging.getLogger(__name__)


class Commit(keras.callbacks.Callback):
    """Commits the elastic state after each checkpoint: at an epoch end right after the epoch record
    (``engine.train`` places it before any later collective), mid-epoch when ``StepCheckpoints`` calls it."""

    def __init__(self, state, saver):
        super().__init__()
        self.state, self.saver = state, saver
        self.committed = saver.last_written

    def commit(self):
        if self.saver.last_written == self.committed:
            return
        self.committed = self.saver.last_written
        self.state.saved = self.saver.last_state
        # Keeps a copy to go back to, and raises HostsUpdatedInterrupt on every
        # worker when workers were added or lost since the last commit.
        self.state.commit()

    def on_epoch_end(self, epoch, logs=None):
        self.commit()


def initial_state(run, model, model_info, ctx):
    """Rank 0 loads the folder's last.npz, if any, into ``model``; (its state, a refusal) or (None, None)."""
    path = run.file("last.npz")
    if not ctx.is_chief or not os.path.isfile(path):
        return None, None
    try:
        return checkpoint.restore(path, model, expected=model_info), None
    except UserError as err:  # every worker must learn of it: a lone exit would only shrink the job
        return None, str(err)


def fit(cfg, ctx, run, model, wl, manifest):
    """``loop.fit`` for an elastic job: the same training, started again on every change of workers."""
    requests = stop.install()
    model_info = wl.model_info(cfg, manifest)
    saved, refusal = initial_state(run, model, model_info, ctx)
    if saved is None and refusal is None and cfg.init_from:
        engine.start_from(cfg, ctx, model)  # every worker loads them: no collective before the elastic loop
    state = distributed.elastic_state(model, saved=saved, refusal=refusal, restarts=-1)

    @distributed.run_elastic
    def train(state):
        # Runs after the state was broadcast from rank 0: every worker holds its model and position.
        if state.refusal:
            raise UserError(state.refusal)
        now = distributed.refresh(ctx)
        here = RunDir(run.path, now)  # this membership's rank 0 writes the records
        steps, train_data = engine.train_input(cfg, wl, manifest, now)
        if state.saved:
            keras.backend.set_value(model.optimizer.learning_rate, engine.resumed_lr(cfg, state.saved, now.size, steps))
        state.restarts += 1
        at = (state.saved or {}).get("epoch", 0), (state.saved or {}).get("step", 0)
        here.stream.write("elastic", ranks=now.size, restarts=state.restarts, epoch=at[0] + 1, step=at[1],
                          steps_per_epoch=steps,
                          saved_ranks=(state.saved or {}).get("ranks", now.size),
                          lr=float(keras.backend.get_value(model.optimizer.learning_rate)))
        if now.is_chief and state.restarts:
            log.warning("elastic: training goes on with %d ranks from epoch %d step %d (restart %d)", now.size,
                        at[0] + 1, at[1], state.restarts)
        engine.train(cfg, now, here, model, steps, train_data, wl.validators(cfg, manifest, now), model_info,
                     wl.monitor, wl.mode, state.saved, requests, commit=lambda saver: Commit(state, saver))
        return now, here

    now, here = train(state)
    engine.finish(now, here, wl.columns)
