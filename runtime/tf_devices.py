"""Pin the process to its device in TensorFlow: one GPU with memory growth, or the CPU (no Horovod here).

    device, capability, name = pin("auto", index=0, size=1, nccl=True)   # ("GPU:0", (9, 0), "NVIDIA H100") or
                                                                          # ("CPU", None, None)

The choice is runtime.devices.choose_device's (a node whose GPUs TensorFlow
cannot see is refused in one line, never trained on its CPU). The trainers
call this through runtime.distributed with their local rank; predict calls it
with index 0.
"""
import tensorflow as tf

from runtime import devices


def pin(requested, index, size, nccl):
    """(device, compute capability or None, GPU name or None) of this process, pinned."""
    if requested == "cpu":
        tf.config.set_visible_devices([], "GPU")
        return "CPU", None, None
    gpus = tf.config.list_physical_devices("GPU")
    evidence = [] if devices.gpus_hidden() else devices.gpu_evidence()
    if devices.choose_device(requested, len(gpus), evidence, nccl, size) == "CPU":
        return "CPU", None, None
    # One GPU per process: ranks on one node must not share a device (runtime.distributed checks it).
    index = index % len(gpus)
    gpu = gpus[index]
    tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.set_visible_devices(gpu, "GPU")
    details = tf.config.experimental.get_device_details(gpu)
    return f"GPU:{index}", details.get("compute_capability"), details.get("device_name", "GPU")
