"""runtime/files.py: the final name only ever holds a complete file."""
import json
import os

import pytest

from runtime import files


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


def test_failing_writer_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "last.npz"
    target.write_bytes(b"previous")

    def broken(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(str(target), broken)
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
