"""Pre-flight checks of a deployment (`liquid-control doctor`), without ROS: each check turns measurements
or files into a row of a pass/fail table.

The ROS side (the distro and RMW in use, what the camera topics deliver) is measured by
liquid_control.nodes.camera_probe and handed in as plain values; the model and the flight-
controller link are measured here (onnxruntime / torch, pymavlink). A row is PASS, WARN (works,
but look at it before flying), FAIL (do not fly) or SKIP (not checked, and why).

Thresholds and where they come from:
- camera rate within 15 % of the model's nominal frame rate (1 / frame_period_s): the CfC integrates
  real time, so a different rate is handled, but the training data saw this one (WARN outside, FAIL
  below half: the policy watchdog and timespan clip assume roughly this rate);
- vertical field of view within 3 deg of the training camera (WARN up to 10 deg, FAIL beyond): the
  simulator's CameraConfig (simulation/camera.py) is the camera the shipped models were trained with;
- aspect ratio within 2 % of the network input (perception resizes, it does not crop);
- perception + policy inference p99 below one frame period (else the loop falls behind the camera);
- failsafe timeouts: FailsafeConfig's own rules, and handback_timeout_s above the policy watchdog
  (otherwise a short camera dropout already hands control back).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, WARN, FAIL or SKIP
    detail: str


def worst(checks: list[Check]) -> str:
    for status in (FAIL, WARN, PASS):
        if any(c.status == status for c in checks):
            return status
    return SKIP


def render_table(checks: list[Check]) -> str:
    """A fixed-width table: check | result | detail, and a last line with the overall verdict."""
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"{'check':{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{c.name:{width}}  {c.status:6}  {c.detail}" for c in checks]
    verdict = worst(checks)
    lines.append(f"overall: {verdict}" + (" -- do not fly" if verdict == FAIL else ""))
    return "\n".join(lines)


# -- ROS -----------------------------------------------------------------------------------------------------------
def check_ros(distro: Optional[str], rmw: Optional[str]) -> Check:
    if not rmw:
        return Check("ros", FAIL, "rclpy could not start (no RMW implementation)")
    where = f"ROS_DISTRO={distro}" if distro else "ROS_DISTRO unset (rclpy from pip wheels)"
    if not distro:
        return Check("ros", WARN, f"{where}, RMW {rmw}; source the ROS setup so tools and nodes agree")
    return Check("ros", PASS, f"{where}, RMW {rmw}")


# -- camera --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraSample:
    """What the camera topics delivered during a listening window (nodes.camera_probe measures it)."""

    topic: str
    frames: int
    duration_s: float
    receive_times_s: tuple[float, ...]
    encodings: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # (width, height) seen
    info_k: Optional[tuple[float, ...]] = None  # camera_info K (row-major 3x3), None when none arrived
    info_size: Optional[tuple[int, int]] = None

    @property
    def rate_hz(self) -> float:
        t = self.receive_times_s
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else 0.0


def vertical_fov_deg(k: tuple[float, ...], height: int) -> float:
    """Vertical field of view of a pinhole camera from K (fy = K[4])."""
    return math.degrees(2.0 * math.atan(height / (2.0 * k[4])))


def check_camera(sample: CameraSample, frame_period_s: Optional[float], net_size: Optional[tuple[int, int]],
                 training_fov_deg: float, encodings: tuple[str, ...]) -> list[Check]:
    """Rate, encoding, resolution and field of view of the camera against the model and the training camera."""
    if sample.frames == 0:
        return [Check("camera", FAIL, f"no image on {sample.topic} in {sample.duration_s:.1f} s")]
    checks = []
    rate = sample.rate_hz
    if frame_period_s:
        expected = 1.0 / frame_period_s
        ratio = rate / expected
        status = PASS if abs(ratio - 1.0) <= 0.15 else (FAIL if ratio < 0.5 else WARN)
        checks.append(Check("camera rate", status, f"{rate:.1f} Hz on {sample.topic}, model trained at "
                                                   f"{expected:.1f} Hz ({sample.frames} frames)"))
    else:
        checks.append(Check("camera rate", WARN, f"{rate:.1f} Hz; the model has no nominal frame period"))
    bad = sorted(set(sample.encodings) - set(encodings))
    checks.append(Check("camera encoding", FAIL if bad else PASS,
                        f"{', '.join(sorted(set(sample.encodings)))}" +
                        (f": not supported (use one of {', '.join(encodings)})" if bad else "")))
    sizes = sorted(set(sample.sizes))
    if len(sizes) > 1:
        checks.append(Check("camera resolution", WARN, f"the size changes: {sizes}"))
    elif net_size is not None:
        (w, h), (nw, nh) = sizes[0], net_size
        aspect_error = abs((w / h) / (nw / nh) - 1.0)
        status = WARN if aspect_error > 0.02 else (WARN if w < nw or h < nh else PASS)
        note = (f"aspect {w / h:.3f} differs from the network's {nw / nh:.3f} (resizing distorts)"
                if aspect_error > 0.02 else "smaller than the network input (upsampled)" if w < nw or h < nh
                else "resized to the network input")
        checks.append(Check("camera resolution", status, f"{w}x{h}, network {nw}x{nh}: {note}"))
    if sample.info_k is None:
        checks.append(Check("camera fov", WARN, "no camera_info: cannot compare the field of view with training"))
    else:
        height = (sample.info_size or sizes[0])[1]
        fov = vertical_fov_deg(sample.info_k, height)
        error = abs(fov - training_fov_deg)
        status = PASS if error <= 3.0 else (WARN if error <= 10.0 else FAIL)
        checks.append(Check("camera fov", status,
                            f"vertical {fov:.1f} deg, training camera {training_fov_deg:.1f} deg"))
    return checks


# -- model ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelTiming:
    load_s: float
    perception_p50_ms: float
    perception_p99_ms: float
    policy_p50_ms: float
    policy_p99_ms: float
    backend: str
    providers: tuple[str, ...]
    frame_period_s: Optional[float]
    net_size: tuple[int, int]  # (width, height) the perception network sees
    feature_size: int


def time_model(model_path: str, backend: str = "auto", providers: str = "", threads: int = 1,
               runs: int = 30) -> ModelTiming:
    """Load perception + policy like the nodes do and time `runs` inferences of each on a random image."""
    from liquid_control.inference.model_source import load_runtime, runtime_options
    from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime, check_pair

    options = runtime_options(backend, providers, threads)
    started = time.perf_counter()
    perception = load_runtime(PerceptionRuntime, model_path, options)
    policy = load_runtime(PolicyRuntime, model_path, options)
    load_s = time.perf_counter() - started
    check_pair(perception, policy)
    width, height = int(perception.config.width), int(perception.config.height)
    image = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
    perception_ms, policy_ms = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        features = perception.features(image, "rgb8")
        t1 = time.perf_counter()
        policy.step(features, 1.0)
        t2 = time.perf_counter()
        perception_ms.append((t1 - t0) * 1e3)
        policy_ms.append((t2 - t1) * 1e3)
    p = np.percentile
    return ModelTiming(load_s, float(p(perception_ms, 50)), float(p(perception_ms, 99)), float(p(policy_ms, 50)),
                       float(p(policy_ms, 99)), str(policy.backend), tuple(policy.providers or perception.providers),
                       policy.frame_period_s, (width, height), int(policy.feature_size))


def check_model(timing: ModelTiming) -> list[Check]:
    provider = f"{timing.backend}" + (f" ({timing.providers[0]})" if timing.providers else "")
    total_p99 = timing.perception_p99_ms + timing.policy_p99_ms
    slow = timing.load_s > 5.0  # a node restarted in flight (systemd Restart=) is blind this long
    rows = [Check("model load", WARN if slow else PASS, f"{timing.load_s:.2f} s on {provider}" +
                  ("; slow start: ship the exported .onnx next to the model" if slow else ""))]
    detail = (f"perception p50 {timing.perception_p50_ms:.2f} / p99 {timing.perception_p99_ms:.2f} ms, policy p50 "
              f"{timing.policy_p50_ms:.2f} / p99 {timing.policy_p99_ms:.2f} ms")
    if timing.frame_period_s:
        budget = timing.frame_period_s * 1e3
        status = PASS if total_p99 < budget else FAIL
        rows.append(Check("model inference", status, f"{detail}; frame period {budget:.1f} ms"))
    else:
        rows.append(Check("model inference", WARN, f"{detail}; no nominal frame period in the model"))
    return rows


# -- flight controller ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkReport:
    connection: str
    heartbeat: bool
    family: str = ""
    mode: str = ""
    armed: bool = False
    system_id: int = 0
    rtt_ms: Optional[float] = None
    offset_ms: Optional[float] = None
    error: str = ""


def probe_flight_controller(connection: str, timeout_s: float = 5.0, baud: int = 921600) -> LinkReport:
    """Open the link, announce ourselves, wait for a vehicle heartbeat, then one TIMESYNC round trip. Sends
    nothing but HEARTBEAT and TIMESYNC (never a command)."""
    from liquid_control.deploy.mavlink_link import MavlinkLink, MavlinkLinkConfig, MavlinkLinkError

    try:
        link = MavlinkLink(MavlinkLinkConfig(connection=connection, baud=baud))
        link.open()
    except (MavlinkLinkError, ValueError) as error:
        return LinkReport(connection, False, error=str(error))
    try:
        deadline = time.monotonic() + timeout_s
        next_beat = 0.0
        while time.monotonic() < deadline and link.vehicle.heartbeats == 0:
            if time.monotonic() >= next_beat:  # a udpin peer learns our address from it
                link.send_heartbeat()
                next_beat = time.monotonic() + 0.5
            link.poll(time.monotonic())
            time.sleep(0.01)
        v = link.vehicle
        if v.heartbeats == 0:
            return LinkReport(connection, False, error=f"no vehicle heartbeat in {timeout_s:.1f} s")
        sync_deadline = min(deadline + 2.0, time.monotonic() + 2.0)
        next_sync = 0.0
        while time.monotonic() < sync_deadline and link.timesync is None:
            if time.monotonic() >= next_sync:
                link.send_timesync()
                next_sync = time.monotonic() + 0.5
            link.poll(time.monotonic())
            time.sleep(0.01)
        sync = link.timesync
        return LinkReport(connection, True, v.family, v.mode, v.armed, v.system_id,
                          None if sync is None else sync.rtt_s * 1e3, None if sync is None else sync.offset_s * 1e3)
    except MavlinkLinkError as error:
        return LinkReport(connection, False, error=str(error))
    finally:
        link.close()


def check_flight_controller(report: LinkReport) -> list[Check]:
    if not report.heartbeat:
        return [Check("fc link", FAIL, f"{report.connection}: {report.error}")]
    rows = [Check("fc link", PASS if report.family in ("px4", "ardupilot") else WARN,
                  f"{report.connection}: heartbeat from system {report.system_id} ({report.family})"),
            Check("fc mode", PASS, report.mode),
            Check("fc armed", WARN if report.armed else PASS,
                  "ARMED before the pre-flight check" if report.armed else "disarmed")]
    if report.rtt_ms is None:
        rows.append(Check("fc time sync", WARN, "no TIMESYNC answer (PX4 and ArduPilot answer it; check the link)"))
    else:
        status = PASS if report.rtt_ms < 50.0 else WARN  # > 50 ms round trip: a slow or congested link
        rows.append(Check("fc time sync", status,
                          f"round trip {report.rtt_ms:.1f} ms, FC clock offset {report.offset_ms / 1e3:+.3f} s"))
    return rows


# -- failsafe settings ---------------------------------------------------------------------------------------------
def node_parameters(path: Path, node: str) -> dict[str, Any]:
    """The `ros__parameters` of `node` in a ROS 2 params file; ValueError naming the file otherwise."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read parameters file {path}: {error}") from None
    for key in (node, f"/{node}", "/**"):
        block = data.get(key) if isinstance(data, dict) else None
        if isinstance(block, dict) and isinstance(block.get("ros__parameters"), dict):
            return dict(block["ros__parameters"])
    raise ValueError(f"parameters file {path} has no '{node}: ros__parameters:' section")


def check_failsafe(bridge: dict[str, Any], policy_watchdog_s: Optional[float]) -> list[Check]:
    """The bridge's failsafe parameters (as in its params file) against FailsafeConfig's rules and the policy."""
    from liquid_control.deploy.failsafe import FailsafeConfig

    names = {"command_timeout_s": "command_timeout_s", "action_timeout_s": "action_timeout_s",
             "handback_timeout_s": "handback_timeout_s", "failsafe_action": "action",
             "heartbeat_timeout_s": "heartbeat_timeout_s", "allow_mode_change": "allow_mode_change",
             "require_policy_live": "require_live"}
    try:
        config = FailsafeConfig(**{field: bridge[name] for name, field in names.items() if name in bridge})
    except (ValueError, TypeError) as error:
        return [Check("failsafe", FAIL, f"bridge parameters rejected: {error}")]
    rows = [Check("failsafe hand-back", PASS,
                  f"no live output: hover after {config.command_timeout_s} s, stream stops after "
                  f"{config.handback_timeout_s} s -> the FC's COM_OF_LOSS_T / GUID_TIMEOUT failsafe")]
    if not config.require_live:
        rows[0] = Check("failsafe hand-back", WARN, rows[0].detail + "; require_policy_live is false: the "
                        "policy's watchdog hover counts as live and never hands back")
    if policy_watchdog_s is not None and config.handback_timeout_s <= policy_watchdog_s:
        rows.append(Check("failsafe timing", WARN, f"handback_timeout_s {config.handback_timeout_s} s <= the policy "
                          f"watchdog {policy_watchdog_s} s"))
    action = (f"'{config.action.value}' after {config.action_timeout_s} s (in offboard only)"
              if config.allow_mode_change else "none (allow_mode_change false: the FC's failsafe decides)")
    rows.append(Check("failsafe mode change", PASS, action))
    arming = bool(bridge.get("allow_arming", False))
    rows.append(Check("failsafe arming", WARN if arming else PASS,
                      "allow_arming TRUE: mavlink/arm can arm the vehicle" if arming else "the bridge never arms"))
    return rows


def ros_distro() -> Optional[str]:
    return os.environ.get("ROS_DISTRO") or None
