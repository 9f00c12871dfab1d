"""download_dataset.sh real mode against a local HTTP server that honours Range requests."""
import hashlib
import http.server
import os
import re
import threading
import time

import pytest

from dataprep.chestxray14 import facts
from helpers import run_job


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = os.path.basename(self.path)
        path = os.path.join(self.server.root, name)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        header = self.headers.get("Range")
        start = int(re.match(r"bytes=(\d+)-", header).group(1)) if header else 0
        self.server.requests.append((name, start))
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    src = tmp_path_factory.mktemp("mirror")
    run_job(["bash", "download_dataset.sh", "--out", str(src), "--synthetic", "36", "--image-size", "32"])
    return src / "chestxray14"


@pytest.fixture
def server(archives):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.root, httpd.requests = str(archives), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def download(out, server, *extra, expect_rc=0):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    return run_job(["bash", "download_dataset.sh", "--out", str(out), "--mirror", url, *extra],
                   expect_rc=expect_rc, timeout=300)


def checksum_file(archives, tmp_path):
    path = tmp_path / "SHA256SUMS"
    path.write_text("".join(f"{hashlib.sha256((archives / a.name).read_bytes()).hexdigest()}  {a.name}\n"
                            for a in facts.ARCHIVES))
    return str(path)


def test_interrupted_download_resumes_where_it_stopped(archives, server, tmp_path):
    out = tmp_path / "data"
    (out / "chestxray14").mkdir(parents=True)
    whole = (archives / "images_03.tar.gz").read_bytes()
    (out / "chestxray14" / "images_03.tar.gz.part").write_bytes(whole[: len(whole) // 2])
    proc = download(out, server, "--checksums", checksum_file(archives, tmp_path))
    assert ("images_03.tar.gz", len(whole) // 2) in server.requests  # continued, not restarted
    for a in facts.ARCHIVES:
        assert (out / "chestxray14" / a.name).read_bytes() == (archives / a.name).read_bytes()
    assert not list((out / "chestxray14").glob("*.part"))
    assert "Data_Entry_2017.csv" in proc.stderr and "place them in" in proc.stderr


def test_rerun_after_success_downloads_nothing(archives, server, tmp_path):
    out = tmp_path / "data"
    sums = checksum_file(archives, tmp_path)
    download(out, server, "--checksums", sums)
    server.requests.clear()
    proc = download(out, server, "--checksums", sums)
    assert server.requests == []
    assert proc.stdout.count("already complete") == 12


def test_corrupt_partial_file_is_never_taken_as_complete(archives, server, tmp_path):
    out = tmp_path / "data"
    (out / "chestxray14").mkdir(parents=True)
    size = (archives / "images_07.tar.gz").stat().st_size
    (out / "chestxray14" / "images_07.tar.gz.part").write_bytes(b"\0" * (size // 2))
    proc = download(out, server, "--checksums", checksum_file(archives, tmp_path), expect_rc=2)
    assert "images_07.tar.gz: the downloaded file is not a valid tar.gz archive" in proc.stderr
    assert not (out / "chestxray14" / "images_07.tar.gz").exists()
    assert (out / "chestxray14" / "images_08.tar.gz").exists()  # the others carried on


def test_checksum_mismatch_corroborated_fails_uncorroborated_needs_consent(archives, server, tmp_path):
    # The synthetic archives match none of the built-in (real) checksums.
    out = tmp_path / "data"
    proc = download(out, server, expect_rc=2)
    assert "images_01.tar.gz: SHA-256" in proc.stderr and "differs from the confirmed" in proc.stderr
    assert "WARNING: images_05.tar.gz" in proc.stderr and "--allow-checksum-mismatch" in proc.stderr
    assert not list((out / "chestxray14").glob("*.tar.gz"))  # nothing accepted silently

    proc = download(out, server, "--allow-checksum-mismatch", expect_rc=2)
    kept = sorted(p.name for p in (out / "chestxray14").glob("*.tar.gz"))
    assert kept == [a.name for a in facts.ARCHIVES if not a.corroborated]
    assert "kept because --allow-checksum-mismatch" in proc.stderr


@pytest.fixture(scope="module")
def kvasir_mirror(tmp_path_factory):
    src = tmp_path_factory.mktemp("kvmirror")
    run_job(["bash", "download_dataset.sh", "--dataset", "kvasir-seg", "--out", str(src), "--synthetic", "12",
             "--image-size", "64"])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.root, httpd.requests = str(src / "kvasir-seg"), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, src / "kvasir-seg" / "kvasir-seg.zip"
    httpd.shutdown()


def test_kvasir_download_resumes_and_brings_the_official_lists(kvasir_mirror, tmp_path):
    from dataprep.kvasir_seg import facts as kv
    server, zip_path = kvasir_mirror
    out = tmp_path / "data"
    (out / "kvasir-seg").mkdir(parents=True)
    whole = zip_path.read_bytes()
    (out / "kvasir-seg" / "kvasir-seg.zip.part").write_bytes(whole[: len(whole) // 2])
    download(out, server, "--dataset", "kvasir-seg")
    assert ("kvasir-seg.zip", len(whole) // 2) in server.requests  # continued, not restarted
    assert (out / "kvasir-seg" / "kvasir-seg.zip").read_bytes() == whole
    assert (out / "kvasir-seg" / "val.txt").read_text().split() == kv.official_split("val")


def test_kvasir_corrupt_zip_is_never_taken_as_complete_and_a_synthetic_folder_is_refused(kvasir_mirror, tmp_path):
    server, zip_path = kvasir_mirror
    out = tmp_path / "data"
    (out / "kvasir-seg").mkdir(parents=True)
    (out / "kvasir-seg" / "kvasir-seg.zip.part").write_bytes(b"PK" + b"\0" * (zip_path.stat().st_size // 2))
    proc = download(out, server, "--dataset", "kvasir-seg", expect_rc=2)
    assert "kvasir-seg.zip: the downloaded file is not a valid zip archive" in proc.stderr
    assert not (out / "kvasir-seg" / "kvasir-seg.zip").exists()
    synthetic = zip_path.parent.parent  # the mirror's own folder holds SYNTHETIC.json
    proc = download(synthetic, server, "--dataset", "kvasir-seg", expect_rc=2)
    assert "holds a synthetic set (SYNTHETIC.json)" in proc.stderr


def test_an_unreachable_host_is_one_line_at_once(tmp_path):
    """Port 1 refuses connections: the stage stops before trying the twelve archives with their retries."""
    started = time.monotonic()
    proc = run_job(["bash", "download_dataset.sh", "--out", str(tmp_path), "--mirror", "http://127.0.0.1:1/"],
                   expect_rc=2, timeout=120)
    assert time.monotonic() - started < 30
    assert "error: cannot reach 127.0.0.1:1: the connection is refused or there is no route (curl exit 7)" in \
        proc.stderr
    assert proc.stderr.count("error:") == 1
