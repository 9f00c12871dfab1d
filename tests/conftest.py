"""Loaded by pytest before any test module: select legacy Keras before TensorFlow
is imported, and make sure no process a test started outlives the session."""
import contextlib
import ctypes
import sys

import runtime  # noqa: F401

import psutil
import pytest

from helpers import stop_processes

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


def _pytests_own_helper(p):
    # multiprocessing's resource tracker or fork server, if a test used
    # multiprocessing in-process: it ends with pytest and is no leak.
    return any("multiprocessing.resource_tracker" in a or "multiprocessing.forkserver" in a
               for a in p.cmdline())


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
