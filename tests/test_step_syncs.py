"""Between the stop checks a training step waits for nothing on the host: no conversion of the batch logs,
no read of the loss, no collective; the checks come at the agreed steps (training.interrupt)."""
import math
import traceback

import pytest

N_STEPS, WARMUP = 30, 3


class Requests:
    pending = None


class Saver:
    last_written = None


class Run:
    class ctx:
        rank = 0

    def file(self, name):
        return name


@pytest.fixture()
def counted(monkeypatch):
    """Counts of the host waits the callbacks cause: Keras' conversions of logs, the checks' collectives."""
    from tf_keras.src import callbacks as keras_callbacks
    from runtime import distributed
    counts = {"conversions": 0, "checks": [], "reads": 0}
    convert = keras_callbacks.tf_utils.sync_to_numpy_or_python_type

    def counting_convert(logs):
        # Only those for a batch's hooks: Keras converts the epoch's and the fit's last logs anyway.
        counts["conversions"] += any(f.name == "_call_batch_hook_helper" for f in traceback.extract_stack())
        return convert(logs)

    def any_rank_and_least(flags, number):
        counts["checks"].append(number)
        return tuple(bool(f) for f in flags), number

    monkeypatch.setattr(keras_callbacks.tf_utils, "sync_to_numpy_or_python_type", counting_convert)
    monkeypatch.setattr(distributed, "any_rank_and_least", any_rank_and_least)
    monkeypatch.setattr(distributed, "allgather_object", lambda obj: [obj])
    monkeypatch.setattr(distributed, "allreduce_sum", lambda values: values)
    return counts


def _fit(check_s, every_step_timing=False, extra=()):
    """One epoch of a tiny model with the trainer's per-batch callbacks; (step checks, throughput record)."""
    import tensorflow as tf
    import tf_keras as keras
    from runtime import callbacks as cbs
    from training import interrupt
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    ds = tf.data.Dataset.from_tensor_slices((tf.ones((N_STEPS * 2, 4)), tf.ones((N_STEPS * 2, 1)))).batch(2)
    meter = cbs.Throughput(2, WARMUP, every_step=every_step_timing)
    steps = interrupt.StepCheckpoints(Run(), Saver(), Requests(), N_STEPS, 0, 1, check_s=check_s,
                                      on_sync=meter.synced, warmup_steps=WARMUP)
    callbacks = [cbs.ImagesSeen(2), cbs.LearningRateWarmup(0.01, 0.02, 10), meter, *extra, steps,
                 cbs.ProgressLog(3600, N_STEPS)]
    model.fit(ds, epochs=1, steps_per_epoch=N_STEPS, callbacks=callbacks, verbose=2)
    return steps, meter.last


def test_between_checks_no_batch_log_is_converted_and_no_collective_runs(counted):
    steps, record = _fit(check_s=3600.0)
    # Checks: after step 1 (the first, before any step time is known), at the end of the warm-up, at the
    # epoch's last batch.
    assert len(counted["checks"]) == 3
    assert counted["conversions"] == 0
    # The throughput is timed in the one span after the warm-up, over its steps.
    assert record["timed_steps"] == N_STEPS - WARMUP and record["images"] == 2 * (N_STEPS - WARMUP)
    assert math.isclose(record["elapsed_s"], record["images"] / record["images_per_s"])


def test_check_s_zero_checks_after_every_batch(counted):
    _fit(check_s=0.0)
    assert len(counted["checks"]) == N_STEPS


def test_a_callback_that_reads_the_batch_logs_makes_every_batch_wait_and_the_count_sees_it(counted):
    """The control: the count above would see a per-batch host wait if one were there."""
    import tf_keras as keras

    class Reads(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])

    _fit(check_s=3600.0, extra=[Reads()])
    assert counted["conversions"] == N_STEPS


def test_the_steps_between_checks_follow_the_step_time_and_are_whole_updates():
    from training import interrupt
    cb = interrupt.StepCheckpoints(Run(), Saver(), Requests(), 1000, 0, 1, batches_per_update=4, check_s=2.0)
    cb.step, cb.last_check = 40, (20, 100.0)
    assert cb._proposed_interval(now=101.0) == 40       # 20 steps in 1 s: 2 s is 40 steps
    assert cb._proposed_interval(now=100.0 + 20 * 0.3) == 4   # 0.3 s a step: 6 steps, rounded down to an update
    assert cb._proposed_interval(now=100.0 + 20 * 5.0) == 4   # slower than check_s: every update
    cb.check_s = 0.0
    assert cb._proposed_interval(now=101.0) == 4
