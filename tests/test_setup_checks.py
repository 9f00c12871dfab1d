"""The checks scripts/setup.sh uses to decide whether horovod must be rebuilt."""
import importlib.util
import json
import os


from helpers import ROOT

spec = importlib.util.spec_from_file_location("check_horovod", os.path.join(ROOT, "scripts", "check_horovod.py"))
check_horovod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_horovod)

GOOD = """Available Frameworks:
    [X] TensorFlow
    [ ] PyTorch
Available Controllers:
    [X] MPI
    [X] Gloo
"""


def test_check_build_parsing():
    assert check_horovod.missing_parts(GOOD) == []
    assert check_horovod.missing_parts(GOOD.replace("[X] Gloo", "[ ] Gloo")) == ["Gloo"]
    assert check_horovod.missing_parts("") == ["TensorFlow", "MPI", "Gloo"]


def test_gpu_path_requires_nccl():
    # A CPU-only horovod on a machine set up with HOROVOD_GPU_OPERATIONS=NCCL is rebuilt.
    assert check_horovod.missing_parts(GOOD, "NCCL") == ["NCCL"]
    assert check_horovod.missing_parts(GOOD + "    [X] NCCL\n", "NCCL") == []


def _site(tmp_path, built_tf):
    (tmp_path / "horovod").mkdir()
    (tmp_path / "horovod" / "metadata.json").write_text(json.dumps({"tensorflow": built_tf}))
    return str(tmp_path)


def test_build_against_other_tensorflow_is_detected(tmp_path):
    why = check_horovod.metadata_problem(_site(tmp_path, "2.15.1"), "2.18.1")
    assert why == "horovod was built against TensorFlow 2.15.1, TensorFlow 2.18.1 is installed"


def test_matching_build_passes(tmp_path):
    assert check_horovod.metadata_problem(_site(tmp_path, "2.18.1"), "2.18.1") is None


def test_missing_horovod_is_detected(tmp_path):
    assert check_horovod.metadata_problem(str(tmp_path), "2.18.1") == "horovod is not installed"


def test_installed_environment_is_good():
    # The venv running these tests was made by make setup: it must pass its own check.
    import sysconfig
    assert check_horovod.problem("0.28.1", sysconfig.get_paths()["purelib"]) is None
