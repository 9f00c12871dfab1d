"""Throughput math: images / elapsed, warm-up excluded, no averaging of rates.

    >>> meter = StepMeter(warmup_steps=2)
    >>> meter.start(t=0.0)
    >>> for t in (1.0, 1.5, 2.0, 2.5):       # step end times (a host sync each)
    ...     meter.step(images=32, t=t)
    >>> meter.summary().images_per_s        # 2 timed steps, 64 images in 1.0 s
    64.0

One clock per rank: step *i* lasts from the end of step *i-1* to its own end, so
input-pipeline stalls between steps count, and the timed steps add up exactly
to the elapsed time. A trainer that syncs with the device only every few steps
records spans instead (``span``): each of a span's steps lasts its mean. Across ranks ``combine`` divides all images by the slowest
rank's elapsed time: the job is only as fast as its slowest rank.
"""
import dataclasses
import time

import numpy as np


@dataclasses.dataclass
class RankSummary:
    steps: int
    images: int
    elapsed_s: float

    @property
    def images_per_s(self):
        return self.images / self.elapsed_s if self.elapsed_s > 0 else float("nan")


class StepMeter:
    """Records step end times on one rank; the first ``warmup_steps`` are not timed."""

    def __init__(self, warmup_steps):
        self.warmup_steps = warmup_steps
        self.start()

    def start(self, t=None):
        self._last = time.perf_counter() if t is None else t
        self._seen = 0
        self.durations = []
        self.images = []

    def step(self, images, t=None):
        now = time.perf_counter() if t is None else t
        if self._seen >= self.warmup_steps:
            self.durations.append(now - self._last)
            self.images.append(images)
        self._seen += 1
        self._last = now

    def span(self, images, steps, t=None):
        """``steps`` steps of ``images`` each, ended at ``t`` after a host sync (a trainer's stop check, an
        epoch end): each lasts the span's mean. A span is timed only if it starts after the warm-up steps."""
        now = time.perf_counter() if t is None else t
        if steps and self._seen >= self.warmup_steps:
            self.durations.extend([(now - self._last) / steps] * steps)
            self.images.extend([images] * steps)
        self._seen += steps
        self._last = now

    def summary(self):
        return RankSummary(steps=len(self.durations), images=int(sum(self.images)),
                           elapsed_s=float(sum(self.durations)))


def percentiles(durations, qs=(50, 90, 99)):
    """Step-time percentiles in seconds, e.g. {"step_time_p50_s": 0.12, ...}."""
    if len(durations) == 0:
        return {f"step_time_p{q}_s": None for q in qs}
    values = np.percentile(np.asarray(durations, dtype=np.float64), qs)
    return {f"step_time_p{q}_s": float(v) for q, v in zip(qs, values)}


def combine(per_rank, durations):
    """One throughput record from every rank's summary and pooled step durations.

    ``per_rank``: list of RankSummary, index = rank. ``durations``: all ranks'
    timed step durations. Returns None when no step was timed (too few steps for
    the warm-up): a missing figure, never a made-up one.
    """
    if not per_rank or any(r.steps == 0 for r in per_rank):
        return None
    elapsed = max(r.elapsed_s for r in per_rank)
    images = sum(r.images for r in per_rank)
    record = {
        "images": images,
        "elapsed_s": elapsed,
        "images_per_s": images / elapsed,
        "images_per_s_per_rank": [r.images_per_s for r in per_rank],
        "timed_steps": per_rank[0].steps,
        "ranks": len(per_rank),
    }
    record.update(percentiles(durations))
    return record
