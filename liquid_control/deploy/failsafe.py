"""Failsafe state machine and command clamps for the flight-controller bridge (no ROS).

Every control cycle the bridge calls `Failsafe.step(now_s)` and does what the
returned `Decision` says. Safety semantics, in order of precedence:

1. No vehicle heartbeat yet, or none for `heartbeat_timeout_s`: stream NOTHING
   (level ERROR once the link was up). A silent link cannot take setpoints, and
   PX4/ArduPilot run their own offboard-loss failsafes (COM_OF_LOSS_T, GUID_TIMEOUT).
2. Hand-back: no LIVE policy output for `handback_timeout_s` (counted from the
   first vehicle heartbeat when there was none yet): stream NOTHING, so the flight
   controller's own offboard-loss failsafe fires (PX4 COM_OF_LOSS_T, default 1 s,
   then COM_OBL_RC_ACT; ArduPilot Guided stops after GUID_TIMEOUT, 3 s). Live
   output is a valid body command received while the policy says it is live
   (`on_liveness(True)`, the policy node's `policy/live` topic), i.e. computed by
   the model from fresh features; the policy watchdog's hover commands are not
   live. With `require_live` false (a cmd_vel source without that topic, e.g.
   teleop) every valid command is live. The hand-back latches: streaming resumes
   only when live output is back AND the vehicle is known to have left its
   offboard mode (PX4 OFFBOARD / ArduPilot GUIDED), so a vehicle still in
   GUIDED never starts moving again on its own.
3. No command yet: stream zero velocity (hover). PX4 needs a setpoint stream
   before it accepts offboard mode, so zeros are streamed from the start.
4. Last valid command older than `command_timeout_s`, the last command was
   non-finite (NaN/inf, rejected), or the policy says its output is not live:
   stream zero velocity (hover).
5. No live output for `action_timeout_s` (< `handback_timeout_s`): additionally
   request the configured action (hover / land / return) as a mode change, once
   per stale episode, before the hand-back — only if `allow_mode_change`;
   otherwise report that it was not sent.
6. Fresh commands are clamped: horizontal speed (norm of vx, vy), vertical speed
   and yaw rate.
7. Geofence (when `geofence_radius_m > 0` and odometry arrives): outside the
   radius around the first odometry position, the velocity component pointing
   further out is removed (moving back in stays possible). Odometry that went
   stale while the fence is on means hover.

Times are float seconds from the caller's clock; injecting it keeps tests fast.
Levels use diagnostic_msgs numbering: OK 0, WARN 1, ERROR 2.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from enum import Enum

from liquid_control.deploy.mavlink_link import HOVER, VelocityCommand

OK, WARN, ERROR = 0, 1, 2


class FailsafeAction(str, Enum):
    HOVER = "hover"
    LAND = "land"
    RETURN = "return"


class BridgeState(str, Enum):
    WAITING_FOR_VEHICLE = "waiting_for_vehicle"  # no heartbeat yet: nothing streamed
    VEHICLE_LOST = "vehicle_lost"  # heartbeat timed out: nothing streamed
    NO_COMMAND = "no_command"  # vehicle up, no command yet: hover
    ACTIVE = "active"  # streaming clamped commands
    COMMAND_REJECTED = "command_rejected"  # last command non-finite: hover
    COMMAND_STALE = "command_stale"  # hover
    NOT_LIVE = "not_live"  # commands arrive but the policy says they are not live: hover
    FAILSAFE_ACTION = "failsafe_action"  # hover, action requested (or refused by config)
    HANDED_BACK = "handed_back"  # no live output for handback_timeout_s: nothing streamed, the FC's failsafe rules


@dataclass
class FailsafeConfig:
    """Thresholds (seconds), limits (m/s, rad/s) and the stale-command action."""

    command_timeout_s: float = 0.5
    action_timeout_s: float = 1.5
    handback_timeout_s: float = 3.0
    require_live: bool = True
    action: FailsafeAction = FailsafeAction.HOVER
    allow_mode_change: bool = False
    heartbeat_timeout_s: float = 3.0
    max_horizontal_speed_mps: float = 1.0
    max_vertical_speed_mps: float = 0.5
    max_yaw_rate_radps: float = 1.0
    geofence_radius_m: float = 0.0  # 0 disables the fence
    odom_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        try:
            self.action = FailsafeAction(self.action)
        except ValueError:
            raise ValueError(f"failsafe action must be one of {[a.value for a in FailsafeAction]}, "
                             f"got {self.action!r}") from None
        positive = ("command_timeout_s", "action_timeout_s", "handback_timeout_s", "heartbeat_timeout_s",
                    "max_horizontal_speed_mps",
                    "max_vertical_speed_mps", "max_yaw_rate_radps", "odom_timeout_s")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not (math.isfinite(self.geofence_radius_m) and self.geofence_radius_m >= 0.0):
            raise ValueError(f"geofence_radius_m must be >= 0 (0 disables), got {self.geofence_radius_m!r}")
        if self.action_timeout_s <= self.command_timeout_s:
            raise ValueError(f"action_timeout_s ({self.action_timeout_s}) must exceed command_timeout_s "
                             f"({self.command_timeout_s})")
        if self.handback_timeout_s <= self.action_timeout_s:
            raise ValueError(f"handback_timeout_s ({self.handback_timeout_s}) must exceed action_timeout_s "
                             f"({self.action_timeout_s}): the mode change comes before the hand-back")


@dataclass(frozen=True)
class Decision:
    """What to do this cycle. `setpoint` is heading-frame FLU (yaw-only); it is HOVER whenever `stream` is False."""

    stream: bool
    setpoint: VelocityCommand
    state: BridgeState
    level: int
    message: str
    request_action: FailsafeAction | None = None  # send this mode change now (already gated by config)
    clamped: bool = False
    fenced: bool = False
    live_age_s: float = math.inf  # seconds since the last live output (since the first heartbeat if none yet)
    event: str = ""  # "handed_back" / "resumed" on the step where that happens (the bridge logs it once)


def clamp_command(cmd: VelocityCommand, config: FailsafeConfig) -> VelocityCommand:
    """Scale (vx, vy) to the horizontal limit (keeps direction), clip vz and yaw rate."""
    vx, vy = cmd.vx, cmd.vy
    horizontal = math.hypot(vx, vy)
    if horizontal > config.max_horizontal_speed_mps:
        scale = config.max_horizontal_speed_mps / horizontal
        vx, vy = vx * scale, vy * scale
    vz = min(max(cmd.vz, -config.max_vertical_speed_mps), config.max_vertical_speed_mps)
    yaw_rate = min(max(cmd.yaw_rate, -config.max_yaw_rate_radps), config.max_yaw_rate_radps)
    return VelocityCommand(vx, vy, vz, yaw_rate)


def rotate(q_xyzw: tuple[float, float, float, float], v: tuple[float, float, float],
           inverse: bool = False) -> tuple[float, float, float]:
    """Rotate v by unit quaternion q (x, y, z, w); inverse=True applies q's conjugate."""
    x, y, z, w = q_xyzw
    if inverse:
        x, y, z = -x, -y, -z
    # v' = v + 2w (q x v) + 2 q x (q x v)
    tx = 2.0 * (y * v[2] - z * v[1])
    ty = 2.0 * (z * v[0] - x * v[2])
    tz = 2.0 * (x * v[1] - y * v[0])
    return (v[0] + w * tx + (y * tz - z * ty),
            v[1] + w * ty + (z * tx - x * tz),
            v[2] + w * tz + (x * ty - y * tx))


class Failsafe:
    """Tracks heartbeats, liveness, commands and odometry; decides each cycle what the bridge streams."""

    def __init__(self, config: FailsafeConfig) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self._first_heartbeat_s: float | None = None
        self._last_heartbeat_s: float | None = None
        self._in_offboard: bool | None = None  # vehicle in PX4 OFFBOARD / ArduPilot GUIDED; None: unknown
        self._command: VelocityCommand | None = None
        self._command_s: float | None = None
        self._rejected_since_valid = False
        self._live_flag: bool | None = None  # the policy's newest liveness report
        self._live_flag_s: float | None = None
        self._last_live_s: float | None = None  # newest live output
        self._handed_back = False
        self._action_taken = False  # one action request per stale episode
        self._fence_center: tuple[float, float, float] | None = None
        self._position: tuple[float, float, float] | None = None
        self._orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
        self._odom_s: float | None = None

    # -- inputs -------------------------------------------------------------------------------
    def on_vehicle_heartbeat(self, now_s: float, in_offboard: bool | None = None) -> None:
        """A vehicle heartbeat; `in_offboard`: whether its mode is the one the bridge steers in (None: unknown)."""
        if self._first_heartbeat_s is None:
            self._first_heartbeat_s = now_s
        self._last_heartbeat_s = now_s
        self._in_offboard = in_offboard

    def on_liveness(self, live: bool, now_s: float) -> None:
        """The policy's report: its newest command came from the model on fresh features (True) or is
        its watchdog's / fault handler's hover (False)."""
        self._live_flag, self._live_flag_s = bool(live), now_s
        if live and self._command_fresh(now_s):
            self._mark_live(now_s)

    def on_command(self, cmd: VelocityCommand, now_s: float) -> bool:
        """Take a heading-frame FLU command; non-finite ones are rejected (hover until the next valid one)."""
        if not cmd.is_finite():
            self._rejected_since_valid = True
            self.counters["rejected_commands"] += 1
            return False
        self._command, self._command_s = cmd, now_s
        self._rejected_since_valid = False
        if self._flag_live(now_s):
            self._mark_live(now_s)
        return True

    def _command_fresh(self, now_s: float) -> bool:
        return (self._command_s is not None and not self._rejected_since_valid
                and now_s - self._command_s <= self.config.command_timeout_s)

    def _flag_live(self, now_s: float) -> bool:
        if not self.config.require_live:
            return True
        return bool(self._live_flag) and self._live_flag_s is not None and \
            now_s - self._live_flag_s <= self.config.command_timeout_s

    def _mark_live(self, now_s: float) -> None:
        self._last_live_s = now_s
        self._action_taken = False

    def on_odometry(self, position: tuple[float, float, float],
                    orientation_xyzw: tuple[float, float, float, float], now_s: float) -> bool:
        """Take a pose (odometry frame, base_link orientation); the first one fixes the fence centre."""
        values = (*position, *orientation_xyzw)
        norm = math.sqrt(sum(c * c for c in orientation_xyzw)) if all(map(math.isfinite, values)) else 0.0
        if norm < 1e-6:
            self.counters["rejected_odometry"] += 1
            return False
        self._position = tuple(float(p) for p in position)  # type: ignore[assignment]
        self._orientation = tuple(c / norm for c in orientation_xyzw)  # type: ignore[assignment]
        self._odom_s = now_s
        if self._fence_center is None:
            self._fence_center = self._position
        return True

    @property
    def fence_center(self) -> tuple[float, float, float] | None:
        return self._fence_center

    @property
    def handed_back(self) -> bool:
        return self._handed_back

    # -- decision -----------------------------------------------------------------------------
    def step(self, now_s: float) -> Decision:
        cfg = self.config
        if self._last_heartbeat_s is None or self._first_heartbeat_s is None:
            return Decision(False, HOVER, BridgeState.WAITING_FOR_VEHICLE, WARN, "waiting for vehicle heartbeat")
        heartbeat_age = now_s - self._last_heartbeat_s
        if heartbeat_age > cfg.heartbeat_timeout_s:
            return Decision(False, HOVER, BridgeState.VEHICLE_LOST, ERROR,
                            f"vehicle heartbeat lost ({heartbeat_age:.1f} s): setpoint stream stopped")

        live_age = now_s - (self._last_live_s if self._last_live_s is not None else self._first_heartbeat_s)
        event = ""
        if self._handed_back:
            live_now = self._last_live_s is not None and live_age <= cfg.command_timeout_s
            if not (live_now and self._in_offboard is False):
                why = ("waiting for live policy output" if not live_now else
                       "live output is back, but the vehicle is still in its offboard mode (or its mode is unknown): "
                       "switch it to another mode to resume")
                return Decision(False, HOVER, BridgeState.HANDED_BACK, ERROR,
                                f"control handed back to the flight controller, setpoint stream stopped; {why}",
                                live_age_s=live_age)
            self._handed_back, event = False, "resumed"
        elif live_age > cfg.handback_timeout_s:
            self._handed_back = True
            self.counters["handbacks"] += 1
            request, note = self._action_request()  # never skip the mode change, however late this step runs
            what = "live policy output" if self._last_live_s is not None else "live policy output yet"
            return Decision(False, HOVER, BridgeState.HANDED_BACK, ERROR,
                            f"no {what} for {live_age:.1f} s (> handback_timeout_s {cfg.handback_timeout_s} s): "
                            "setpoint stream stopped, control handed back to the flight controller (its offboard-loss "
                            f"failsafe: PX4 COM_OF_LOSS_T, ArduPilot GUID_TIMEOUT){note}",
                            request_action=request, live_age_s=live_age, event="handed_back")

        if self._last_live_s is not None and live_age > cfg.action_timeout_s:
            return self._action_decision(live_age)

        decision = self._command_decision(now_s)
        return replace(decision, live_age_s=live_age, event=event)

    def _command_decision(self, now_s: float) -> Decision:
        cfg = self.config
        if self._command_s is None:
            if self._rejected_since_valid:
                return Decision(True, HOVER, BridgeState.COMMAND_REJECTED, WARN, "non-finite command rejected: hover")
            return Decision(True, HOVER, BridgeState.NO_COMMAND, OK, "no command yet: hover")
        command_age = now_s - self._command_s
        if command_age > cfg.command_timeout_s:
            return Decision(True, HOVER, BridgeState.COMMAND_STALE, WARN,
                            f"command stale ({command_age:.2f} s): hover")
        if self._rejected_since_valid:
            return Decision(True, HOVER, BridgeState.COMMAND_REJECTED, WARN, "non-finite command rejected: hover")
        if not self._flag_live(now_s):
            why = "says its output is not live (watchdog or fault)" if self._live_flag is not None else \
                "has not reported liveness (policy/live; require_policy_live)"
            return Decision(True, HOVER, BridgeState.NOT_LIVE, WARN, f"the policy {why}: hover")

        assert self._command is not None
        setpoint = clamp_command(self._command, cfg)
        clamped = setpoint != self._command
        if clamped:
            self.counters["clamped_commands"] += 1
        setpoint, level, message, fenced = self._apply_geofence(setpoint, now_s)
        if clamped:  # expected in normal flight: stays OK, counted in diagnostics
            message = "command clamped" if message == "ok" else f"command clamped; {message}"
        return Decision(True, setpoint, BridgeState.ACTIVE, level, message, clamped=clamped, fenced=fenced)

    def _action_request(self) -> tuple[FailsafeAction | None, str]:
        """(action to request now or None, note for the message). Only after live output was lost (never at
        start-up), only while the vehicle is in its offboard mode (a pilot flying another mode keeps it), once
        per stale episode, and only with allow_mode_change."""
        action = self.config.action
        if self._last_live_s is None:
            return None, ""
        if not self.config.allow_mode_change:
            return None, f"; failsafe action '{action.value}' NOT sent because allow_mode_change is false"
        if self._action_taken:
            return None, f"; failsafe action '{action.value}' requested"
        if self._in_offboard is not True:
            return None, f"; failsafe action '{action.value}' NOT sent: the vehicle is not in its offboard mode"
        self._action_taken = True
        self.counters["failsafe_actions"] += 1
        return action, f"; requesting failsafe action '{action.value}'"

    def _action_decision(self, live_age: float) -> Decision:
        request, note = self._action_request()
        return Decision(True, HOVER, BridgeState.FAILSAFE_ACTION, ERROR,
                        f"no live policy output for {live_age:.1f} s: hover{note}", request_action=request,
                        live_age_s=live_age)

    def _apply_geofence(self, cmd: VelocityCommand, now_s: float) -> tuple[VelocityCommand, int, str, bool]:
        radius = self.config.geofence_radius_m
        if radius <= 0.0:
            return cmd, OK, "ok", False
        if self._odom_s is None or self._position is None or self._fence_center is None:
            return cmd, WARN, "geofence inactive: no odometry yet", False
        if now_s - self._odom_s > self.config.odom_timeout_s:
            self.counters["fence_interventions"] += 1
            return HOVER, WARN, f"odometry stale ({now_s - self._odom_s:.1f} s), geofence blind: hover", True
        offset = tuple(p - c for p, c in zip(self._position, self._fence_center))
        distance = math.sqrt(sum(o * o for o in offset))
        if distance <= radius:
            return cmd, OK, "ok", False
        outward = tuple(o / distance for o in offset)
        v_world = rotate(self._orientation, (cmd.vx, cmd.vy, cmd.vz))
        radial = sum(v * u for v, u in zip(v_world, outward))
        self.counters["fence_interventions"] += 1
        if radial > 0.0:
            v_world = tuple(v - radial * u for v, u in zip(v_world, outward))
        vx, vy, vz = rotate(self._orientation, v_world, inverse=True)  # type: ignore[arg-type]
        return (VelocityCommand(vx, vy, vz, cmd.yaw_rate), WARN,
                f"outside geofence ({distance:.1f} m > {radius:.1f} m): outward velocity removed", True)
