"""runtime/files.py: the final name only ever holds a complete file."""
import json
import os

import pytest

from runtime import files
from runtime.errors import UserError


def _fd_target(fd):
    return os.readlink(f"/proc/self/fd/{fd}")


def test_temp_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "best.npz"
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", _fd_target(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))),
                                                     real_replace(a, b))[1])
    seen = []

    def write(tmp):
        seen.append(tmp)
        with open(tmp, "wb") as fh:
            fh.write(b"x" * 1000)

    files.atomic_write(str(target), write)
    tmp = seen[0]
    assert events == [("fsync", tmp), ("replace", tmp, str(target)), ("fsync", str(tmp_path))]
    assert target.read_bytes() == b"x" * 1000


def test_final_name_only_appears_complete(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
            fh.flush()
            assert target.read_text() == "old"  # half-written: readers still see the old file
            fh.write(" and the rest")
        assert target.read_text() == "old"  # written, not yet renamed

    files.atomic_write(str(target), write)
    assert target.read_text() == "half and the rest"
    assert os.listdir(tmp_path) == ["manifest.json"]


def _fails_midway(tmp):
    with open(tmp, "wb") as fh:
        fh.write(b"partial")
    raise RuntimeError("the writer broke")


def _fills_the_disk(tmp):
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    with open(tmp, "wb") as fh:
        fh.write(b"partial")
    with open("/dev/full", "wb") as full:
        full.write(b"x" * 4096)
        full.flush()


@pytest.mark.parametrize("write,error,message", [
    (_fails_midway, RuntimeError, "the writer broke"),
    # A full disk is one line naming the file, and says the previous one is untouched.
    (_fills_the_disk, UserError, r"last.npz: no space left on the device of .*the previous last.npz, if any, is "
                                 r"untouched: free space or write elsewhere")])
def test_failing_writer_leaves_old_file_and_no_temp(tmp_path, write, error, message):
    target = tmp_path / "last.npz"
    target.write_bytes(b"previous")
    with pytest.raises(error, match=message):
        files.atomic_write(str(target), write)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["last.npz"]


def test_failing_fsync_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    files.write_json(str(target), {"v": 1})

    def eio(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError):
        files.write_json(str(target), {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["m.json"]


# A process that writes last.npz (training.checkpoint.save through atomic_write) over and over,
# printing each number once it is in place; "before-rename" kills itself on the third write,
# after the temporary file is complete and before the rename.
WRITER = """
import os, signal, sys
import runtime
import tf_keras as keras
from runtime.files import atomic_write
from training import checkpoint
path, mode = sys.argv[1], sys.argv[2]
model = keras.Sequential([keras.layers.Dense(512, input_shape=(512,))])
model.compile(keras.optimizers.Adam(), "mse")
model.optimizer.build(model.trainable_variables)
real_replace = os.replace
for i in range(1, 100000):
    if mode == "before-rename" and i == 3:
        os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
    model.layers[0].kernel.assign(model.layers[0].kernel * 0 + i)
    atomic_write(path, lambda tmp: checkpoint.save(tmp, model, {"epoch": i}))
    print(i, flush=True)
"""


def _killed_writer(path, mode, kill_after_s=None):
    """Run the writer until it dies (or is killed ``kill_after_s`` s after its first write); its last line."""
    import random
    import subprocess
    import sys
    import time

    from helpers import ROOT, job_env
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode], cwd=ROOT, env=job_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.strip() == "1", "the writer did not start"
        if kill_after_s is not None:
            time.sleep(kill_after_s * random.random())
            proc.kill()
        proc.wait(120)
        rest = proc.stdout.read().split()
    finally:
        proc.kill()
        proc.wait()
    return int(([first] + rest)[-1])


def test_a_writer_killed_before_the_rename_leaves_the_previous_checkpoint_loadable(tmp_path):
    from training import checkpoint
    path = tmp_path / "last.npz"
    assert _killed_writer(path, "before-rename") == 2
    weights, _, state = checkpoint.read(str(path))
    assert state["epoch"] == 2 and (weights[0] == 2).all()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # the complete temp file, unused


@pytest.mark.parametrize("attempt", range(4))
def test_a_writer_killed_at_a_random_point_leaves_a_complete_checkpoint(tmp_path, attempt):
    from training import checkpoint
    path = tmp_path / "last.npz"
    printed = _killed_writer(path, "loop", kill_after_s=0.5)
    weights, _, state = checkpoint.read(str(path))
    # Printed once in place; the kill may land after a rename and before its print.
    assert state["epoch"] in (printed, printed + 1) and (weights[0] == state["epoch"]).all()
