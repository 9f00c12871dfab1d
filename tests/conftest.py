"""Loaded by pytest before any test module: select legacy Keras before TensorFlow
is imported, make sure no process a test started outlives the session, the
data sets and trained runs that tests of several modules share (each made once),
and which tests run together in one pytest-xdist worker.

pytest.ini runs the suite in 2 workers (``-n 0`` runs it in one process): a
module's tests stay in one worker, so its fixtures are built once, and so do
the modules that share a session fixture below. The longest groups start first.
"""
import contextlib
import ctypes
import json
import os
import sys

import runtime  # noqa: F401

import psutil
import pytest

from helpers import horovodrun, make_chestxray14, make_kvasir, run_ranks, stop_processes

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _become_child_subreaper():
    # An orphan (a rank whose mpirun was killed) is then re-parented to pytest,
    # not to init: it stays a descendant we can find, stop and reap.
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


_become_child_subreaper()

# The session fixtures below that tests of several modules use: those tests share a worker.
SHARED = ("resunetpp_run", "small_kvasir", "chexnet_run")
# Groups measured longest (docs/decisions.md has the seconds): started first, so that the two
# workers end close together. The rest follow in collection order.
LONGEST_FIRST = ("resunetpp_run", "small_kvasir", "chexnet_run", "test_benchmarks", "test_multinode",
                 "test_benchmarks_compute", "test_slurm_multinode", "test_job_submissions", "test_own_data_e2e")


def _group(item):
    """A test's worker group: the first shared fixture it uses, else its module (whose fixtures it may share)."""
    return next((f for f in SHARED if f in item.fixturenames), item.module.__name__)


# Modules whose tests start ranks, jobs or trainers: `slow`, with every test of a shared fixture above.
SLOW_MODULES = ("test_stopping", "test_elastic", "test_chexnet_train", "test_segmentation_train",
                "test_job_submissions", "test_benchmarks", "test_benchmarks_compute", "test_distributed",
                "test_smoke_train", "test_processes", "test_multinode", "test_own_data_e2e", "test_slurm_multinode")


def pytest_itemcollected(item):
    # Marked as each test is collected, before any pytest_collection_modifyitems (xdist's makes the groups).
    item.add_marker(pytest.mark.xdist_group(_group(item)))
    if item.module.__name__ in SLOW_MODULES or any(f in item.fixturenames for f in SHARED):
        item.add_marker(pytest.mark.slow)


def _pytests_own_helper(p):
    # multiprocessing's resource tracker or fork server, if a test used
    # multiprocessing in-process: it ends with pytest and is no leak.
    return any("multiprocessing.resource_tracker" in a or "multiprocessing.forkserver" in a
               for a in p.cmdline())


def pytest_collection_modifyitems(config, items):
    def rank(item):
        g = _group(item)
        return LONGEST_FIRST.index(g) if g in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session(request):
    """Belt and braces behind tests/helpers.py: stop and report any descendant still alive."""
    yield
    leftovers = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() == psutil.STATUS_ZOMBIE:
                p.wait(0)  # an exited orphan re-parented to us: reap it
            elif not _pytests_own_helper(p):
                leftovers[p] = f"  pid {p.pid}: {' '.join(p.cmdline())[:200]}"
    stopped = stop_processes(list(leftovers))
    if stopped:
        lines = [f"{len(stopped)} process(es) started by the tests were still running at the end; stopped:",
                 *(leftovers[p] for p in stopped)]
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        for line in lines:
            reporter.write_line(line, red=True)


@pytest.fixture(scope="session")
def small_kvasir(tmp_path_factory):
    """90 synthetic Kvasir-SEG pairs stored at 32x32 (72 train images), for the runs that stop and
    resume (test_stopping.py, test_elastic.py): read only."""
    return make_kvasir(tmp_path_factory.mktemp("kvasir-small"), pairs=90, largest=96, stored=32, seed=5)


@pytest.fixture(scope="session")
def resunetpp_run(tmp_path_factory):
    """ResUNet++ trained on 2 ranks over uneven shards (400 pairs at 48x48, 5 epochs, no warm-up, float32:
    no test may depend on the CPU's bfloat16 units), then train and val graded on last.npz in one job; read only
    (test_segmentation_train.py, and the model comparison in test_benchmarks.py copies it)."""
    root = tmp_path_factory.mktemp("resunetpp")
    data = make_kvasir(root, pairs=400, largest=96, stored=48)
    runs, epochs = root / "runs", 5
    horovodrun(2, ["-m", "segmentation.train", "--data-dir", str(data / "tfrecords"), "--runs-dir", str(runs),
                   "--run-name", "t", "--epochs", str(epochs), "--per-rank-batch", "8", "--bn-momentum", "0.9",
                   "--warmup-epochs", "0", "--precision", "float32"], timeout=1200)
    run = runs / "t"
    run_ranks(2, ["-m", "segmentation.evaluate", "--run", str(run), "--split", "train,val", "--checkpoint", "last.npz",
                  "--bootstrap", "200"], timeout=600)
    manifest = json.loads((data / "tfrecords" / "manifest.json").read_text())
    return {"data": data, "run": run, "manifest": manifest, "epochs": epochs}


# The CheXNet run's size: enough for DenseNet121 to learn the synthetic motifs, within the suite's time
# (docs/testing.md).
IMAGES, STORED, CROP, EPOCHS = int(os.environ.get("CHEXNET_TEST_IMAGES", 1600)), 64, 56, \
    int(os.environ.get("CHEXNET_TEST_EPOCHS", 2))
# Every test pins float32 and a random start: its duration must not depend on
# the CPU's bfloat16 units, and no test may reach for the network.
FAST = ["--precision", "float32", "--weights", "none"]


@pytest.fixture(scope="session")
def chexnet_run(tmp_path_factory):
    """CheXNet on 2 ranks over uneven shards (9 train files of 124-125 records: not a multiple of the ranks),
    no warm-up; then one job evaluates best.npz on test and val; read only (test_chexnet_train.py,
    test_export.py)."""
    root = tmp_path_factory.mktemp("cx")
    data = make_chestxray14(root, IMAGES, STORED, per_shard=130)
    runs = root / "runs"
    horovodrun(2, ["-m", "chexnet.train", "--data-dir", str(data / "tfrecords"), "--runs-dir", str(runs),
                   "--run-name", "t", "--epochs", str(EPOCHS), "--crop", str(CROP), "--per-rank-batch", "16",
                   "--bn-momentum", "0.9", "--warmup-epochs", "0", *FAST], timeout=1500)
    run = runs / "t"
    run_ranks(2, ["-m", "chexnet.evaluate", "--run", str(run), "--split", "test,val", "--checkpoint", "best.npz",
                  "--bootstrap", "200"], timeout=600)
    manifest = json.loads((data / "tfrecords" / "manifest.json").read_text())
    return {"data": data, "run": run, "manifest": manifest}
