"""Command-line parsing of the data stages: every number within bounds, every refusal one line.

    p = Parser(description="...")
    p.add_argument("--shard-mb", type=bounded(float, above=0, most=10_000), default=150.0)
    p.add_argument("--processes", type=bounded(int, least=0, most=1024), default=0)
    p.parse_args(["--shard-mb", "0"])
    # stderr: "error: argument --shard-mb: must be a number > 0 and <= 10000, got 0 (see --help)"; exit 2

A numeric flag takes its type from ``bounded`` (tests/test_data_safety.py checks
that every numeric flag of a stage does, and that each bound is enforced).
"""
import argparse
import math
import sys


class Bounded:
    """An argparse type: ``kind`` (int or float) >= least (or > above) and <= most (or < below)."""

    def __init__(self, kind, least=None, most=None, above=None, below=None):
        self.kind, self.least, self.most, self.above, self.below = kind, least, most, above, below
        self.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages

    def __call__(self, text):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if not self.holds(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    def holds(self, value):
        return ((self.least is None or value >= self.least) and (self.above is None or value > self.above)
                and (self.most is None or value <= self.most) and (self.below is None or value < self.below))

    def describe(self):
        what = "an integer" if self.kind is int else "a number"
        low = f">= {self.least}" if self.least is not None else f"> {self.above}"
        high = f"<= {self.most}" if self.most is not None else f"< {self.below}"
        return f"{what} {low} and {high}"


def bounded(kind, least=None, most=None, above=None, below=None):
    """Both ends are required: every number a stage takes has a lower and an upper bound."""
    if (least is None) == (above is None) or (most is None) == (below is None):
        raise ValueError("give one lower bound (least or above) and one upper bound (most or below)")
    return Bounded(kind, least, most, above, below)


SEED = bounded(int, least=0, most=2**31 - 1)  # numpy takes any non-negative int; stages add small offsets
PROCESSES = bounded(int, least=0, most=1024)  # 0: one per core


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose refusal is one line, as runtime.errors.main_guard prints (no usage block)."""

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr, flush=True)
        sys.exit(2)
