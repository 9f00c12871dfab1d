"""SYNTHETIC.json: which files of a data folder the synthetic writer made, so that it rewrites those alone.

    names = ["kvasir-seg.zip", "train.txt", "val.txt"]
    refuse_unless_ours("data/kvasir-seg", names)   # UserError unless empty, or every such file is the writer's
    begin("data/kvasir-seg", names)                # before writing: these names are the writer's now
    ...write them...
    finish("data/kvasir-seg", {"seed": 0, ...}, names)   # SYNTHETIC.json: the summary and each file's SHA-256

A folder is the synthetic writer's when it holds SYNTHETIC.json; of its files,
those whose SHA-256 the marker records (or that it lists as being written) may
be rewritten. Any other non-empty folder, such as a real download with
hand-placed metadata, is refused before anything is written.
"""
import json
import os

from runtime.files import sha256_of
from runtime.errors import UserError
from runtime.files import write_json

MARKER = "SYNTHETIC.json"


def read(folder):
    """The marker's contents; None when there is none (or it cannot be read as one)."""
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as fh:
            found = json.load(fh)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def refuse_unless_ours(folder, names):
    """Stop, in one line, unless ``folder`` is empty or new, or every one of ``names`` in it is the writer's."""
    if not os.path.isdir(folder) or not os.listdir(folder):
        return
    marker = read(folder)
    if marker is None:
        raise UserError(f"{folder} holds files and no readable {MARKER}, so they are not a synthetic set "
                        f"(a real download?): write the synthetic set into another --out; nothing was written")
    recorded = marker.get("files")
    if recorded is None:
        return  # a marker from before files were recorded: the folder was made whole by the writer
    foreign = [n for n in names if os.path.exists(os.path.join(folder, n)) and not is_ours(folder, n, recorded)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise UserError(f"{os.path.join(folder, foreign[0])}{more} is not the file the synthetic writer made "
                        f"({MARKER} records another): move it away, or write the synthetic set into another "
                        f"--out; nothing was written")


def is_ours(folder, name, recorded):
    if name not in recorded:
        return False
    return recorded[name] is None or sha256_of(os.path.join(folder, name)) == recorded[name]


def begin(folder, names):
    """Mark ``names`` as being written: an interrupted write leaves them the writer's to redo."""
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, MARKER), {"writing": True, "files": {n: None for n in names}})


def finish(folder, summary, names):
    """SYNTHETIC.json: ``summary`` and the SHA-256 of each file written."""
    files = {n: sha256_of(os.path.join(folder, n)) for n in names}
    write_json(os.path.join(folder, MARKER), dict(summary, files=files))
