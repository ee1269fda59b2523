"""Rolling loop statistics for node diagnostics (no ROS).

Every node reports the same figures on `/diagnostics`: the rate at which a loop
or a stream actually runs, how late each iteration was against its schedule
(p50 / p99 / max over a rolling window) and event counters (dropped frames,
rejected commands, ...). Times are plain float seconds from whatever clock the
caller uses (ROS time under `use_sim_time`, `time.monotonic()` in tests), so the
same code serves wall-clock and simulated-time nodes and is testable with an
injected clock.

Typical use in a node::

    self.loop = LoopTiming(nominal_period_s=0.01)
    ...
    def on_timer(self, info):                         # rclpy TimerInfo (Kilted)
        self.loop.tick(info.actual_call_time_s, expected_s=info.expected_call_time_s)
    ...
    values = self.loop.summary(now_s)                 # dict for diagnostic key/values
"""
from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass


def percentile(sorted_values: list[float], q: float) -> float:
    """q-th percentile (0..100) of already sorted values, linear interpolation between ranks.

    Matches numpy's default (`method='linear'`). Raises ValueError on an empty list.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


@dataclass(frozen=True)
class LatenessSummary:
    """Lateness of loop iterations against their schedule, in milliseconds (0 when no samples)."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int


class RateMeter:
    """Rate of events (Hz) over a sliding time window.

    The rate is (n - 1) / (last - first) over the events of the last `window_s`
    seconds, which is exact for a periodic stream; a stream that stopped reads
    0 once its last event is older than the window (use `age_s` to see it
    going stale sooner).
    """

    def __init__(self, window_s: float = 5.0) -> None:
        if not (window_s > 0.0 and math.isfinite(window_s)):
            raise ValueError(f"RateMeter window_s must be a positive number of seconds, got {window_s}")
        self.window_s = window_s
        self._stamps: deque[float] = deque()
        self.total = 0

    def tick(self, now_s: float) -> None:
        if self._stamps and now_s < self._stamps[-1]:
            # Time went backwards (sim time reset, bag loop): restart the window.
            self._stamps.clear()
        self._stamps.append(now_s)
        self.total += 1
        self._evict(now_s)

    def _evict(self, now_s: float) -> None:
        while self._stamps and self._stamps[0] < now_s - self.window_s:
            self._stamps.popleft()

    def rate_hz(self, now_s: float) -> float:
        self._evict(now_s)
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span if span > 0.0 else 0.0

    def age_s(self, now_s: float) -> float:
        """Seconds since the last event; infinity if there was none."""
        return now_s - self._stamps[-1] if self._stamps else math.inf


class LatenessWindow:
    """Rolling window of lateness samples (seconds in, milliseconds out)."""

    def __init__(self, max_samples: int = 1000) -> None:
        if max_samples < 1:
            raise ValueError(f"LatenessWindow max_samples must be >= 1, got {max_samples}")
        self._samples: deque[float] = deque(maxlen=max_samples)

    def add(self, lateness_s: float) -> None:
        if math.isfinite(lateness_s):
            self._samples.append(lateness_s)

    def summary(self) -> LatenessSummary:
        if not self._samples:
            return LatenessSummary(0.0, 0.0, 0.0, 0)
        ordered = sorted(self._samples)
        return LatenessSummary(
            p50_ms=percentile(ordered, 50.0) * 1e3,
            p99_ms=percentile(ordered, 99.0) * 1e3,
            max_ms=ordered[-1] * 1e3,
            samples=len(ordered),
        )


class LoopTiming:
    """Rate, lateness and named counters of one periodic loop.

    `tick(actual_s, expected_s)` records one iteration; without `expected_s`
    the schedule is inferred as previous tick + nominal period, so lateness is
    then the jitter of the period (a tick earlier than scheduled counts 0).
    """

    def __init__(self, nominal_period_s: float | None = None, rate_window_s: float = 5.0,
                 lateness_samples: int = 1000) -> None:
        if nominal_period_s is not None and not (nominal_period_s > 0.0 and math.isfinite(nominal_period_s)):
            raise ValueError(f"nominal_period_s must be a positive number of seconds, got {nominal_period_s}")
        self.nominal_period_s = nominal_period_s
        self.rate = RateMeter(rate_window_s)
        self.lateness = LatenessWindow(lateness_samples)
        self.counters: Counter[str] = Counter()
        self._last_actual_s: float | None = None

    def tick(self, actual_s: float, expected_s: float | None = None) -> None:
        if expected_s is None and self.nominal_period_s is not None and self._last_actual_s is not None:
            expected_s = self._last_actual_s + self.nominal_period_s
        if expected_s is not None:
            self.lateness.add(max(0.0, actual_s - expected_s))
        self._last_actual_s = actual_s
        self.rate.tick(actual_s)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def summary(self, now_s: float) -> dict[str, float]:
        """Flat name -> value dict, ready for diagnostic key/values."""
        late = self.lateness.summary()
        values: dict[str, float] = {
            "rate_hz": self.rate.rate_hz(now_s),
            "lateness_p50_ms": late.p50_ms,
            "lateness_p99_ms": late.p99_ms,
            "lateness_max_ms": late.max_ms,
            "iterations": float(self.rate.total),
        }
        for name, value in sorted(self.counters.items()):
            values[name] = float(value)
        return values
