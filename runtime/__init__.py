"""The shared runtime: every distributed and run-time concern of the trainers.

Model and data code never import Horovod; entry points do this:

    import runtime                      # first: selects legacy Keras
    from runtime import distributed
    from runtime.rundir import RunDir
    ctx = distributed.init(cfg)         # Horovod, threads, devices, precision
    run = RunDir.create(cfg, ctx, "chexnet")   # runs/<name>/ config.json, metrics.jsonl

Modules: ``config`` (typed run settings from the command line), ``distributed``
(Horovod init, optimizer, collectives: the only one that imports Horovod),
``devices`` and ``tf_devices`` (which device a rank computes on, then pinning
it in TensorFlow), ``precision`` (which precision the hardware runs fast),
``callbacks`` (Keras callbacks built on those collectives), ``throughput``
(images/s math), ``metrics`` (the JSON-lines stream), ``rundir`` (the run
folder and its lock), ``files`` (atomic, durable writes), ``logs`` (rank-aware
logging), ``errors`` (one-line user errors), ``stop`` (a stop signal becomes a
checkpoint and exit 75), ``watchdog`` (a rank that stops making progress ends
itself), ``trace`` (Horovod timelines as valid Chrome traces), ``nvtx`` (ranges
for Nsight Systems), ``quiet`` and ``stderr_filter`` (drop TensorFlow's
CUDA-stub start-up lines, in process or as a pipe).
"""
import os
import sys

# horovod 0.28.1 only drives Keras 2; since TF 2.16 `tf.keras` is Keras 3 unless
# this is set before TensorFlow is first imported (REFERENCE.md section 1).
if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError("import runtime before tensorflow (it must set TF_USE_LEGACY_KERAS=1 first)")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (CPU features, oneDNN notes) buries the
# real log; set TF_CPP_MIN_LOG_LEVEL=0 to see it when debugging TF itself. A node
# with GPUs keeps TF's warnings: they say which CUDA library failed to load.
from runtime import devices  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL",
                      "1" if devices.gpu_evidence() and not devices.gpus_hidden() else "3")
# The CUDA-stub lines are printed before TF's logging exists: drop exactly those
# (runtime/quiet.py; MEDIMG_SHOW_TF_STARTUP=1 shows them).
from runtime import quiet  # noqa: E402

quiet.install()
