"""Horovod, devices, threads and precision: the only module that imports Horovod.

    ctx = init(cfg)                            # once, before any TensorFlow op
    lr = schedule.Schedule.of(cfg, ctx.size, steps).target_lr   # runtime.schedule
    opt = distributed_optimizer(keras.optimizers.Adam(lr), cfg)
    mean = allreduce_mean({"loss": 0.3})       # same keys on every rank
    preds = allgather(np.zeros((n_local, 14))) # rows of every rank, rank order

Works under ``horovodrun``/``mpirun``/``srun`` and alone (one rank).
"""
import dataclasses
import hashlib
import logging
import os
import platform

import horovod
import horovod.tensorflow as hvd
import horovod.tensorflow.elastic as hvd_elastic
# Not horovod.tensorflow.keras: it imports Keras 3 (with sklearn and pyplot) for helpers this project does
# not use, a large share of each rank's start-up (docs/decisions.md); its DistributedOptimizer is this call.
from horovod._keras import create_distributed_optimizer
from horovod.common.elastic import run_fn
from horovod.common.exceptions import HorovodInternalError
import numpy as np
import tensorflow as tf
import tf_keras as keras

from runtime import accumulation, devices, precision as precision_mod, tf_devices
from runtime.errors import UserError
from runtime.logs import setup_logging

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Context:
    rank: int
    size: int
    local_rank: int
    local_size: int
    intra_op_threads: int
    device: str           # "GPU:<n>" or "CPU"
    precision: precision_mod.Choice
    jit_compile: bool
    cpu_model: str

    @property
    def compute_dtype(self):
        return self.precision.compute_dtype

    @property
    def is_chief(self):
        return self.rank == 0



def cores_per_rank(local_size):
    """Cores this rank may use: the cores it is bound to, shared by local ranks."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    total = os.cpu_count() or 1
    # mpirun may bind each rank to its own cores (affinity < total): use those.
    # Unbound ranks all see every core: split them between the local ranks.
    return max(1, usable if usable < total else total // max(1, local_size))


def _configure_threads(cfg, local_size):
    # TF's default pools size themselves to every core on the machine; with
    # several ranks per node that oversubscribes (2 ranks on 2 cores ran slower
    # than 1 rank, REFERENCE.md section 1).
    intra = cfg.threads_per_rank or cores_per_rank(local_size)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, intra)))
    return intra


def _pin_device(requested, local_rank, size):
    """("GPU:<n>", compute capability, GPU name) for this rank's GPU, or ("CPU", None, None); refused in one
    line where the node has GPUs TensorFlow cannot use (runtime.devices)."""
    return tf_devices.pin(requested, local_rank, size, bool(hvd.nccl_built()))


def _set_precision(requested, device, capability, cpu, is_chief, agree):
    # Mixed precision only where the hardware has the units: emulated bfloat16 is far slower (runtime/precision.py).
    choice = precision_mod.choose(requested, capability, device.startswith("GPU"), cpu)
    if agree:  # rank 0's choice: a job across GPU generations (or CPU kinds) trains in one policy
        choice = broadcast_object(choice)
    keras.mixed_precision.set_global_policy(choice.policy)
    if choice.warning and is_chief:
        log.warning("%s", choice.warning)
    return choice


def _check_float16(choice, cfg):
    """Loss scaling is rank-local between allreduces and absent from the elastic state: refuse where it breaks."""
    if choice.compute_dtype != "float16":
        return
    if getattr(cfg, "grad_accum_steps", 1) > 1:
        raise UserError("float16 with --grad-accum-steps > 1: each rank's loss scale would react to its own "
                        "accumulated overflows and the replicas drift apart; pass --precision bfloat16 (compute "
                        "capability 8.0 and later) or float32, or drop --grad-accum-steps")
    if getattr(cfg, "elastic", False):
        raise UserError("float16 with --elastic: the loss scale is not part of the elastic state, so joining "
                        "workers would start from another scale; pass --precision bfloat16 or float32")


def _log_devices(ctx, gpu_name, elastic):
    """Rank 0 names every rank's device, host and the horovod build (one line a kind of device)."""
    mine = (platform.node(), ctx.device, gpu_name or ctx.cpu_model, ctx.precision.policy)
    everyone = [mine] if elastic else allgather_object(mine)
    if not elastic:
        devices.check_no_sharing([devices.gpu_identity(host, int(device[4:])) if device.startswith("GPU") else None
                                  for host, device, _, _ in everyone])
    if ctx.is_chief:
        build = ", ".join(n for n, built in (("NCCL", hvd.nccl_built()), ("MPI", hvd.mpi_built()),
                                              ("Gloo", hvd.gloo_built())) if built)
        kinds = sorted({(d.split(":")[0], name, policy) for _, d, name, policy in everyone})
        for kind, name, policy in kinds:
            ranks = [r for r, (_, d, n, p) in enumerate(everyone) if (d.split(":")[0], n, p) == (kind, name, policy)]
            hosts = len({everyone[r][0] for r in ranks})
            log.info("device: %s (%s), %s, on %d rank(s) of %d host(s); horovod %s built with %s", kind, name,
                     policy, len(ranks), hosts, horovod.__version__, build)


STALL_DEFAULTS = {
    # Horovod only warns when some ranks wait in a collective that other, live
    # ranks never join (a code path only some ranks take); without a shutdown
    # time the job hangs until the allocation ends. After these seconds Horovod
    # shuts down and every waiting rank fails, which ends the job. Override in
    # the environment. (A frozen rank blocks Horovod's own negotiation, so that
    # case is runtime.watchdog's.)
    "HOROVOD_STALL_CHECK_TIME_SECONDS": "60",
    "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "300",
}


MPI_DEFAULTS = {
    # Open MPI polls while a rank waits for a peer in a collective, holding a core
    # the other ranks' compute needs when ranks share a node's cores: yield it while
    # polling (measured in docs/decisions.md). Read at MPI_Init, inside hvd.init();
    # override in the environment.
    "OMPI_MCA_mpi_yield_when_idle": "1",
}


def init(cfg):
    """Start Horovod and configure this process; call before building any model."""
    for name, value in {**STALL_DEFAULTS, **MPI_DEFAULTS}.items():
        os.environ.setdefault(name, value)
    # Horovod marks each collective with an NVTX range; only --nvtx asks for them (off by default).
    os.environ.setdefault("HOROVOD_DISABLE_NVTX_RANGES", "0" if getattr(cfg, "nvtx", False) else "1")
    if getattr(cfg, "timeline", False):  # a trainer flag (evaluation has none)
        # The run folder is named after init: start the timeline later, there (start_timeline).
        os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
    if getattr(cfg, "elastic", False) and os.environ.get("HOROVOD_ELASTIC") != "1":
        raise UserError("--elastic needs an elastic launch: horovodrun --min-np N --max-np M "
                        "--host-discovery-script FILE (Gloo); without it, drop --elastic")
    hvd.init()
    setup_logging(hvd.rank())
    if cfg.xla and hvd.size() > 1:
        # horovod 0.28.1 has no XLA allreduce kernel on CPU, and its GPU one is opt-in and untested here.
        raise UserError(f"--xla works on one rank only with horovod 0.28.1 (it has no XLA allreduce kernel on "
                        f"CPU, and its GPU one, HOROVOD_ENABLE_XLA_OPS, is not supported by this project); "
                        f"this job has {hvd.size()} ranks: drop --xla")
    intra = _configure_threads(cfg, hvd.local_size())
    elastic = getattr(cfg, "elastic", False)  # no collective before the elastic loop (training.elastic)
    device, capability, gpu_name = _pin_device(cfg.device, hvd.local_rank(), hvd.size())
    cpu = precision_mod.cpu_facts()
    choice = _set_precision(cfg.precision, device, capability, cpu, hvd.rank() == 0, agree=not elastic)
    _check_float16(choice, cfg)
    # Same seed on every rank for weights (broadcast anyway); data order is
    # offset by rank in the data code so ranks do not read identical batches.
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        # Reductions in a fixed order: slower, but a resumed run matches an uninterrupted one bit for bit.
        tf.config.experimental.enable_op_determinism()
    ctx = Context(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                  local_size=hvd.local_size(), intra_op_threads=intra, device=device,
                  precision=choice, jit_compile=cfg.xla, cpu_model=cpu.model)
    _log_devices(ctx, gpu_name, elastic)
    return ctx


def refresh(ctx):
    """``ctx`` with this process's rank and size now: an elastic job renumbers its ranks on every reset."""
    return dataclasses.replace(ctx, rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                               local_size=hvd.local_size())


def elastic_state(model, **attrs):
    """Horovod's in-memory state of an elastic run: the model's and optimizer's variables plus ``attrs``.

    ``commit()`` keeps a copy (and raises HostsUpdatedInterrupt on every rank when workers came or
    went); after a lost worker the survivors go back to the last copy; on every (re)start rank 0's
    state is broadcast, so a new worker starts from it. The optimizer is built first: its slots must
    exist on every rank, or the broadcast pairs up different variables."""
    model.optimizer.build(model.trainable_variables)
    return hvd_elastic.TensorFlowKerasState(model, **attrs)


def run_elastic(func):
    """``func(state)`` again on the new set of workers after each reset, until it returns.

    Horovod's own decorator knows a lost peer only by the op names of its
    allreduce, allgather and broadcast; the grouped allreduce (BatchNorm
    averaging) and the eager collectives of the callbacks fail with other
    names. Any TensorFlow error of a Horovod op counts as a lost peer here."""
    def wrapper(state):
        try:
            return func(state)
        except tf.errors.OpError as err:
            if "Horovod" not in (err.message or ""):
                raise
            log.info("elastic: a collective failed (%s): back to the last commit, then a new rendezvous",
                     (err.message or "").splitlines()[0][:200])
            raise HorovodInternalError(err) from err
    return run_fn(wrapper, _elastic_reset)


def _elastic_reset():
    # A new rendezvous: ranks and size come from the workers that are left (or added).
    hvd.shutdown()
    log.info("elastic: shut down; waiting for the new rendezvous")
    hvd.init()
    log.info("elastic: rank %d of %d after the rendezvous", hvd.rank(), hvd.size())


def distributed_optimizer(optimizer, cfg):
    """Wrap a Keras optimizer so gradients are averaged across ranks each update.

    ``--grad-accum-steps K``: one update (and one allreduce) every K batches
    (``runtime.accumulation``); config refuses it with --elastic, --xla and float16."""
    if cfg.xla:
        # One rank (init refuses more): nothing to average, and XLA cannot compile the wrapper's
        # allreduce even in the branch a single rank never takes ("tf2xla conversion failed").
        return optimizer
    # fp16 halves allreduce bytes; worth it when the network, not compute, limits.
    compression = hvd.Compression.fp16 if cfg.fp16_allreduce else hvd.Compression.none
    if cfg.grad_accum_steps > 1:
        average = _fixed_size_allreduce_grads("DistributedAccumulated", compression) if hvd.size() > 1 \
            else (lambda grads, vars=None: grads)
        return accumulation.accumulating(optimizer, cfg.grad_accum_steps, average)
    fixed_size = os.environ.get("HOROVOD_ELASTIC") != "1"  # an elastic job's size changes
    if fixed_size and hvd.size() == 1:
        # Nothing to average, and the wrapper's tf.cond per gradient costs graph building
        # (seconds of CPU per process for DenseNet121), for an identity.
        return optimizer
    wrapped = create_distributed_optimizer(
        keras, optimizer, name=None, device_dense="", device_sparse="", compression=compression,
        sparse_as_dense=False, gradient_predivide_factor=1.0, op=hvd.Average, groups=None,
        process_set=hvd.global_process_set, scale_local_gradients=True)
    if fixed_size:
        # Horovod's function puts each gradient's allreduce in a tf.cond (for an elastic job that
        # may shrink to one rank), whose two branch graphs cost seconds of start-up per rank;
        # the same allreduce, without the cond.
        wrapped._allreduce_grads = _fixed_size_allreduce_grads(wrapped._name, compression)
    return wrapped


def _fixed_size_allreduce_grads(name, compression):
    """Horovod's per-gradient average (the cond's taken branch in horovod 0.28.1's allreduce_grads)."""
    def allreduce_grads(grads, vars=None):
        with tf.name_scope(name + "_Allreduce"):
            return [None if g is None else hvd.allreduce(g, op=hvd.Average, compression=compression,
                                                         process_set=hvd.global_process_set)
                    for g in grads]
    return allreduce_grads


def start_timeline(path):
    """Horovod's timeline of every collective into ``path`` (rank 0 writes it); needs --timeline at init."""
    hvd.start_timeline(path, mark_cycles=False)


def stop_timeline():
    hvd.stop_timeline()


def gradient_tape(tape):
    """``tape`` whose ``gradient`` averages over ranks: Horovod's own wrapper, for a loop written without
    Keras' fit (benchmarks/step_overhead.py's bare loop); one rank gets the tape itself."""
    # Horovod: the allreduce of each gradient, as its examples' custom loops do it.
    return hvd.DistributedGradientTape(tape) if hvd.size() > 1 else tape


def broadcast_variables(variables, root_rank=0):
    if hvd.size() == 1:  # an identity, whose graph costs seconds to build
        return
    hvd.broadcast_variables(variables, root_rank=root_rank)


def broadcast_object(obj, root_rank=0):
    return hvd.broadcast_object(obj, root_rank=root_rank)


def on_chief(fn, *args, collective=True):
    """``fn(*args)`` on rank 0, its result on every rank; a UserError there is raised on every rank (a rank
    that went on alone would wait in the next collective forever). ``collective=False`` (an elastic worker,
    which may run no collective before the elastic loop): every rank calls ``fn`` itself."""
    if not collective:
        return fn(*args)
    outcome = None
    if hvd.rank() == 0:
        try:
            outcome = ("ok", fn(*args))
        except UserError as err:
            outcome = ("error", str(err))
    kind, value = broadcast_object(outcome)
    if kind == "error":
        raise UserError(value)
    return value


def allreduce_mean(values):
    """Mean over ranks of each value of a dict; every rank must pass the same keys."""
    keys = sorted(values)  # identical order on every rank, or the allreduces mismatch
    stacked = tf.constant([float(values[k]) for k in keys], dtype=tf.float64)
    mean = hvd.allreduce(stacked, op=hvd.Average, name="allreduce_mean").numpy()
    return dict(zip(keys, mean.tolist()))


def allreduce_sum(values):
    """Sum over ranks of each value of a dict; every rank must pass the same keys."""
    return {k: v * hvd.size() for k, v in allreduce_mean(values).items()}


def any_rank(*flags):
    """Collective: for each flag, True on every rank when it is true on at least one (a stop request,
    a NaN loss); one allreduce for all of them. Every rank must pass the same number of flags."""
    values = tf.constant([1.0 if f else 0.0 for f in flags], tf.float32)
    reduced = hvd.allreduce(values, op=hvd.Max, name="any_rank").numpy()
    return tuple(bool(v > 0) for v in reduced)


def any_rank_and_least(flags, number):
    """Collective: (each flag true on every rank when true on one, the least of every rank's ``number``) in one
    allreduce: a stop check's flags and the agreed steps to its next check."""
    values = tf.constant([1.0 if f else 0.0 for f in flags] + [-float(number)], tf.float64)
    reduced = hvd.allreduce(values, op=hvd.Max, name="any_rank_and_least").numpy()  # max of -x: min of x
    return tuple(bool(v > 0) for v in reduced[:-1]), -reduced[-1]


def allgather(array):
    """Concatenate every rank's ``array`` along axis 0 (rank order); any local length."""
    return hvd.allgather(tf.convert_to_tensor(np.asarray(array))).numpy()


def allgather_object(obj):
    return hvd.allgather_object(obj)


def barrier():
    hvd.join()


def weights_digest(variables):
    """SHA-256 of the variables' bytes, in order: equal digests = identical weights."""
    digest = hashlib.sha256()
    for v in variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


def average_variables(variables):
    """Collective: replace each variable by its mean over ranks (e.g. BatchNorm moving statistics).

    Every rank must pass the same variables in the same order.
    """
    if not variables:
        return
    means = hvd.grouped_allreduce([tf.convert_to_tensor(v) for v in variables], op=hvd.Average,
                                  name="average_variables")
    for v, mean in zip(variables, means):
        v.assign(mean)


def replicas_in_sync(variables):
    """Collective: True when every rank holds bit-identical ``variables``.

    BatchNorm moving statistics follow each rank's own batches and differ
    between ranks until ``average_variables`` makes them agree (at epoch end).
    """
    digests = allgather_object(weights_digest(variables))
    return len(set(digests)) == 1
