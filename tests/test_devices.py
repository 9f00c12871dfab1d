"""GPU logic on a CPU machine: device choice and its refusals, GPU sharing, float16's limits (one process,
and real ranks where a node "with GPUs" is faked through the environment)."""
import sys

import pytest

from helpers import run_ranks
from runtime import devices
from runtime.config import parse_args
from runtime.errors import UserError


def test_gpu_evidence_reads_device_files_slurm_and_cuda_visible_devices(tmp_path):
    assert devices.gpu_evidence({}, str(tmp_path / "nvidia[0-9]*")) == []
    (tmp_path / "nvidia0").write_text("")
    env = {"SLURM_JOB_GPUS": "0,1", "SLURM_GPUS_ON_NODE": "0", "CUDA_VISIBLE_DEVICES": "GPU-3f2a"}
    assert devices.gpu_evidence(env, str(tmp_path / "nvidia[0-9]*")) == [
        f"{tmp_path}/nvidia0 exists", "SLURM_JOB_GPUS=0,1", "CUDA_VISIBLE_DEVICES=GPU-3f2a"]
    for hidden in ("", "-1", "NoDevFiles"):
        assert devices.gpu_evidence({"CUDA_VISIBLE_DEVICES": hidden}, str(tmp_path / "x*")) == []
        assert devices.gpus_hidden({"CUDA_VISIBLE_DEVICES": hidden})
    assert not devices.gpus_hidden({}) and not devices.gpus_hidden({"CUDA_VISIBLE_DEVICES": "0"})


@pytest.mark.parametrize("requested, tf_gpus, evidence, nccl, size, outcome", [
    ("auto", 0, [], False, 2, "CPU"),
    ("auto", 2, ["/dev/nvidia0 exists"], True, 2, "GPU"),
    ("auto", 1, ["/dev/nvidia0 exists"], False, 1, "GPU"),  # one rank needs no NCCL
    ("cpu", 4, ["/dev/nvidia0 exists"], True, 4, "CPU"),
    ("auto", 0, ["/dev/nvidia0 exists"], True, 1, "this node has GPUs (/dev/nvidia0 exists) but TensorFlow sees none"),
    ("gpu", 0, [], True, 1, "--device gpu: TensorFlow sees no GPU on this node: install"),
    ("auto", 2, ["/dev/nvidia0 exists"], False, 2, "2 GPU ranks, but this horovod was built without NCCL"),
    ("gpu", 2, [], False, 2, "2 GPU ranks, but this horovod was built without NCCL"),
])
def test_the_device_is_the_gpu_or_a_refusal_never_a_silent_cpu_fallback(requested, tf_gpus, evidence, nccl, size,
                                                                         outcome):
    if outcome in ("CPU", "GPU"):
        assert devices.choose_device(requested, tf_gpus, evidence, nccl, size) == outcome
    else:
        with pytest.raises(UserError, match="^" + outcome.replace("(", r"\(").replace(")", r"\)")) as err:
            devices.choose_device(requested, tf_gpus, evidence, nccl, size)
        assert "\n" not in str(err.value) and ("--device cpu" in str(err.value))


def test_ranks_sharing_a_gpu_are_refused_and_cuda_visible_devices_names_the_physical_one():
    assert devices.gpu_identity("a", 0, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ("a", "2")
    assert devices.gpu_identity("a", 1, {}) == ("a", "1")
    # Slurm's --gpus=1 for two tasks: both ranks see "0" of the same node.
    same = [devices.gpu_identity("n1", 0, {"CUDA_VISIBLE_DEVICES": "0"}) for _ in range(2)]
    with pytest.raises(UserError, match="^ranks 0, 1 on host n1 would share GPU 0: start at most one rank per GPU"):
        devices.check_no_sharing(same)
    devices.check_no_sharing([("n1", "0"), ("n1", "1"), ("n2", "0"), None, None])  # other hosts, CPU ranks


def test_float16_with_accumulation_is_refused_before_tensorflow_and_at_init_for_auto():
    from chexnet.config import CheXNetConfig
    with pytest.raises(UserError, match="^--precision float16 with --grad-accum-steps > 1"):
        parse_args(CheXNetConfig, ["--precision", "float16", "--grad-accum-steps", "2"])
    from runtime import distributed, precision

    class Cfg:
        grad_accum_steps, elastic = 1, False
    auto_on_v100 = precision.choose("auto", (7, 0), on_gpu=True)
    distributed._check_float16(auto_on_v100, Cfg())
    for attr, message in (("grad_accum_steps", "float16 with --grad-accum-steps > 1"), ("elastic", "float16 with "
                                                                                          "--elastic")):
        cfg = Cfg()
        setattr(cfg, attr, 2 if attr == "grad_accum_steps" else True)
        with pytest.raises(UserError, match=message):
            distributed._check_float16(auto_on_v100, cfg)
        distributed._check_float16(precision.choose("auto", (8, 0), on_gpu=True), cfg)  # bfloat16 needs no scaling


SMOKE = ["-m", "smoke.train", "--epochs", "1", "--steps-per-epoch", "2", "--per-rank-batch", "4", "--eval-images",
         "8", "--precision", "float32"]


@pytest.mark.slow
def test_a_node_with_gpus_tensorflow_cannot_see_is_refused_on_every_rank_unless_told_cpu(tmp_path):
    """CUDA_VISIBLE_DEVICES names a GPU this CPU machine lacks: the state of a node whose CUDA libraries are
    missing. auto and gpu refuse in one line on both ranks; --device cpu trains, naming the device."""
    runs = ["--runs-dir", str(tmp_path)]
    for device, message in (("auto", "but TensorFlow sees none, so the run would train on the CPU"),
                            ("gpu", "--device gpu: TensorFlow sees no GPU on this node (CUDA_VISIBLE_DEVICES=0)")):
        proc = run_ranks(2, [*SMOKE, *runs, "--device", device], timeout=300, expect_rc=None, CUDA_VISIBLE_DEVICES="0")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.count(message) == 2
    proc = run_ranks(2, [*SMOKE, *runs, "--device", "cpu"], timeout=300, CUDA_VISIBLE_DEVICES="0")
    assert "device: CPU (" in proc.stdout and "on 2 rank(s) of 1 host(s); horovod 0.28.1 built with" in proc.stdout


def test_the_device_flag_takes_only_its_choices():
    from chexnet.config import CheXNetConfig
    with pytest.raises(SystemExit):
        parse_args(CheXNetConfig, ["--device", "tpu"])
    assert parse_args(CheXNetConfig, []).device == "auto" and sys.modules.get("runtime.devices")
