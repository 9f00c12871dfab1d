"""Which compute precision pays on this machine: decided from the hardware, never assumed.

    cpu = cpu_facts()                           # model name and flags from /proc/cpuinfo
    choice = choose("auto", gpu_capability=None, cpu=cpu)
    choice.policy    # "mixed_bfloat16" on AMX / AVX512-BF16 CPUs, "float32" on AVX2-only ones
    choice.reason    # one line for config.json and the log

Requests (``--precision``):
- ``auto``: bfloat16 on GPUs of compute capability 8.0 and later (A100, H100,
  L40: the float16 rate without loss scaling), float16 with loss scaling on
  7.x GPUs (V100, T4), bfloat16 on CPUs with native bfloat16 units (AMX or
  AVX512-BF16), float32 elsewhere.
- ``mixed``: the same, but a machine without native units gets float32 and a
  warning that names the hardware and how to force it.
- ``float32``, ``bfloat16``, ``float16``: exactly that, whatever the hardware
  (a forced choice that is emulated here still warns).

Why it matters: without native units TensorFlow emulates bfloat16 and
DenseNet121 trains several times slower than in float32, while on AMX and
AVX512-BF16 CPUs bfloat16 is faster (the figures, their machines and dates:
docs/decisions.md, benchmarks/results/precision.md). No Horovod and no
TensorFlow here: pure facts, testable anywhere.
"""
import dataclasses

REQUESTS = ("auto", "mixed", "float32", "bfloat16", "float16")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
TENSOR_CORE_CAPABILITY = (7, 0)  # Volta and later: float16 tensor cores
BF16_CAPABILITY = (8, 0)         # Ampere and later: bfloat16 tensor cores


@dataclasses.dataclass(frozen=True)
class CpuFacts:
    model: str
    flags: frozenset

    @property
    def native_bf16(self):
        return [f for f in NATIVE_BF16_FLAGS if f in self.flags]


@dataclasses.dataclass(frozen=True)
class Choice:
    requested: str
    policy: str        # Keras policy: float32, mixed_bfloat16 or mixed_float16
    reason: str
    warning: str = ""  # non-empty when the user should hear about the choice

    @property
    def compute_dtype(self):
        return self.policy.replace("mixed_", "")

    def to_dict(self):
        return {"requested": self.requested, "policy": self.policy, "compute_dtype": self.compute_dtype,
                "reason": self.reason}


def cpu_facts(path="/proc/cpuinfo"):
    """Model name and feature flags of the first CPU listed in ``path`` (empty when unreadable)."""
    model, flags = "unknown CPU", frozenset()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if model != "unknown CPU" and flags:
                    break
    except OSError:
        pass
    return CpuFacts(model, flags)


def _gpu_choice(requested, capability):
    cc = ".".join(map(str, capability)) if capability else "unknown"
    cap = tuple(capability) if capability else (0, 0)
    if requested in ("float32", "bfloat16", "float16"):
        policy = "float32" if requested == "float32" else f"mixed_{requested}"
        warning = (f"--precision bfloat16 on a GPU of compute capability {cc}: bfloat16 tensor cores came with "
                   f"8.0; expect it to be slower than float16 here" if requested == "bfloat16" and cap < BF16_CAPABILITY
                   else "")
        return Choice(requested, policy, f"--precision {requested} on a GPU (compute capability {cc})", warning)
    if cap >= BF16_CAPABILITY:
        return Choice(requested, "mixed_bfloat16",
                      f"GPU with bfloat16 tensor cores (compute capability {cc}): bfloat16 compute, no loss scaling")
    if cap >= TENSOR_CORE_CAPABILITY:
        return Choice(requested, "mixed_float16",
                      f"GPU with float16 tensor cores (compute capability {cc}): float16 compute, loss scaling")
    reason = f"GPU without tensor cores (compute capability {cc}): float16 would not be faster"
    warning = (f"--precision mixed: {reason}; training in float32 (pass --precision float16 to force it)"
               if requested == "mixed" else "")
    return Choice(requested, "float32", reason, warning)


def _cpu_choice(requested, cpu):
    native = cpu.native_bf16
    if requested == "float32":
        return Choice(requested, "float32", f"--precision float32 on {cpu.model}")
    if requested == "float16":
        return Choice(requested, "mixed_float16", f"--precision float16 on {cpu.model}",
                      f"--precision float16 on a CPU ({cpu.model}): CPUs have no fast float16 path; "
                      f"expect it to be slower than float32")
    if native:
        return Choice(requested, "mixed_bfloat16",
                      f"{cpu.model} has native bfloat16 ({', '.join(native)}): bfloat16 compute")
    emulated = (f"{cpu.model} has no native bfloat16 (neither {' nor '.join(NATIVE_BF16_FLAGS)} in "
                f"/proc/cpuinfo): TensorFlow would emulate it, about 9x slower than float32")
    if requested == "bfloat16":
        return Choice(requested, "mixed_bfloat16", f"--precision bfloat16 forced on {cpu.model}",
                      f"--precision bfloat16: {emulated}; forced as asked")
    warning = (f"--precision mixed: {emulated}; training in float32 (pass --precision bfloat16 to force it)"
               if requested == "mixed" else "")
    return Choice(requested, "float32", emulated, warning)


def choose(requested, gpu_capability=None, on_gpu=False, cpu=None):
    """The precision for ``requested`` on this device.

    ``on_gpu``: the rank computes on a GPU whose compute capability is
    ``gpu_capability`` (a tuple, or None when unknown); otherwise ``cpu``
    (CpuFacts, read from /proc/cpuinfo when None) decides.
    """
    if requested not in REQUESTS:
        raise ValueError(f"precision must be one of {REQUESTS}, got {requested!r}")
    if on_gpu:
        return _gpu_choice(requested, gpu_capability)
    return _cpu_choice(requested, cpu or cpu_facts())
