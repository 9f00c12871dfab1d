"""Which device a rank computes on, decided from what the node has, never by silent fallback (no TensorFlow here).

    evidence = gpu_evidence()                  # ["/dev/nvidia0 exists", "CUDA_VISIBLE_DEVICES=0,1"] or []
    kind = choose_device("auto", tf_gpus=0, evidence=evidence, nccl=False, size=2)
    # -> "CPU" on a CPU node; a UserError on a GPU node whose CUDA set-up TensorFlow cannot load

``--device auto`` trains on the GPUs TensorFlow sees, on the CPU when the node
has none, and refuses a node that has GPUs TensorFlow does not see (a broken
CUDA install would otherwise train on the host CPU without a word). ``gpu``
requires one; ``cpu`` hides them.
"""
import glob
import os

from runtime.errors import UserError

DEVICES = ("auto", "gpu", "cpu")
# Values of CUDA_VISIBLE_DEVICES that hide every GPU rather than name one.
HIDDEN = ("", "-1", "none", "nodevfiles", "void")
SLURM_GPU_VARS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")
SETUP_HINT = ("install TensorFlow's CUDA libraries (TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup) and "
              "check the driver (nvidia-smi); or pass --device cpu to train on the CPU anyway")


def gpu_evidence(environ=None, dev_glob="/dev/nvidia[0-9]*"):
    """Why this node looks like it has NVIDIA GPUs: device files, a Slurm GPU allocation, CUDA_VISIBLE_DEVICES."""
    environ = os.environ if environ is None else environ
    found = []
    devices = sorted(glob.glob(dev_glob))
    if devices:
        found.append(f"{devices[0]} exists")
    found += [f"{v}={environ[v]}" for v in SLURM_GPU_VARS if environ.get(v, "").strip() not in ("", "0")]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() not in HIDDEN:
        found.append(f"CUDA_VISIBLE_DEVICES={visible}")
    return found


def gpus_hidden(environ=None):
    """CUDA_VISIBLE_DEVICES set to hide every GPU (a user's own way of saying --device cpu)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip().lower() in HIDDEN


def choose_device(requested, tf_gpus, evidence, nccl, size):
    """"GPU" or "CPU" for ``requested`` (auto, gpu, cpu), or a UserError naming what is wrong.

    ``tf_gpus``: GPUs TensorFlow sees; ``evidence``: gpu_evidence(); ``nccl``: horovod was built with NCCL;
    ``size``: ranks in the job (one rank needs no GPU collectives)."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "cpu":
        return "CPU"
    if not tf_gpus:
        if requested == "gpu":
            seen = f" ({'; '.join(evidence)})" if evidence else ""
            raise UserError(f"--device gpu: TensorFlow sees no GPU on this node{seen}: {SETUP_HINT}")
        if evidence:
            raise UserError(f"this node has GPUs ({'; '.join(evidence)}) but TensorFlow sees none, so the run would "
                            f"train on the CPU: {SETUP_HINT}")
        return "CPU"
    if size > 1 and not nccl:
        raise UserError(f"{size} GPU ranks, but this horovod was built without NCCL: its allreduce would copy every "
                        f"gradient through host memory; rebuild it with HOROVOD_GPU_OPERATIONS=NCCL make setup, or pass "
                        f"--device cpu")
    return "GPU"


def gpu_identity(host, index, environ=None):
    """(host, physical GPU) of the ``index``-th GPU this process sees: CUDA_VISIBLE_DEVICES maps it to the node's."""
    environ = os.environ if environ is None else environ
    visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return host, visible[index] if index < len(visible) else str(index)


def shared_gpus(identities):
    """Ranks that would share one GPU: {(host, gpu): [ranks]} for every GPU named by more than one rank."""
    by_gpu = {}
    for rank, identity in enumerate(identities):
        if identity is not None:
            by_gpu.setdefault(tuple(identity), []).append(rank)
    return {gpu: ranks for gpu, ranks in by_gpu.items() if len(ranks) > 1}


def check_no_sharing(identities):
    shared = shared_gpus(identities)
    if shared:
        (host, gpu), ranks = next(iter(shared.items()))
        raise UserError(f"ranks {', '.join(map(str, ranks))} on host {host} would share GPU {gpu}: start at most one "
                        f"rank per GPU (mpirun -np <GPUs>, or srun --gpus-per-task=1), or give each rank its own "
                        f"CUDA_VISIBLE_DEVICES")
