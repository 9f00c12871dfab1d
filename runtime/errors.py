"""One-line errors for bad input, instead of tracebacks.

    from runtime.errors import UserError, main_guard

    @main_guard
    def main(argv=None):
        raise UserError("data/manifest.json not found: run write_tfrecords.sh first")

A ``UserError`` is printed as ``error: <message>`` on stderr and the process
exits with status 2. A ``runtime.stop.Stopped`` run (a stop signal, its
checkpoint written and logged) exits 75. Anything else is a bug and keeps its
traceback.
"""
import functools
import sys

from runtime.stop import STOPPED_EXIT, Stopped


class UserError(Exception):
    """Bad input or environment: the message names the file or value and what to do."""


def main_guard(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Stopped:
            sys.exit(STOPPED_EXIT)

    return wrapper
