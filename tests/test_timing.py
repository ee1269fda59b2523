"""Rolling loop statistics (util/timing.py): percentiles, rate, lateness, counters (no ROS)."""
import math

import numpy as np
import pytest

from liquid_control.util.timing import LatenessWindow, LoopTiming, RateMeter, percentile

def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(3)
    values = sorted(rng.exponential(size=101).tolist())
    for q in (0.0, 12.5, 50.0, 99.0, 100.0):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50.0)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101.0)


def test_rate_meter_is_exact_for_a_periodic_stream_and_decays_to_zero():
    meter = RateMeter(window_s=2.0)
    for i in range(41):
        meter.tick(i * 0.05)  # 20 Hz for 2 s
    assert meter.rate_hz(2.0) == pytest.approx(20.0)
    assert meter.age_s(2.3) == pytest.approx(0.3)
    assert meter.rate_hz(4.1) == 0.0  # nothing within the window any more
    assert meter.total == 41
    assert RateMeter().age_s(1.0) == math.inf
    with pytest.raises(ValueError, match="window_s"):
        RateMeter(window_s=0.0)


def test_rate_meter_restarts_when_time_goes_backwards():
    meter = RateMeter(window_s=10.0)
    for t in (100.0, 100.1, 100.2):
        meter.tick(t)
    meter.tick(0.0)  # sim clock reset
    meter.tick(0.5)
    assert meter.rate_hz(0.5) == pytest.approx(2.0)


def test_loop_timing_lateness_percentiles_and_counters():
    timing = LoopTiming(nominal_period_s=0.01)
    lateness_ms = list(range(100))  # 0..99 ms
    for i, late in enumerate(lateness_ms):
        expected = i * 1.0
        timing.tick(expected + late / 1000.0, expected_s=expected)
    timing.count("dropped_frames", 3)
    timing.count("dropped_frames")
    summary = timing.summary(now_s=99.1)
    assert summary["lateness_p50_ms"] == pytest.approx(49.5)
    assert summary["lateness_p99_ms"] == pytest.approx(np.percentile(lateness_ms, 99))
    assert summary["lateness_max_ms"] == pytest.approx(99.0)
    assert summary["dropped_frames"] == 4.0 and summary["iterations"] == 100.0


def test_loop_timing_infers_schedule_from_nominal_period():
    timing = LoopTiming(nominal_period_s=0.1)
    for t in (0.0, 0.1, 0.25, 0.35):  # the third tick is 50 ms late against previous + period
        timing.tick(t)
    late = timing.lateness.summary()
    assert late.samples == 3 and late.max_ms == pytest.approx(50.0)
    with pytest.raises(ValueError, match="nominal_period_s"):
        LoopTiming(nominal_period_s=-1.0)


def test_lateness_window_ignores_non_finite_and_keeps_last_samples():
    window = LatenessWindow(max_samples=3)
    for value in (1.0, float("nan"), 0.001, 0.002, 0.003):
        window.add(value)
    summary = window.summary()
    assert summary.samples == 3 and summary.max_ms == pytest.approx(3.0)
