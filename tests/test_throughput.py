"""Throughput math on known timings (pure, one process)."""
import math

import pytest

from runtime.throughput import RankSummary, StepMeter, combine, percentiles


def test_warmup_steps_are_not_timed():
    meter = StepMeter(warmup_steps=2)
    meter.start(t=10.0)
    for t in (15.0, 16.0, 16.5, 17.0, 18.0):  # first two (compile) are slow
        meter.step(images=32, t=t)
    s = meter.summary()
    assert s.steps == 3
    assert s.images == 96
    assert s.elapsed_s == pytest.approx(2.0)      # 16.0 -> 18.0
    assert s.images_per_s == pytest.approx(48.0)
    assert meter.durations == pytest.approx([0.5, 0.5, 1.0])


def test_rate_is_images_over_elapsed_not_mean_of_step_rates():
    meter = StepMeter(warmup_steps=0)
    meter.start(t=0.0)
    meter.step(images=100, t=1.0)   # 100 img/s
    meter.step(images=100, t=11.0)  # 10 img/s
    # Mean of per-step rates would claim 55 img/s; the truth is 200 / 11.
    assert meter.summary().images_per_s == pytest.approx(200 / 11)


def test_stalls_between_steps_count():
    meter = StepMeter(warmup_steps=0)
    meter.start(t=0.0)
    meter.step(images=10, t=1.0)
    meter.step(images=10, t=5.0)    # 4 s waiting for input: part of the step
    assert sum(meter.durations) == pytest.approx(5.0)


def test_combine_divides_by_slowest_rank():
    fast = RankSummary(steps=4, images=400, elapsed_s=2.0)
    slow = RankSummary(steps=4, images=400, elapsed_s=4.0)
    rec = combine([fast, slow], durations=[0.5] * 4 + [1.0] * 4)
    assert rec["images_per_s"] == pytest.approx(800 / 4.0)
    assert rec["images_per_s_per_rank"] == pytest.approx([200.0, 100.0])
    assert rec["ranks"] == 2
    assert rec["step_time_p50_s"] == pytest.approx(0.75)


def test_combine_without_timed_steps_gives_no_figure():
    assert combine([RankSummary(0, 0, 0.0)], durations=[]) is None
    assert math.isnan(RankSummary(0, 0, 0.0).images_per_s)


def test_percentiles_of_known_durations():
    p = percentiles([0.1 * i for i in range(1, 101)])  # 0.1 .. 10.0
    assert p["step_time_p50_s"] == pytest.approx(5.05)
    assert p["step_time_p90_s"] == pytest.approx(9.01)
    assert p["step_time_p99_s"] == pytest.approx(9.901)
