"""A rank that stops making progress ends itself, so that the launcher ends the job instead of it hanging.

    watchdog.start(600, "training")   # from here, 600 s without a beat ends this process (status 3)
    watchdog.beat()                   # after every step, validation batch, checkpoint
    watchdog.stop()                   # training over

Why: a rank frozen (SIGSTOP, a node that stops answering, a process stuck in
the kernel) is still alive, so mpirun sees nothing, and the other ranks wait
for it inside an allreduce. Horovod's stall inspector cannot help either: its
own negotiation waits for the frozen rank too. A thread of each waiting rank
sees that no step finished for ``timeout_s`` seconds, says so on stderr and
ends the process; mpirun then ends the job, the frozen rank included.
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


def start(timeout_s, what):
    """Watch this process from now on; ``timeout_s`` <= 0 watches nothing."""
    global _last
    if timeout_s <= 0 or _last is not None:
        return
    _last = time.monotonic()
    threading.Thread(target=_watch, args=(timeout_s, what), name="watchdog", daemon=True).start()


def stop():
    global _last
    _last = None


def _watch(timeout_s, what):
    while True:
        time.sleep(min(5.0, timeout_s / 4))
        last = _last
        if last is None:
            return
        idle = time.monotonic() - last
        if idle > timeout_s:
            print(f"error: no {what} progress on this rank (pid {os.getpid()}) for {idle:.0f} s: it waits for "
                  f"another rank that is frozen or unreachable; ending it so that the launcher ends the job "
                  f"(resume with --resume; --stall-timeout-s sets this limit)", file=sys.stderr, flush=True)
            os._exit(STALLED_EXIT)
