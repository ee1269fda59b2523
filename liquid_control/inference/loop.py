"""The policy node's loop without ROS: timespans from stamps, watchdog, output checks.

The ROS policy node (nodes/policy_node.py) is a thin adapter around `PolicyLoop`:
it hands over every feature frame (`on_features`) and calls `tick` from its fixed-rate
timer. Everything here takes plain float seconds, so it is tested with an injected
clock and a fake model.

Choices (DESIGN.md "Timespans"):
- The CfC steps only when a new feature frame arrived since the last tick. Between
  frames the last command is held (zero-order hold), as a flight controller holds a
  setpoint: stepping again on the same features would feed the network an input it
  never saw in training (one step per camera frame) and count the same time twice.
- The timespan of a step is (stamp - previous stamp) / nominal frame period, clipped to
  [min_timespan, max_timespan]; the first step after a (re)start uses 1.0. A stamp that
  does not advance is a duplicate frame and is ignored; a stamp that goes backwards
  (sim reset, bag loop) restarts the hidden state.
- Watchdog: no new feature frame for `watchdog_timeout_s` (receive time on the caller's
  clock) -> zero-velocity (hover) commands and an ERROR state. When frames return the
  hidden state is reset, because the state integrated a past the drone has left.
- Outputs: non-finite -> hover (the runtime raises, state untouched); finite but beyond
  the limits -> clamped per axis ("clamp") or replaced by hover ("hover").
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

HOVER = np.zeros(4, dtype=np.float64)
OUT_OF_RANGE_ACTIONS = ("clamp", "hover")


@dataclass(frozen=True)
class PolicyLoopConfig:
    """Loop safety settings.

    frame_period_s: the model's nominal time between frames (s); timespans are in these units.
    min_timespan, max_timespan: clip range of the timespan (nominal periods); max bounds how far
        one step may integrate after a gap (a longer gap trips the watchdog anyway).
    watchdog_timeout_s: no new features for this long (s) -> hover + ERROR.
    max_speed_xy_mps, max_speed_z_mps, max_yaw_rate_radps: per-axis command limits (body FLU).
    out_of_range: "clamp" (clip each axis to its limit) or "hover" (replace the command by zeros).
    """

    frame_period_s: float
    min_timespan: float = 0.25
    max_timespan: float = 4.0
    watchdog_timeout_s: float = 0.5
    max_speed_xy_mps: float = 1.0
    max_speed_z_mps: float = 0.5
    max_yaw_rate_radps: float = 1.0
    out_of_range: str = "clamp"

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.frame_period_s) and self.frame_period_s > 0):
            problems.append(f"frame_period_s must be > 0, got {self.frame_period_s}")
        if not 0 <= self.min_timespan <= self.max_timespan:
            problems.append(f"need 0 <= min_timespan ({self.min_timespan}) <= max_timespan ({self.max_timespan})")
        if not self.watchdog_timeout_s > 0:
            problems.append(f"watchdog_timeout_s must be > 0, got {self.watchdog_timeout_s}")
        if min(self.max_speed_xy_mps, self.max_speed_z_mps, self.max_yaw_rate_radps) < 0:
            problems.append("command limits must be >= 0")
        if self.out_of_range not in OUT_OF_RANGE_ACTIONS:
            problems.append(f"out_of_range must be one of {OUT_OF_RANGE_ACTIONS}, got {self.out_of_range!r}")
        if problems:
            raise ValueError("PolicyLoopConfig: " + "; ".join(problems))

    @property
    def limits(self) -> np.ndarray:
        return np.array([self.max_speed_xy_mps, self.max_speed_xy_mps, self.max_speed_z_mps,
                         self.max_yaw_rate_radps])


@dataclass
class TickResult:
    """What one timer tick decided.

    command: [vx, vy, vz m/s, yaw rate rad/s] body FLU to publish.
    stepped: the model ran this tick. level: 0 OK, 1 WARN, 2 ERROR. feature_stamp_s: stamp of
    the features the command was computed from (None for hover without features).
    """

    command: np.ndarray
    stepped: bool
    level: int
    state: str  # "waiting", "running", "stale", "fault"
    message: str
    timespan: float = math.nan
    feature_stamp_s: Optional[float] = None
    inference_s: float = 0.0


class PolicyLoop:
    """Feeds the newest features into a stateful policy at the caller's rate.

    `step(features, timespan) -> command (4,)` and `reset()` come from the runtime
    (PolicyRuntime.step / .reset); `step` raises ValueError for bad inputs or non-finite
    results and then leaves its state unchanged.
    """

    def __init__(self, config: PolicyLoopConfig, step: Callable[[np.ndarray, float], np.ndarray],
                 reset: Callable[[], None], feature_size: int) -> None:
        self.config = config
        self._step = step
        self._reset = reset
        self.feature_size = int(feature_size)
        self.counters = {"steps": 0, "dropped_inputs": 0, "duplicate_inputs": 0, "stamp_went_back": 0,
                         "watchdog_trips": 0, "clamped_outputs": 0, "rejected_outputs": 0, "state_resets": 0}
        self._pending: Optional[tuple[float, np.ndarray, float]] = None  # (stamp, features, receive time)
        self._last_receive_s: Optional[float] = None
        self._last_stepped_stamp_s: Optional[float] = None
        self._newest_stamp_s: Optional[float] = None
        self._stale = False
        self._fresh_start = True  # next step uses timespan 1.0
        self._held = TickResult(HOVER.copy(), False, 1, "waiting", "waiting for the first features")

    def on_features(self, stamp_s: float, features: np.ndarray, receive_s: float) -> None:
        """A feature frame arrived (stamp = its image's capture time, receive_s = now on the loop clock)."""
        if self._newest_stamp_s is not None and stamp_s == self._newest_stamp_s:
            self.counters["duplicate_inputs"] += 1
            return
        if self._newest_stamp_s is not None and stamp_s < self._newest_stamp_s:
            # Time went backwards (sim reset, looping bag): a new sequence starts.
            self.counters["stamp_went_back"] += 1
            self._last_stepped_stamp_s = None
            self._fresh_start = True
            self.reset_state()
        if self._pending is not None:
            self.counters["dropped_inputs"] += 1  # overwritten before a tick consumed it
        self._pending = (float(stamp_s), features, float(receive_s))
        self._newest_stamp_s = float(stamp_s)
        self._last_receive_s = float(receive_s)

    def reset_state(self) -> None:
        """Hidden state back to its initial value (service call, recovery, time jump)."""
        self._reset()
        self.counters["state_resets"] += 1
        self._fresh_start = True

    def timespan_for(self, stamp_s: float) -> float:
        """Timespan (nominal periods) of a step on features stamped `stamp_s`."""
        if self._fresh_start or self._last_stepped_stamp_s is None:
            return 1.0
        raw = (stamp_s - self._last_stepped_stamp_s) / self.config.frame_period_s
        return float(min(max(raw, self.config.min_timespan), self.config.max_timespan))

    def tick(self, now_s: float) -> TickResult:
        """One timer tick at `now_s` (loop clock): step on new features, hold, or hover."""
        cfg = self.config
        if self._last_receive_s is None:
            self._held = TickResult(HOVER.copy(), False, 1, "waiting", "waiting for the first features")
            return self._held
        age = now_s - self._last_receive_s
        if age > cfg.watchdog_timeout_s:
            if not self._stale:
                self.counters["watchdog_trips"] += 1
                self._stale = True
            self._pending = None
            self._held = TickResult(HOVER.copy(), False, 2, "stale",
                                    f"no new features for {age:.2f} s (> {cfg.watchdog_timeout_s} s): hover")
            return self._held
        if self._stale:  # features are back: the old hidden state describes a past we left
            self._stale = False
            self.reset_state()
        if self._pending is None:
            return replace(self._held, stepped=False, inference_s=0.0)  # hold until the next frame
        stamp, features, _ = self._pending
        self._pending = None
        timespan = self.timespan_for(stamp)
        started = time.perf_counter()
        try:
            raw = np.asarray(self._step(features, timespan), dtype=np.float64)
        except ValueError as error:  # bad features or a non-finite result; the runtime kept its state
            self.counters["rejected_outputs"] += 1
            self._held = TickResult(HOVER.copy(), False, 2, "fault", f"policy step failed: {error}: hover",
                                    timespan, stamp, time.perf_counter() - started)
            return self._held
        inference = time.perf_counter() - started
        self._last_stepped_stamp_s = stamp
        self._fresh_start = False
        self.counters["steps"] += 1
        command, level, message = self.check_output(raw)
        self._held = TickResult(command, True, level, "running" if level < 2 else "fault", message, timespan,
                                stamp, inference)
        return self._held

    def check_output(self, raw: np.ndarray) -> tuple[np.ndarray, int, str]:
        """(command to fly, level, message) for a model output: finite and within limits, or made so."""
        if raw.shape != (4,) or not np.isfinite(raw).all():
            self.counters["rejected_outputs"] += 1
            return HOVER.copy(), 2, f"policy output {raw.tolist()} is not 4 finite numbers: hover"
        limits = self.config.limits
        if np.any(np.abs(raw) > limits):
            if self.config.out_of_range == "hover":
                self.counters["rejected_outputs"] += 1
                return HOVER.copy(), 1, f"policy output {np.round(raw, 3).tolist()} beyond limits: hover"
            self.counters["clamped_outputs"] += 1
            return np.clip(raw, -limits, limits), 0, "running (last output clamped)"
        return raw, 0, "running"
