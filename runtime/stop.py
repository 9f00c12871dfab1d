"""Stop requests from signals: a trainer asked to stop finishes its step, checkpoints and exits 75.

    requests = install()                # SIGTERM, SIGUSR1, SIGINT set a flag instead of killing
    ...
    if requests.pending:                # checked between steps ("SIGUSR1", or None)
        raise Stopped("stopped at epoch 3 step 12 on SIGUSR1")   # main_guard: exit status 75

Which signal does what (every rank installs the same handlers):
- SIGUSR1: Slurm's ``--signal=B:USR1@<s>`` before the time limit, forwarded by
  the job script; mpirun forwards it to every rank.
- SIGTERM: ``scancel``, preemption, mpirun passing on its own SIGTERM or
  Ctrl-C. It may arrive twice (slurmd signals the ranks and mpirun forwards
  the same request), so a repeat is still only a request.
- SIGINT: Ctrl-C of a single process; a second Ctrl-C stops at once.

A rank that is blocked (a peer died or froze inside an allreduce) never
reaches the check: that case belongs to the launcher and runtime.watchdog.
"""
import signal

STOPPED_EXIT = 75  # EX_TEMPFAIL: "try again later"; the run continues with --resume


class Stopped(Exception):
    """Every rank stopped at an agreed step after writing the checkpoint; main_guard exits 75."""


class StopRequests:
    """The first stop signal received, if any (``pending``); handlers restored by ``uninstall``."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self):
        self.pending = None
        self._previous = {}

    @classmethod
    def install(cls):
        requests = cls()
        for sig in cls.SIGNALS:
            requests._previous[sig] = signal.signal(sig, requests._handle)
        return requests

    def uninstall(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.pending == name:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.pending = self.pending or name


_installed = None


def install():
    """The process's StopRequests, installing the handlers on the first call (signal handlers are
    per process: a trainer installs them at start-up and its training loop reads the same flag)."""
    global _installed
    if _installed is None:
        _installed = StopRequests.install()
    return _installed
