"""CheXNet's --weights: bad files refused in one line, and one ImageNet download per node.

The download tests serve a stand-in file from a server on 127.0.0.1 that this
module starts in a thread and shuts down; nothing else is reached.
"""
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from chexnet import weights
from helpers import ROOT, job_env
from runtime.errors import UserError

PAYLOAD = os.urandom(1 << 20)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def refused(value):
    with pytest.raises(UserError) as err:
        weights.check_weights_flag(str(value))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_bad_weights_file_is_refused_from_its_first_bytes(tmp_path):
    assert "no such file; use none, imagenet or a .h5 path" in refused(tmp_path / "absent.h5")
    assert "is a folder" in refused(tmp_path)
    (tmp_path / "empty.h5").write_bytes(b"")
    assert "empty (0 bytes)" in refused(tmp_path / "empty.h5")
    (tmp_path / "notes.h5").write_text("densenet weights\n")
    assert "not an HDF5 file" in refused(tmp_path / "notes.h5")
    (tmp_path / "cut.h5").write_bytes(weights.HDF5_SIGNATURE[:5])
    assert "not an HDF5 file" in refused(tmp_path / "cut.h5")
    np.savez(tmp_path / "best.npz", weight_0000=np.zeros(3))
    message = refused(tmp_path / "best.npz")
    assert "does not fine-tune from a run checkpoint" in message and "--resume" in message
    (tmp_path / "w.bin").write_bytes(weights.HDF5_SIGNATURE + bytes(100))
    assert "name it *.h5" in refused(tmp_path / "w.bin")


def test_hdf5_files_and_the_keywords_pass_the_check_without_tensorflow(tmp_path):
    (tmp_path / "a.h5").write_bytes(weights.HDF5_SIGNATURE + bytes(100))
    (tmp_path / "b.hdf5").write_bytes(bytes(512) + weights.HDF5_SIGNATURE + bytes(100))  # after a user block
    code = ("import sys; from chexnet.weights import check_weights_flag as check; "
            "[check(v) for v in sys.argv[1:]]; assert 'tensorflow' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code, "none", "imagenet", str(tmp_path / "a.h5"),
                           str(tmp_path / "b.hdf5")], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_another_networks_or_a_cut_h5_is_one_line_from_build_model(tmp_path):
    import tf_keras as keras

    from chexnet.model import build_model
    other = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    other.save_weights(str(tmp_path / "other.h5"))
    data = (tmp_path / "other.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:len(data) // 2])
    for name, reason in (("other.h5", "Layer count mismatch"), ("cut.h5", "truncated file")):
        with pytest.raises(UserError, match=f"cannot load it into DenseNet121 without its top .*{reason}") as err:
            build_model(32, 14, str(tmp_path / name))
        assert "\n" not in str(err.value)


class SlowFile(http.server.BaseHTTPRequestHandler):
    """Sends PAYLOAD in 32 pieces over about 2 s, counting the requests."""

    requests = []

    def do_GET(self):
        SlowFile.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        piece = len(PAYLOAD) // 32
        for start in range(0, len(PAYLOAD), piece):
            self.wfile.write(PAYLOAD[start:start + piece])
            self.wfile.flush()
            time.sleep(0.06)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFile)
    SlowFile.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{weights.IMAGENET_NAME}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


FETCH = ("import logging, sys; logging.basicConfig(level=logging.INFO); from chexnet.weights import imagenet_path; "
         "print(imagenet_path(cache_dir=sys.argv[1], origin=sys.argv[2], md5=sys.argv[3]))")


def test_two_processes_of_a_node_download_the_file_once_and_both_read_it_whole(tmp_path, server):
    env = job_env(no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")
    args = [sys.executable, "-c", FETCH, str(tmp_path), server, PAYLOAD_MD5]
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    try:
        deadline = time.monotonic() + 30
        while not SlowFile.requests and time.monotonic() < deadline:  # the first is downloading
            time.sleep(0.05)
        procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    path = tmp_path / "models" / weights.IMAGENET_NAME
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(path)] * 2
    assert path.read_bytes() == PAYLOAD and len(SlowFile.requests) == 1
    assert "waiting for another process of this node" in outputs[1][1]
    assert sorted(os.listdir(path.parent)) == [weights.IMAGENET_NAME, weights.IMAGENET_NAME + ".lock"]


def test_an_offline_download_is_one_line_naming_what_to_do(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on: the connection is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match="could not be downloaded .*pass --weights none, or fetch "
                                        f"{weights.IMAGENET_NAME} elsewhere and pass its path") as err:
        weights.imagenet_path(cache_dir=str(tmp_path), origin=f"http://127.0.0.1:{port}/x.h5")
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path / "models") == [weights.IMAGENET_NAME + ".lock"]  # no partial file left


def test_a_cut_download_or_cached_file_is_refused_and_the_cached_one_kept(tmp_path, server):
    with pytest.raises(UserError, match="has md5 .*, expected 0+: cut short or another file"):
        weights.imagenet_path(cache_dir=str(tmp_path), origin=server, md5="0" * 32)
    cached = tmp_path / "models" / weights.IMAGENET_NAME
    assert not cached.exists()
    cached.write_bytes(PAYLOAD[:1000])
    with pytest.raises(UserError, match="is not the complete ImageNet file .*delete it to download it again"):
        weights.imagenet_path(cache_dir=str(tmp_path), origin=server, md5=PAYLOAD_MD5)
    assert cached.read_bytes() == PAYLOAD[:1000] and len(SlowFile.requests) == 1


def test_a_lock_held_too_long_is_a_one_line_error(tmp_path):
    import fcntl
    folder = tmp_path / "models"
    folder.mkdir()
    with open(folder / (weights.IMAGENET_NAME + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="waited 1 s for .*another process of this node still downloads"):
            weights.imagenet_path(cache_dir=str(tmp_path), origin="http://127.0.0.1:9/x.h5", wait_s=1)
