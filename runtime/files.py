"""Atomic, durable file writes, free of heavy imports (the data stages use them too).

    write_json("out/manifest.json", {"images": 3})
    write_lines("data/kvasir-seg/val.txt", ["cju0qkwl35piu0993l0dewei2", ...])
    atomic_write("runs/x/best.npz", lambda tmp: save(tmp, model))
"""
import errno
import hashlib
import json
import os

from runtime.errors import UserError


def sha256_of(path):
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable_folder(path, flag):
    """Refuse, before any work, an output folder that cannot be made or written (read-only, a file, no rights)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder: pick another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(existing) else "is not writable by this user"
        raise UserError(f"{flag} {path}: {existing} {why}: pick a writable {flag}")


def _read_only(path):
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def fsync_path(path):
    """Flush ``path`` (a file or a folder) from the page cache to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write_fn):
    """``write_fn(tmp_path)``, fsync, rename, fsync the folder: the final name only ever
    holds a complete file, even after a crash or power loss.

    The temporary name keeps the extension (Keras picks the format from it) and
    lives in the same folder (a rename across file systems is not atomic).
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        write_fn(tmp)
        # Without this the rename can reach the disk before the data: a power loss
        # would leave an empty or partial file under the final name.
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(folder)  # the rename itself is an entry in the folder
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path}: no space left on the device of {folder} ({err.strerror}); the previous "
                            f"{name}, if any, is untouched: free space or write elsewhere, and rerun") from err
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    def dump(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
    atomic_write(path, dump)


def write_lines(path, lines):
    """One item a line, atomically."""
    def dump(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(f"{line}\n" for line in lines)
    atomic_write(path, dump)
