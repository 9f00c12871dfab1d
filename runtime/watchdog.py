"""A rank that stops making progress ends itself, so that the launcher ends the job instead of it hanging.

    watchdog.start(600, "training", ranks=2)  # from here, 600 s without a beat ends this process (status 3)
    watchdog.beat()                           # after every step, validation batch, checkpoint
    watchdog.stop()                           # training over

Why: a rank frozen (SIGSTOP, a node that stops answering, a process stuck in
the kernel) is still alive, so mpirun sees nothing, and the other ranks wait
for it inside an allreduce. Horovod's stall inspector cannot help either: its
own negotiation waits for the frozen rank too. A thread of each waiting rank
sees that no step finished for ``timeout_s`` seconds, says so on stderr and
ends the process; mpirun then ends the job, the frozen rank included. A
single process has no peer to wait for: there the step itself or the input
pipeline is stuck, and its message says so.
"""
import os
import sys
import threading
import time

STALLED_EXIT = 3
_last = None  # monotonic time of the last beat; None: no watchdog running


def beat():
    """Progress was made (cheap; a no-op without a running watchdog)."""
    global _last
    if _last is not None:
        _last = time.monotonic()


def start(timeout_s, what, ranks=None):
    """Watch this process from now on; ``timeout_s`` <= 0 watches nothing.

    ``ranks``: the job's size, which decides whom the message blames (None: not known).
    """
    global _last
    if timeout_s <= 0 or _last is not None:
        return
    _last = time.monotonic()
    threading.Thread(target=_watch, args=(timeout_s, what, ranks), name="watchdog", daemon=True).start()


def stop():
    global _last
    _last = None


def stall_message(what, idle_s, ranks):
    """The one line a stalled process prints before it ends."""
    if ranks == 1:
        return (f"error: no {what} progress in this process (pid {os.getpid()}) for {idle_s:.0f} s: the step "
                f"itself or the input pipeline is stuck (a read that never returns, a hung data thread); ending "
                f"it rather than hang (resume with --resume; --stall-timeout-s sets this limit)")
    cause = "it waits for another rank that is frozen or unreachable"
    if ranks is None:
        cause += ", or its own step or input pipeline is stuck"
    return (f"error: no {what} progress on this rank (pid {os.getpid()}) for {idle_s:.0f} s: {cause}; ending it "
            f"so that the launcher ends the job (resume with --resume; --stall-timeout-s sets this limit)")


def _watch(timeout_s, what, ranks):
    while True:
        time.sleep(min(5.0, timeout_s / 4))
        last = _last
        if last is None:
            return
        idle = time.monotonic() - last
        if idle > timeout_s:
            print(stall_message(what, idle, ranks), file=sys.stderr, flush=True)
            os._exit(STALLED_EXIT)
