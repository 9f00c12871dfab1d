"""Where CheXNet's backbone weights come from: the ``--weights`` check, and one ImageNet download per node.

    check_weights_flag("runs/x/best.npz")   # UserError: a run checkpoint is not backbone weights
    path = imagenet_path()                  # ~/.keras/models/densenet121_..._notop.h5, fetched once

No TensorFlow here: the flag is checked before TensorFlow loads, and the
download needs only the standard library.

Why a download of our own instead of Keras's: Keras writes straight to the
cache file, so every rank of a job fetched it into the same file at once, and
a rank starting a second later truncated the file another was reading. Here
the ranks of a node take turns through a lock file beside it, the first one
fetches to a temporary name and renames it, and the others find it complete.
"""
import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request

from runtime import watchdog
from runtime.errors import UserError
from runtime.files import atomic_write

log = logging.getLogger(__name__)

# The file, origin and md5 that tf_keras.applications.DenseNet121(weights="imagenet", include_top=False) uses.
IMAGENET_NAME = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/" + IMAGENET_NAME
IMAGENET_MD5 = "30ee3e1110167f948a6b9946edeeb738"
LOCK_WAIT_S = 900  # longer than a slow link needs for the 29 MB file; the holder's reads time out sooner
READ_TIMEOUT_S = 60
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a .npz is a zip; the second: an empty one
USE = "use none, imagenet or a .h5 path"


def check_weights_flag(value):
    """Refuse a ``--weights`` value that cannot be backbone weights, from the file's first bytes only."""
    if value in ("none", "imagenet"):
        return
    if not os.path.exists(value):
        raise UserError(f"--weights {value!r}: no such file; {USE}")
    if os.path.isdir(value):
        raise UserError(f"--weights {value}: is a folder; pass the .h5 file of DenseNet121 no-top weights in it")
    try:
        with open(value, "rb") as fh:
            head = fh.read(8)
            hdf5 = _has_hdf5_signature(fh, os.fstat(fh.fileno()).st_size)
    except OSError as err:
        raise UserError(f"--weights {value}: cannot be read ({err.strerror}); {USE}") from None
    if not head:
        raise UserError(f"--weights {value}: the file is empty (0 bytes), an interrupted copy or download; "
                        f"copy it again, or {USE}")
    if head.startswith(ZIP_SIGNATURES):
        raise UserError(f"--weights {value}: a zip file such as a run's best.npz or last.npz (or a .keras model), "
                        f"not backbone weights: --weights does not fine-tune from a run checkpoint; continue a run "
                        f"with --resume --runs-dir DIR --run-name NAME, or start from imagenet, none or a "
                        f"DenseNet121 no-top .h5")
    if not hdf5:
        raise UserError(f"--weights {value}: not an HDF5 file (it starts with {head!r}): truncated or of another "
                        f"format; {USE} (DenseNet121 no-top weights, as Keras saves them)")
    if not value.endswith((".h5", ".hdf5")):
        raise UserError(f"--weights {value}: an HDF5 file whose name Keras would read as a TensorFlow "
                        f"checkpoint: name it *.h5")


def _has_hdf5_signature(fh, size):
    """HDF5 puts its signature at byte 0, or after a user block of 512, 1024, 2048... bytes."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
        fh.seek(offset)
        if fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            return True
        offset = max(512, offset * 2)
        if offset > (1 << 20):
            return False
    return False


def cache_folder(cache_dir=None):
    """Keras's folder for model files: ``<cache_dir or ~/.keras>/models``, or /tmp/.keras's where that is read-only."""
    bases = [cache_dir] if cache_dir else [os.path.expanduser("~/.keras"), "/tmp/.keras"]
    for base in bases:
        folder = os.path.join(base, "models")
        with contextlib.suppress(OSError):
            os.makedirs(folder, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    raise UserError(f"no writable folder for the ImageNet weights ({', '.join(bases)}): pass --weights none, "
                    f"or a local .h5 of DenseNet121 no-top weights")


def imagenet_path(cache_dir=None, origin=IMAGENET_ORIGIN, md5=IMAGENET_MD5, wait_s=LOCK_WAIT_S):
    """The local ImageNet no-top file, downloaded by the first process of this node that gets here."""
    path = os.path.join(cache_folder(cache_dir), IMAGENET_NAME)
    with _node_lock(path + ".lock", wait_s):
        if not os.path.exists(path):
            log.info("downloading the ImageNet weights of DenseNet121 from %s to %s", origin, path)
            atomic_write(path, lambda tmp: _download(origin, tmp, md5, path))
        elif (found := _md5(path)) != md5:
            raise UserError(f"{path} is not the complete ImageNet file (md5 {found}, expected {md5}), "
                            f"maybe left by an interrupted download: delete it to download it again, or pass "
                            f"--weights none")
    return path


@contextlib.contextmanager
def _node_lock(lock_path, wait_s):
    """Hold an exclusive lock on ``lock_path``, waiting at most ``wait_s``; the kernel drops it if we die."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"{lock_path}: cannot open the download lock ({err.strerror}); pass --weights none, or "
                        f"a local .h5 of DenseNet121 no-top weights") from None
    try:
        _acquire(fd, lock_path, wait_s)
        yield
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd, lock_path, wait_s):
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() > deadline:
            raise UserError(f"waited {wait_s:.0f} s for {lock_path}: another process of this node still downloads "
                            f"the ImageNet weights; let it finish and rerun, or pass --weights none or a local .h5")
        if not said:
            log.info("waiting for another process of this node to download the ImageNet weights (%s)", lock_path)
            said = True
        watchdog.beat()  # the lock's holder is alive (a dead one drops it) and downloading
        time.sleep(0.2)


def _download(origin, tmp, md5, path):
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(origin, timeout=READ_TIMEOUT_S) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                watchdog.beat()  # a long download is progress too
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        raise UserError(f"the ImageNet weights of DenseNet121 could not be downloaded from {origin} ({reason}): "
                        f"this machine may have no internet; pass --weights none, or fetch {IMAGENET_NAME} "
                        f"elsewhere and pass its path to --weights (or put it at {path})") from None
    if digest.hexdigest() != md5:
        raise UserError(f"the download of {origin} has md5 {digest.hexdigest()}, expected {md5}: cut short or "
                        f"another file; rerun, or pass --weights none or a local .h5")


def _md5(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
