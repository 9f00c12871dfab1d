"""Runtime pieces in one process: precision by hardware, the CUDA-stub filter, the LR warm-up."""
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, job_env
from runtime import precision
from runtime.quiet import is_known

AVX2_ONLY = precision.CpuFacts("AMD EPYC 7B12", frozenset({"avx", "avx2", "fma"}))
ZEN4 = precision.CpuFacts("AMD EPYC 9B14", frozenset({"avx2", "avx512f", "avx512_bf16"}))
SAPPHIRE = precision.CpuFacts("Intel(R) Xeon(R) Platinum 8481C", frozenset({"avx512f", "amx_bf16", "amx_tile"}))


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("cpu,policy", [(AVX2_ONLY, "float32"), (ZEN4, "mixed_bfloat16"),
                                        (SAPPHIRE, "mixed_bfloat16")])
def test_auto_uses_bfloat16_only_where_the_cpu_has_it(cpu, policy):
    choice = precision.choose("auto", cpu=cpu)
    assert choice.policy == policy and not choice.warning
    assert cpu.model in choice.reason
    assert choice.to_dict()["compute_dtype"] == policy.replace("mixed_", "")


def test_mixed_on_a_cpu_without_bfloat16_falls_back_with_a_warning_that_says_how_to_force():
    choice = precision.choose("mixed", cpu=AVX2_ONLY)
    assert choice.policy == "float32"
    assert "AMD EPYC 7B12" in choice.warning and "--precision bfloat16" in choice.warning
    forced = precision.choose("bfloat16", cpu=AVX2_ONLY)
    assert forced.policy == "mixed_bfloat16" and "emulate" in forced.warning
    assert precision.choose("mixed", cpu=ZEN4).policy == "mixed_bfloat16"
    assert precision.choose("float32", cpu=ZEN4).policy == "float32"


@pytest.mark.parametrize("capability,policy", [((9, 0), "mixed_bfloat16"), ((8, 0), "mixed_bfloat16"),
                                               ((7, 5), "mixed_float16"), ((7, 0), "mixed_float16"),
                                               ((6, 1), "float32"), (None, "float32")])
def test_auto_uses_bfloat16_from_compute_capability_8_float16_on_7x_and_float32_below(capability, policy):
    assert precision.choose("auto", capability, on_gpu=True).policy == policy
    assert precision.choose("float32", capability, on_gpu=True).policy == "float32"


def test_a_forced_bfloat16_below_compute_capability_8_warns():
    assert "came with 8.0" in precision.choose("bfloat16", (7, 0), on_gpu=True).warning
    assert precision.choose("bfloat16", (8, 6), on_gpu=True).warning == ""
    assert precision.choose("float16", (9, 0), on_gpu=True).policy == "mixed_float16"


def test_cpu_facts_read_model_and_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    facts = precision.cpu_facts(str(info))
    assert facts.model == "AMD EPYC 9B14" and facts.native_bf16 == ["avx512_bf16"]
    assert precision.cpu_facts(str(tmp_path / "absent")).model == "unknown CPU"


# ------------------------------------------------------------------ CUDA-stub lines
STUB_LINES = [
    "E0000 00:00:1795542368.244952   12873 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered",
    "2026-11-24 17:45:13.012835: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:477] Unable to "
    "register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered",
    "[1,0]<stderr>:WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
]


def test_only_the_known_lines_are_dropped():
    assert all(is_known(line) for line in STUB_LINES)
    for other in ["Unable to register the run folder", "WARNING: something else", "Traceback (most recent call last):",
                  "E0000 cuda_dnn.cc:99] Could not create cudnn handle"]:
        assert not is_known(other)


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=job_env(**env), capture_output=True,
                          text=True, timeout=120)


def test_filter_keeps_every_other_stderr_line():
    stubs = "\\n".join(STUB_LINES)
    proc = _python("import os; from runtime.quiet import filtered_stderr\n"
                   f"with filtered_stderr(): os.write(2, b'''{stubs}\\nkept 1\\n'''); print('kept 2', file=__import__('sys').stderr)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["kept 1", "kept 2"]


def test_importing_tensorflow_through_runtime_prints_no_stub_lines():
    code = "import runtime, sys, tensorflow; print('after', file=sys.stderr)"
    quiet = _python(code)
    assert quiet.returncode == 0 and quiet.stderr.splitlines()[-1] == "after"
    assert not [line for line in quiet.stderr.splitlines() if is_known(line)], quiet.stderr
    loud = _python(code, MEDIMG_SHOW_TF_STARTUP="1")  # the control: the wheel does print them
    if not any(is_known(line) for line in loud.stderr.splitlines()):
        pytest.skip("this TensorFlow wheel prints no CUDA-stub lines: nothing to filter")


def test_no_entry_point_of_a_rank_imports_keras_3():
    """Every rank imports its trainer or evaluator: Keras 3 (and the sklearn and pyplot it pulls in)
    would add about 2.7 s to each rank's start-up (runtime/distributed.py)."""
    code = ("import runtime, sys\nimport chexnet.train, chexnet.evaluate, segmentation.train, segmentation.evaluate\n"
            "print(sorted(m for m in sys.modules if m == 'keras' or m.startswith('keras.')))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ warm-up
def _fit_recording_lr(warmup, epochs=2, steps=4, at_epoch_end=None, initial_lr=1.0):
    """Fit a 1-weight model; returns the LR in force at each batch."""
    import tf_keras as keras
    from runtime.callbacks import current_lr
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(round(current_lr(self.model), 9))

        def on_epoch_end(self, epoch, logs=None):
            if at_epoch_end:
                at_epoch_end(self.model, epoch)

    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    model.compile(keras.optimizers.SGD(initial_lr), "mse")
    x = np.ones((steps * 2, 1), np.float32)
    model.fit(x, x, batch_size=2, epochs=epochs, verbose=0, shuffle=False, callbacks=[warmup, Record()])
    return seen


def test_zero_warmup_gives_the_scaled_rate_from_the_first_step():
    from runtime.callbacks import LearningRateWarmup
    assert _fit_recording_lr(LearningRateWarmup(0.1, 0.4, 0)) == pytest.approx([0.4] * 8)


def test_warmup_counts_optimizer_updates_under_gradient_accumulation():
    from runtime.callbacks import LearningRateWarmup
    # 2 batches per update, 2 updates of warm-up: 0.1, 0.1, 0.2, 0.2, then 0.3.
    assert _fit_recording_lr(LearningRateWarmup(0.1, 0.3, 2, batches_per_update=2)) == \
        pytest.approx([0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3])


def test_a_plateau_cut_during_warmup_is_kept():
    import tf_keras as keras
    from runtime.callbacks import LearningRateWarmup

    def halve(model, epoch):
        if epoch == 0:  # what a plateau callback does at an epoch end
            keras.backend.set_value(model.optimizer.learning_rate,
                                    keras.backend.get_value(model.optimizer.learning_rate) * 0.5)

    seen = _fit_recording_lr(LearningRateWarmup(0.1, 0.9, 8), epochs=3, at_epoch_end=halve)
    assert seen[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert seen[4:8] == pytest.approx([0.25, 0.3, 0.35, 0.4])  # the rest of the ramp, halved
    assert seen[8:] == pytest.approx([0.45] * 4)  # the target, halved; then left alone


def test_a_resumed_warmup_continues_the_ramp_and_keeps_a_cut():
    import tf_keras as keras
    from runtime.callbacks import LearningRateWarmup

    def halve_first(model, epoch):
        if epoch == 0:
            keras.backend.set_value(model.optimizer.learning_rate,
                                    keras.backend.get_value(model.optimizer.learning_rate) * 0.5)

    for cut in (None, halve_first):
        whole = _fit_recording_lr(LearningRateWarmup(0.1, 0.9, 8), epochs=3, at_epoch_end=cut)
        # A resume after epoch 1 starts from the checkpoint's rate: the one set for batch 4.
        resumed = _fit_recording_lr(LearningRateWarmup(0.1, 0.9, 8, initial_batch=4), epochs=2,
                                    initial_lr=whole[4])
        assert resumed == pytest.approx(whole[4:])


# ------------------------------------------------------------------ stop requests
def test_stop_signals_become_one_request_and_a_second_ctrl_c_stops_at_once():
    import os
    import signal

    from runtime.stop import StopRequests
    before = signal.getsignal(signal.SIGTERM)
    requests = StopRequests.install()
    try:
        assert requests.pending is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # slurmd and mpirun may both pass one on: still one request
        assert requests.pending == "SIGTERM"
        requests.pending = None
        os.kill(os.getpid(), signal.SIGINT)
        assert requests.pending == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        requests.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_stall_message_blames_a_peer_only_when_there_is_one():
    from runtime.watchdog import stall_message
    alone = stall_message("training", 31.2, ranks=1)
    assert "in this process" in alone and "the step itself or the input pipeline is stuck" in alone
    assert "another rank" not in alone and "for 31 s" in alone
    two = stall_message("training", 31.2, ranks=2)
    assert "on this rank" in two and "waits for another rank that is frozen" in two and "input pipeline" not in two
    unknown = stall_message("training", 31.2, ranks=None)
    assert "another rank" in unknown and "its own step or input pipeline" in unknown
    assert all("\n" not in m and "--stall-timeout-s" in m for m in (alone, two, unknown))


def test_a_single_stalled_process_ends_with_status_3_and_blames_its_own_step():
    code = ("import time; from runtime import watchdog; watchdog.start(0.4, 'training', ranks=1); "
            "time.sleep(30)")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 3 and time.monotonic() - started < 15, proc.stderr
    assert "no training progress in this process" in proc.stderr and "another rank" not in proc.stderr


def test_negative_checkpoint_interval_is_a_one_line_error():
    from runtime.config import parse_args
    from runtime.errors import UserError
    from segmentation.config import SegmentationConfig
    with pytest.raises(UserError, match="--checkpoint-every-steps must be >= 0"):
        parse_args(SegmentationConfig, ["--data-dir", "x", "--checkpoint-every-steps", "-1"])


class RangeRecorder:
    """Stands in for an nvtx Domain (with no profiler attached its calls leave no trace to check)."""

    def __init__(self):
        import threading
        self.lock, self.next_id, self.open, self.closed, self.stack, self.steps = threading.Lock(), 1, {}, [], [], []

    def start_range(self, message):
        with self.lock:
            self.next_id += 1
            self.open[self.next_id] = message
            return self.next_id

    def end_range(self, range_id):
        with self.lock:
            self.closed.append(self.open.pop(range_id))

    def push_range(self, message):
        self.stack.append(message)

    def pop_range(self):
        self.steps.append(self.stack.pop())


def test_nvtx_ranges_cover_every_record_parsed_and_every_train_step():
    import tensorflow as tf
    import tf_keras as keras

    from runtime import nvtx
    recorder = RangeRecorder()
    try:
        nvtx.enable(True, domain=recorder)
        parse = nvtx.annotate(lambda v, seed: (tf.fill([3], tf.cast(v, tf.float32)), tf.cast(seed[0], tf.float32)),
                              "decode+augment")
        ds = tf.data.Dataset.range(24).map(lambda v: parse(v, tf.stack([v, v])), num_parallel_calls=4).batch(4)
        model = keras.Sequential([keras.layers.Dense(1, input_shape=(3,))])
        model.compile("sgd", "mse")
        model.fit(ds, epochs=2, steps_per_epoch=3, verbose=0, callbacks=[nvtx.StepRanges()])
    finally:
        nvtx.enable(False)
    assert not recorder.open and not recorder.stack  # every range that began has ended
    assert recorder.closed == ["decode+augment"] * 24
    assert recorder.steps == [f"train step {e}:{s}" for e in (1, 2) for s in (1, 2, 3)]
    assert nvtx.annotate(parse, "x") is parse  # off: the function itself, no cost
    resumed = nvtx.StepRanges(initial_step=2)  # a mid-epoch resume names the steps of the whole epoch
    try:
        nvtx.enable(True, domain=recorder)
        recorder.steps.clear()
        for epoch, batches in ((1, 1), (2, 2)):
            resumed.on_epoch_begin(epoch)
            for b in range(batches):
                resumed.on_train_batch_begin(b)
                resumed.on_train_batch_end(b)
    finally:
        nvtx.enable(False)
    assert recorder.steps == ["train step 2:3", "train step 3:1", "train step 3:2"]


def test_nvtx_flag_without_the_package_is_a_one_line_error(monkeypatch):
    from runtime import nvtx
    from runtime.errors import UserError
    monkeypatch.setitem(sys.modules, "nvtx", None)  # as if not installed
    with pytest.raises(UserError, match="^--nvtx needs the nvtx package: pip install nvtx"):
        nvtx.enable(True)


def _elastic_epoch_end(monkeypatch, tmp_path):
    """What the callbacks engine.train hands to fit do at an epoch end, in order: every collective, the
    epoch record, the checkpoint and the elastic commit (collectives and files replaced by recorders)."""
    from runtime import callbacks as cbs, distributed
    from runtime.metrics import MetricsStream
    from runtime.precision import Choice
    from training import checkpoint, engine, interrupt
    from training.config import TrainConfig
    from training.elastic import Commit

    events = []
    for module, name in ((distributed, "allreduce_mean"), (distributed, "any_rank"),
                         (distributed, "average_variables"), (distributed, "allgather_object")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: events.append(f"collective {_n}") or
                            ({"loss": 1.0} if _n == "allreduce_mean" else (False,) * 2))
    monkeypatch.setattr(cbs, "average_model_state", lambda model: events.append("collective bn"))
    monkeypatch.setattr(checkpoint.CheckpointSaver, "on_epoch_end",
                        lambda self, epoch, logs=None: events.append("checkpoint") or
                        setattr(self, "last_written", (epoch + 1, 0)) or setattr(self, "last_state", {}))
    monkeypatch.setattr(cbs.EpochLog, "on_epoch_end", lambda self, epoch, logs=None: events.append("record"))
    monkeypatch.setattr(interrupt.watchdog, "beat", lambda: None)

    class State:
        def commit(self):
            events.append("commit")

    class Run:
        path, ctx = str(tmp_path), None
        stream = MetricsStream(str(tmp_path / "metrics.jsonl"), enabled=False)

        def file(self, name):
            return str(tmp_path / name)

    class Model:
        def fit(self, *args, callbacks, **kwargs):
            for cb in callbacks:
                if isinstance(cb, (cbs.MetricAverage, cbs.AverageModelState, checkpoint.CheckpointSaver,
                                   cbs.EpochLog, Commit, interrupt.StepCheckpoints)):
                    cb.on_epoch_end(0, {"loss": 1.0, "val_dice": 0.5})

    class Requests:
        pending = None

    ctx = distributed.Context(rank=0, size=2, local_rank=0, local_size=2, intra_op_threads=1, device="CPU",
                              precision=Choice("float32", "float32", "pinned"), jit_compile=False, cpu_model="x")
    cfg = TrainConfig(data_dir="d", epochs=2, tensorboard=False, progress="none")
    engine.train(cfg, ctx, Run(), Model(), 4, lambda *a: None, [], {}, "val_dice", "max", None, Requests(),
               commit=lambda saver: Commit(State(), saver))
    return events


def test_an_elastic_epoch_is_committed_before_any_collective_that_follows_its_record(monkeypatch, tmp_path):
    """A peer lost in a collective after the epoch record and best.npz but before the commit would send the
    survivors back to the previous commit: they would train and record that epoch again."""
    events = _elastic_epoch_end(monkeypatch, tmp_path)
    assert "commit" in events and "collective any_rank" in events, events
    after_record = events[events.index("checkpoint"):]
    assert after_record.index("commit") < min(i for i, e in enumerate(after_record) if e.startswith("collective"))


def test_init_from_loads_every_layer_of_the_same_shapes_and_starts_another_head_fresh(tmp_path):
    import tf_keras as keras
    from runtime.errors import UserError
    from training import checkpoint

    def net(classes, seed):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(5, name="body"),
                                  keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(classes, name="head")])
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        return model

    source = net(3, seed=1)
    checkpoint.save(str(tmp_path / "best.npz"), source, {"epoch": 2, "lr": 1e-3})
    same = net(3, seed=2)
    assert checkpoint.init_from(str(tmp_path / "best.npz"), same) == {"loaded": ["body", "bn", "head"], "fresh": []}
    assert all((a == b).all() for a, b in zip(same.get_weights(), source.get_weights()))
    other = net(4, seed=2)
    fresh_head = other.get_layer("head").get_weights()
    assert checkpoint.init_from(str(tmp_path / "best.npz"), other) == {"loaded": ["body", "bn"], "fresh": ["head"]}
    assert (other.get_layer("body").get_weights()[0] == source.get_layer("body").get_weights()[0]).all()
    assert all((a == b).all() for a, b in zip(other.get_layer("head").get_weights(), fresh_head))
    deeper = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(5),
                               keras.layers.Dense(3)])
    with pytest.raises(UserError, match="holds 8 weight arrays, this model has 6: it was trained with another "
                                        "network"):
        checkpoint.init_from(str(tmp_path / "best.npz"), deeper)


def test_init_from_is_checked_before_tensorflow_and_is_not_resume(tmp_path):
    from runtime.config import parse_args
    from runtime.errors import UserError
    from training.config import TrainConfig
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match=r"--init-from .*run: no best.npz in that run folder"):
        parse_args(TrainConfig, ["--init-from", str(tmp_path / "run"), "--data-dir", "d"])
    (tmp_path / "run" / "best.npz").write_bytes(b"x")
    assert parse_args(TrainConfig, ["--init-from", str(tmp_path / "run"), "--data-dir", "d"]).init_from_checkpoint() \
        == str(tmp_path / "run" / "best.npz")
    with pytest.raises(UserError, match="^--init-from starts a new run from other weights, --resume continues"):
        parse_args(TrainConfig, ["--init-from", str(tmp_path / "run"), "--resume", "--run-name", "r", "--data-dir", "d"])


def test_a_run_resumed_in_another_precision_goes_on_with_a_warning():
    """A requeued job that lands on another GPU generation (bfloat16 where float16 was, or float32): allowed."""
    from training.engine import precision_change
    assert precision_change(None, "bfloat16") is None
    assert precision_change({"precision": "bfloat16"}, "bfloat16") is None
    assert precision_change({}, "float32") is None  # checkpoints of older versions
    assert precision_change({"precision": "float16"}, "bfloat16") == (
        "the checkpoint was trained in float16, this run computes in bfloat16: going on in bfloat16; pass "
        "--precision float16 to keep the checkpoint's")
    assert "loss scale is in no checkpoint" in precision_change({"precision": "bfloat16"}, "float16")
