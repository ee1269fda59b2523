"""Small statistics helpers for evaluation tables (no ROS, no torch).

The success rate of a suite is a binomial proportion; with 100 episodes a plain
``p ± 1.96·sqrt(p(1-p)/n)`` interval collapses to zero width at p = 1 and can leave
[0, 1], so reports use the Wilson score interval instead (Wilson 1927; see Brown,
Cai & DasGupta, "Interval Estimation for a Binomial Proportion", Stat. Sci. 2001,
eq. 4), which stays inside [0, 1] and keeps close to nominal coverage for small n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """A success rate with its Wilson interval; all three values in [0, 1]."""

    successes: int
    trials: int
    rate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{100 * self.rate:5.1f}% [{100 * self.low:5.1f}, {100 * self.high:5.1f}]"


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (low, high) for ``successes`` out of ``trials``.

    Raises ValueError for negative counts, more successes than trials, or z <= 0.
    With zero trials nothing is known, so the interval is the whole [0, 1].
    """
    if isinstance(successes, bool) or isinstance(trials, bool):
        raise ValueError("successes and trials must be integer counts, not booleans")
    if int(successes) != successes or int(trials) != trials:
        raise ValueError(f"successes and trials must be integers, got {successes!r}, {trials!r}")
    if trials < 0 or successes < 0:
        raise ValueError(f"counts must be >= 0, got successes={successes}, trials={trials}")
    if successes > trials:
        raise ValueError(f"successes ({successes}) cannot exceed trials ({trials})")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}")
    if trials == 0:
        return 0.0, 1.0
    n = float(trials)
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # Clamp only float round-off; the exact interval is inside [0, 1] and
    # contains p (equal to it at the ends when p is 0 or 1).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def proportion(outcomes: Iterable[bool], z: float = Z_95) -> Proportion:
    """Success rate of boolean outcomes with its Wilson interval."""
    values = [bool(o) for o in outcomes]
    k, n = sum(values), len(values)
    low, high = wilson_interval(k, n, z)
    return Proportion(successes=k, trials=n, rate=(k / n if n else float("nan")), low=low, high=high)


def finite_mean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN when there are none), e.g. time-to-goal over successes only."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else float("nan")
