"""The one deploy loop (no ROS): timespans from stamps, hold, watchdog, output checks, scheduling.

`PolicyLoop` is what flies. The policy node (nodes/policy_node.py), closed-loop evaluation in the
simulator (evaluation/closed_loop.py) and offline bag evaluation (evaluation/bag.py) all run it;
only the way frames and clocks reach it differs:

- node: `frame_arrived` from the features subscription (receive time on the node clock),
  `on_timer` from the `rate_hz` timer (rclpy's expected/actual call times);
- closed loop: `frame_arrived` when the simulator delivers a new camera frame, `on_timer` at each
  control step (sim time; the sim's control rate plays the timer);
- bag: `frame_arrived` at each image's stamp, `on_timer` on a `rate_hz` grid between images.

Everything takes plain float seconds, so it is tested with an injected clock and a fake model.

Choices (DESIGN.md "Timespans"):
- The CfC steps only when a new feature frame arrived since its last step. Between frames the
  last command is held (zero-order hold), as a flight controller holds a setpoint: stepping again
  on the same features would feed the network an input it never saw in training (one step per
  camera frame) and count the same time twice.
- The timespan of a step is `timespan(stamp - previous stamp, frame_period_s)` clipped to
  [min_timespan, max_timespan] nominal periods; the first step after a (re)start uses 1.0. A stamp
  that does not advance is a duplicate frame and is ignored; a stamp that goes backwards (sim
  reset, bag loop) restarts the hidden state.
- Watchdog: no new feature frame for `watchdog_timeout_s` (receive time on the caller's clock) ->
  zero-velocity (hover) commands and an ERROR state. When frames return the hidden state is reset,
  because the state integrated a past the drone has left.
- Outputs: a failed step (bad features, non-finite result: the runtime raises and keeps its state)
  -> hover; finite but beyond the limits -> clamped per axis ("clamp") or replaced by hover ("hover").
- Scheduling: with `step_on_arrival` a frame is stepped at once unless the next timer tick is due
  within ARRIVAL_GUARD_S (then that tick steps it, so inference never runs across a tick's due
  time); rcl skips whole periods when a tick runs late, and those are counted as `missed_ticks`;
  diagnostics are due every 1 / diagnostics_rate_hz seconds, right after a control tick.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional, Protocol

import numpy as np

from liquid_control.util.timing import LatenessWindow, LoopTiming

HOVER = np.zeros(4, dtype=np.float64)
OUT_OF_RANGE_ACTIONS = ("clamp", "hover")
# Timespan of the first step after a (re)start: no previous frame to measure from, so nominal.
FIRST_TIMESPAN = 1.0
# step_on_arrival: a frame arriving closer than this (s) to the next tick's due time is stepped by that
# tick instead (costs that frame < 2 ms of latency; spares the tick a late start by the step's ~0.3-2 ms).
ARRIVAL_GUARD_S = 0.002


def timespan(elapsed_s: Any, frame_period_s: float, min_timespan: float = 0.0,
             max_timespan: float = math.inf) -> Any:
    """Time between two frames (s) in nominal frame periods, clipped to [min_timespan, max_timespan].

    The one timespan rule of the package: the deploy loop clips to the node's [0.25, 4] range,
    training (learning/augment.py) uses it unclipped. Floats in, float out; arrays in, arrays out.
    """
    if not frame_period_s > 0:
        raise ValueError(f"frame_period_s must be > 0, got {frame_period_s}")
    spans = np.clip(np.asarray(elapsed_s, dtype=np.float64) / frame_period_s, min_timespan, max_timespan)
    return float(spans) if spans.ndim == 0 else spans


def checked_fixed_timespan(value: Optional[float]) -> Optional[float]:
    """The fixed-timespan ablation value: None (off) or a timespan >= 0 in nominal frame periods."""
    if value is not None and not value >= 0.0:  # (also refuses NaN)
        raise ValueError(f"fixed_timespan must be >= 0 (nominal frame periods), got {value}")
    return value


@dataclass(frozen=True)
class PolicyLoopConfig:
    """Loop safety and scheduling settings; the defaults are config/policy.yaml's (a test keeps them equal),
    so evaluation flies with exactly the deployed settings.

    rate_hz: control tick rate (Hz); commands are published at least this often.
    watchdog_timeout_s: no new features for this long (s) -> hover + ERROR, state reset on recovery.
    min_timespan, max_timespan: clip range of the timespan (nominal frame periods); max bounds how far
        one step may integrate after a gap (a longer gap trips the watchdog anyway).
    max_speed_xy_mps, max_speed_z_mps, max_yaw_rate_radps: per-axis command limits (heading frame FLU).
    out_of_range: "clamp" (clip each axis to its limit) or "hover" (replace the command by zeros).
    step_on_arrival: step as soon as a frame arrives (else only at ticks; see module docstring).
    diagnostics_rate_hz: how often diagnostics are due (Hz).
    """

    rate_hz: float = 30.0
    watchdog_timeout_s: float = 0.5
    min_timespan: float = 0.25
    max_timespan: float = 4.0
    max_speed_xy_mps: float = 2.0
    max_speed_z_mps: float = 1.0
    max_yaw_rate_radps: float = 1.5
    out_of_range: str = "clamp"
    step_on_arrival: bool = True
    diagnostics_rate_hz: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("rate_hz", "watchdog_timeout_s", "diagnostics_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be > 0, got {value}")
        if not 0 <= self.min_timespan <= self.max_timespan:
            problems.append(f"need 0 <= min_timespan ({self.min_timespan}) <= max_timespan ({self.max_timespan})")
        if min(self.max_speed_xy_mps, self.max_speed_z_mps, self.max_yaw_rate_radps) < 0:
            problems.append("command limits must be >= 0")
        if self.out_of_range not in OUT_OF_RANGE_ACTIONS:
            problems.append(f"out_of_range must be one of {OUT_OF_RANGE_ACTIONS}, got {self.out_of_range!r}")
        if problems:
            raise ValueError("PolicyLoopConfig: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "PolicyLoopConfig":
        """The config from a node's parameter values (other keys are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def limits(self) -> np.ndarray:
        return np.array([self.max_speed_xy_mps, self.max_speed_xy_mps, self.max_speed_z_mps,
                         self.max_yaw_rate_radps])


class SteppedPolicy(Protocol):
    """What the loop needs of a policy (PolicyRuntime): `step` raises ValueError for bad features or a
    non-finite result and then leaves its state unchanged."""

    feature_size: int
    frame_period_s: float

    def step(self, features: np.ndarray, timespan: float) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass
class TickResult:
    """What one tick decided.

    command: [vx, vy, vz m/s, yaw rate rad/s] heading frame FLU to publish.
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

    @property
    def is_live(self) -> bool:
        """The command came from the model on fresh features and passed the output checks (clamped counts):
        not the watchdog's or a fault's hover, not waiting. The node publishes it on policy/live."""
        return self.state == "running" and self.level == 0


class PolicyLoop:
    """Feeds the newest features into a stateful policy at the caller's rate (see module docstring).

    `fixed_timespan` (evaluation ablation only, not a deploy mode) replaces every timespan by a constant.
    """

    def __init__(self, config: PolicyLoopConfig, policy: SteppedPolicy,
                 fixed_timespan: Optional[float] = None) -> None:
        self.config = config
        self.policy = policy
        self.frame_period_s = float(policy.frame_period_s)
        self.fixed_timespan = checked_fixed_timespan(fixed_timespan)
        self.counters = {"steps": 0, "dropped_inputs": 0, "duplicate_inputs": 0, "stamp_went_back": 0,
                         "watchdog_trips": 0, "clamped_outputs": 0, "rejected_outputs": 0, "state_resets": 0}
        self.timing = LoopTiming(config.period_s)  # timer ticks: rate, lateness, missed_ticks
        self.inference = LatenessWindow()  # reused as a rolling p50/p99/max window (ms out)
        self.latency = LatenessWindow()  # feature (image) stamp -> command sent
        self.result: Optional[TickResult] = None  # the newest tick's decision
        self._pending: Optional[tuple[float, np.ndarray]] = None  # (stamp, features) not yet stepped
        self._last_receive_s: Optional[float] = None
        self._last_stepped_stamp_s: Optional[float] = None
        self._newest_stamp_s: Optional[float] = None
        self._stale = False
        self._fresh_start = True  # next step uses FIRST_TIMESPAN
        self._last_expected_s: Optional[float] = None  # due time of the newest timer tick
        self._next_diagnostics_s: Optional[float] = None
        self._held = TickResult(HOVER.copy(), False, 1, "waiting", "waiting for the first features")

    # ------------------------------------------------------------------ frames
    def on_features(self, stamp_s: float, features: np.ndarray, receive_s: float) -> None:
        """Queue a feature frame (stamp = its image's capture time, receive_s = now on the loop clock)."""
        if self._newest_stamp_s is not None and stamp_s == self._newest_stamp_s:
            self.counters["duplicate_inputs"] += 1
            return
        if self._newest_stamp_s is not None and stamp_s < self._newest_stamp_s:
            # Time went backwards (sim reset, looping bag): a new sequence starts.
            self.counters["stamp_went_back"] += 1
            self._last_stepped_stamp_s = None
            self.reset_state()
        if self._pending is not None:
            self.counters["dropped_inputs"] += 1  # overwritten before a tick consumed it
        self._pending = (float(stamp_s), features)
        self._newest_stamp_s = float(stamp_s)
        self._last_receive_s = float(receive_s)

    def frame_arrived(self, stamp_s: float, features: np.ndarray, receive_s: float) -> Optional[TickResult]:
        """Queue a frame and, with step_on_arrival, step it now unless a timer tick is imminent.
        Returns the tick's decision when it stepped now (the caller sends its command), else None."""
        self.on_features(stamp_s, features, receive_s)
        if self.config.step_on_arrival and not self.tick_is_imminent(receive_s):
            return self.tick(receive_s)
        return None

    def tick_is_imminent(self, now_s: float) -> bool:
        """The next timer tick is due within ARRIVAL_GUARD_S of `now_s` (or overdue): let it step.
        Unknown (False) until a tick has reported its due time."""
        if self._last_expected_s is None:
            return False
        return self._last_expected_s + self.config.period_s - now_s < ARRIVAL_GUARD_S

    def reset_state(self) -> None:
        """Hidden state back to its initial value (service call, recovery, time jump)."""
        self.policy.reset()
        self.counters["state_resets"] += 1
        self._fresh_start = True

    def timespan_for(self, stamp_s: float) -> float:
        """Timespan (nominal periods) of a step on features stamped `stamp_s`."""
        if self.fixed_timespan is not None:
            return float(self.fixed_timespan)
        if self._fresh_start or self._last_stepped_stamp_s is None:
            return FIRST_TIMESPAN
        return timespan(stamp_s - self._last_stepped_stamp_s, self.frame_period_s, self.config.min_timespan,
                        self.config.max_timespan)

    # ------------------------------------------------------------------ ticks
    def on_timer(self, now_s: float, expected_s: Optional[float] = None,
                 actual_s: Optional[float] = None) -> TickResult:
        """A timer tick: record its timing, then `tick(now_s)`.

        expected_s / actual_s: the tick's due and actual call times when the timer reports them
        (rclpy TimerInfo); with expected_s, periods skipped since the previous tick count as
        `missed_ticks` and arrivals are guarded. Without it, lateness is the jitter of the period.
        """
        actual = now_s if actual_s is None else actual_s
        if expected_s is not None:
            if self._last_expected_s is not None:  # rcl skips whole periods when a callback runs that late
                missed = round((expected_s - self._last_expected_s) / self.config.period_s) - 1
                if missed > 0:
                    self.timing.count("missed_ticks", missed)
            self._last_expected_s = expected_s
        self.timing.tick(actual, expected_s)
        return self.tick(now_s)

    def tick(self, now_s: float) -> TickResult:
        """Decide the command at `now_s` (loop clock): step on new features, hold, or hover."""
        self.result = self._decide(now_s)
        if self.result.stepped:
            self.inference.add(self.result.inference_s)
        return self.result

    def _decide(self, now_s: float) -> TickResult:
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
        stamp, features = self._pending
        self._pending = None
        span = self.timespan_for(stamp)
        started = time.perf_counter()
        try:
            raw = np.asarray(self.policy.step(features, span), dtype=np.float64)
        except ValueError as error:  # bad features or a non-finite result; the runtime kept its state
            self.counters["rejected_outputs"] += 1
            self._held = TickResult(HOVER.copy(), False, 2, "fault", f"policy step failed: {error}: hover",
                                    span, stamp, time.perf_counter() - started)
            return self._held
        inference = time.perf_counter() - started
        self._last_stepped_stamp_s = stamp
        self._fresh_start = False
        self.counters["steps"] += 1
        command, level, message = self.check_output(raw)
        self._held = TickResult(command, True, level, "running" if level < 2 else "fault", message, span,
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

    # ------------------------------------------------------------------ reporting
    def command_sent(self, result: TickResult, sent_s: float) -> None:
        """The caller sent `result`'s command at `sent_s` (clock of the feature stamps): records the
        capture -> command latency of a stepped result."""
        if result.stepped and result.feature_stamp_s is not None:
            self.latency.add(sent_s - result.feature_stamp_s)

    def diagnostics_due(self, now_s: float) -> bool:
        """Whether diagnostics are due at `now_s` (the first call says yes); a clock that jumped back
        by more than two diagnostics periods (sim reset) restarts the schedule."""
        period = 1.0 / self.config.diagnostics_rate_hz
        due = self._next_diagnostics_s
        if due is None or now_s >= due or now_s < due - 2 * period:
            self._next_diagnostics_s = now_s + period
            return True
        return False

    def status(self) -> tuple[int, str]:
        """(level 0 OK / 1 WARN / 2 ERROR, message) of the newest tick."""
        if self.result is None:
            return 1, "control loop not started yet"
        return self.result.level, self.result.message

    def diagnostic_values(self, now_s: float) -> dict[str, Any]:
        """Timer timing, inference and capture -> command times (ms), counters and the newest timespan."""
        inference, latency = self.inference.summary(), self.latency.summary()
        values: dict[str, Any] = {
            **self.timing.summary(now_s), "inference_p50_ms": inference.p50_ms,
            "inference_p99_ms": inference.p99_ms, "inference_max_ms": inference.max_ms,
            "capture_to_command_p50_ms": latency.p50_ms, "capture_to_command_p99_ms": latency.p99_ms,
            "capture_to_command_max_ms": latency.max_ms, **self.counters}
        if self.result is not None and not math.isnan(self.result.timespan):
            values["last_timespan"] = self.result.timespan
        return values
