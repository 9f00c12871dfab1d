"""Atomic file writes, free of heavy imports (the data stages use them too).

    write_json("out/manifest.json", {"images": 3})
    atomic_write("runs/x/best.npz", lambda tmp: save(tmp, model))
"""
import json
import os


def atomic_write(path, write_fn):
    """``write_fn(tmp_path)`` then rename: readers never see a half-written file.

    The temporary name keeps the extension (Keras picks the format from it) and
    lives in the same folder (a rename across file systems is not atomic).
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    def dump(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
    atomic_write(path, dump)
