"""The paths predict and evaluate read and write: a checkpoint or a run folder, and outputs that never
replace a user's file. Light (no TensorFlow): the entry points call it before loading the model.

    path, note = locate_checkpoint("runs/cx", "chexnet.train")   # -> runs/cx/best.npz, "using ..."
    masks = output_names("masks", ["frames/a.jpg"], ".png", lambda stem, n: f"{stem}-{n - 1}")  # masks/a.png
    check_targets([("masks/a.png", "a mask"), ("masks/p.csv", "the table")], ["frames/a.jpg"], overwrite=False)
    write_csv("masks/predictions.csv", ["image", "mask"], rows)   # quoted by the csv module, atomic

An output that is one of the inputs is always refused; an existing output is
refused unless ``overwrite``. Files are written under a temporary name and
renamed (runtime.files.atomic_write): an interrupted write leaves the previous
file, or none, never half a file.
"""
import csv
import io
import os

from runtime.errors import UserError
from runtime.files import atomic_write


def locate_checkpoint(path, trainer):
    """(checkpoint file, a note to log or None): a run folder stands for its best.npz."""
    if os.path.isdir(path):
        best = os.path.join(path, "best.npz")
        if not os.path.isfile(best):
            raise UserError(f"--checkpoint {path} is a folder without best.npz: pass a run folder of {trainer} "
                            f"or a checkpoint file (best.npz, last.npz)")
        return best, f"--checkpoint {path} is a run folder: using its best checkpoint, {best}"
    if not os.path.isfile(path):
        raise UserError(f"--checkpoint {path}: no such file or folder; pass best.npz or last.npz of a {trainer} "
                        f"run, or its run folder")
    return path, None


def _identity(path):
    """What makes two names one file: the resolved path, and (device, inode) when it exists."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return {real, (st.st_dev, st.st_ino)}
    except OSError:
        return {real}


def check_targets(targets, inputs, overwrite):
    """Refuse (one line) outputs [(path, what it is)] that are an input, a folder, twice the same, or,
    unless ``overwrite``, an existing file."""
    taken = set().union(*(_identity(p) for p in inputs)) if inputs else set()
    seen = {}
    for out, what in targets:
        if _identity(out) & taken:
            raise UserError(f"{out} ({what}) is one of the input images: writing it would destroy the image; "
                            f"write the outputs elsewhere (nothing was done)")
        real = os.path.realpath(out)
        if real in seen:
            raise UserError(f"{out} ({what}) would also be {seen[real]}: choose other output names")
        seen[real] = f"{out} ({what})"
        if os.path.isdir(out):
            raise UserError(f"{out} ({what}) is a folder, where an output file would go: choose another name")
    existing = [f"{out} ({what})" for out, what in targets if os.path.lexists(out)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]} already exists{more}: pass --overwrite to replace, or write elsewhere "
                        f"(nothing was done)")


def output_names(folder, inputs, suffix, numbered):
    """{input: <folder>/<stem><suffix>}, one per distinct input; a stem met again is numbered by
    ``numbered(stem, n)`` for n = 2, 3... (inputs of the same name in different folders)."""
    names, taken = {}, set()
    for path in inputs:
        if path in names:
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in taken:
            n += 1
            name = numbered(stem, n)
        taken.add(name)
        names[path] = os.path.join(folder, name + suffix)
    return names


def csv_text(header, rows):
    """CSV text, every field quoted where it needs it (a comma, a quote or a newline in a name)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path, header, rows):
    """``header`` and ``rows`` (each a sequence of fields) to ``path`` through the csv module, atomically."""
    write_text(path, csv_text(header, rows))


def write_text(path, text):
    def dump(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    atomic_write(path, dump)
