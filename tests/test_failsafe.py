"""Failsafe state machine (no ROS), driven by an injected clock: every path, with known answers."""
import math

import pytest

from liquid_control.deploy.failsafe import (ERROR, OK, WARN, BridgeState, Failsafe, FailsafeAction, FailsafeConfig,
                                            clamp_command, rotate)
from liquid_control.deploy.mavlink_link import HOVER, VelocityCommand

NAN, INF = float("nan"), float("inf")


def make(**overrides) -> Failsafe:
    config = dict(command_timeout_s=0.5, action_timeout_s=2.0, heartbeat_timeout_s=100.0,  # heartbeat at t=0 only
                  max_horizontal_speed_mps=2.0, max_vertical_speed_mps=1.0, max_yaw_rate_radps=1.0)
    config.update(overrides)
    failsafe = Failsafe(FailsafeConfig(**config))
    failsafe.on_vehicle_heartbeat(0.0)
    return failsafe


def test_streams_nothing_before_the_first_vehicle_heartbeat():
    failsafe = Failsafe(FailsafeConfig())
    failsafe.on_command(VelocityCommand(1.0), 0.0)
    decision = failsafe.step(0.1)
    assert not decision.stream and decision.state is BridgeState.WAITING_FOR_VEHICLE


def test_hover_before_any_command_then_passes_fresh_commands():
    failsafe = make()
    decision = failsafe.step(0.1)
    assert decision.stream and decision.setpoint == HOVER and decision.state is BridgeState.NO_COMMAND
    assert decision.level == OK
    failsafe.on_command(VelocityCommand(0.5, -0.2, 0.1, 0.3), 0.2)
    decision = failsafe.step(0.3)
    assert decision.state is BridgeState.ACTIVE and decision.level == OK
    assert decision.setpoint == VelocityCommand(0.5, -0.2, 0.1, 0.3) and not decision.clamped


def test_stale_command_streams_zero_then_recovers():
    failsafe = make()
    failsafe.on_command(VelocityCommand(1.0, 0.0, 0.0, 0.0), 0.0)
    assert failsafe.step(0.49).setpoint == VelocityCommand(1.0, 0.0, 0.0, 0.0)
    stale = failsafe.step(0.51)
    assert stale.stream and stale.setpoint == HOVER and stale.state is BridgeState.COMMAND_STALE
    assert stale.level == WARN and stale.request_action is None
    failsafe.on_command(VelocityCommand(0.2), 0.6)
    assert failsafe.step(0.7).setpoint == VelocityCommand(0.2)


@pytest.mark.parametrize("action", list(FailsafeAction))
def test_second_threshold_requests_the_configured_action_once_when_enabled(action):
    failsafe = make(action=action, allow_mode_change=True)
    failsafe.on_command(VelocityCommand(1.0), 0.0)
    assert failsafe.step(1.9).request_action is None  # stale but below the action threshold
    first = failsafe.step(2.01)
    assert first.state is BridgeState.FAILSAFE_ACTION and first.request_action is action
    assert first.setpoint == HOVER and first.stream and first.level == ERROR
    assert failsafe.step(2.5).request_action is None  # once per stale episode
    assert failsafe.counters["failsafe_actions"] == 1
    # commands resume, go stale again: a new episode requests again
    failsafe.on_command(VelocityCommand(1.0), 3.0)
    assert failsafe.step(3.1).state is BridgeState.ACTIVE
    assert failsafe.step(5.1).request_action is action
    assert failsafe.counters["failsafe_actions"] == 2


def test_second_threshold_never_requests_a_mode_change_when_disabled():
    failsafe = make(action="land", allow_mode_change=False)
    failsafe.on_command(VelocityCommand(1.0), 0.0)
    decisions = [failsafe.step(t / 10) for t in range(21, 100)]
    assert all(d.request_action is None for d in decisions)
    assert all(d.setpoint == HOVER and d.stream for d in decisions)
    assert "NOT sent" in decisions[-1].message and decisions[-1].level == ERROR
    assert failsafe.counters["failsafe_actions"] == 0


def test_vehicle_heartbeat_loss_stops_streaming_and_resumes():
    failsafe = make(heartbeat_timeout_s=1.0)
    failsafe.on_command(VelocityCommand(0.3), 0.0)
    failsafe.on_vehicle_heartbeat(0.9)
    failsafe.on_command(VelocityCommand(0.3), 1.8)
    assert failsafe.step(1.85).stream
    lost = failsafe.step(1.95)
    assert not lost.stream and lost.state is BridgeState.VEHICLE_LOST and lost.level == ERROR
    assert lost.setpoint == HOVER
    failsafe.on_vehicle_heartbeat(2.0)
    assert failsafe.step(2.05).stream


@pytest.mark.parametrize("bad", [
    VelocityCommand(NAN, 0.0, 0.0, 0.0), VelocityCommand(0.0, INF, 0.0, 0.0),
    VelocityCommand(0.0, 0.0, -INF, 0.0), VelocityCommand(0.0, 0.0, 0.0, NAN)])
def test_non_finite_commands_are_rejected_and_hover(bad):
    failsafe = make()
    failsafe.on_command(VelocityCommand(1.0), 0.0)
    assert failsafe.on_command(bad, 0.1) is False
    decision = failsafe.step(0.15)
    assert decision.setpoint == HOVER and decision.state is BridgeState.COMMAND_REJECTED and decision.level == WARN
    assert failsafe.counters["rejected_commands"] == 1
    # the stale timer still counts from the last VALID command
    assert failsafe.step(0.6).state is BridgeState.COMMAND_STALE
    assert failsafe.on_command(VelocityCommand(0.4), 0.7) is True
    assert failsafe.step(0.75).setpoint == VelocityCommand(0.4)


def test_rejected_first_command_still_hovers():
    failsafe = make()
    failsafe.on_command(VelocityCommand(NAN), 0.0)
    decision = failsafe.step(0.1)
    assert decision.setpoint == HOVER and decision.state is BridgeState.COMMAND_REJECTED


def test_clamps_keep_horizontal_direction_and_clip_vertical_and_yaw():
    config = FailsafeConfig(max_horizontal_speed_mps=2.0, max_vertical_speed_mps=1.0, max_yaw_rate_radps=0.5)
    clamped = clamp_command(VelocityCommand(3.0, 4.0, -3.0, 2.0), config)
    assert clamped.vx == pytest.approx(1.2) and clamped.vy == pytest.approx(1.6)  # |(3,4)| = 5 -> 2
    assert clamped.vz == -1.0 and clamped.yaw_rate == 0.5
    inside = VelocityCommand(1.0, -1.0, 0.5, -0.4)
    assert clamp_command(inside, config) == inside
    failsafe = make(max_yaw_rate_radps=0.5)
    failsafe.on_command(VelocityCommand(0.0, 0.0, 0.0, -3.0), 0.0)
    decision = failsafe.step(0.1)
    assert decision.clamped and decision.setpoint.yaw_rate == -0.5
    assert failsafe.counters["clamped_commands"] == 1


def test_rotate_matches_a_known_yaw_rotation():
    yaw90 = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    assert rotate(yaw90, (1.0, 0.0, 0.0)) == pytest.approx((0.0, 1.0, 0.0))  # body forward = world +y
    assert rotate(yaw90, (0.0, 1.0, 0.0), inverse=True) == pytest.approx((1.0, 0.0, 0.0))


def test_geofence_removes_outward_velocity_only_outside():
    failsafe = make(geofence_radius_m=5.0, max_horizontal_speed_mps=10.0)
    identity = (0.0, 0.0, 0.0, 1.0)
    failsafe.on_odometry((10.0, 20.0, 1.0), identity, 0.0)  # start point = fence centre
    failsafe.on_command(VelocityCommand(2.0, 1.0, 0.0, 0.2), 0.0)
    inside = failsafe.step(0.05)
    assert inside.setpoint == VelocityCommand(2.0, 1.0, 0.0, 0.2) and not inside.fenced
    failsafe.on_odometry((16.0, 20.0, 1.0), identity, 0.1)  # 6 m along +x: outside
    outside = failsafe.step(0.15)
    assert outside.fenced and outside.level == WARN and "geofence" in outside.message
    assert outside.setpoint.vx == pytest.approx(0.0) and outside.setpoint.vy == pytest.approx(1.0)
    assert outside.setpoint.yaw_rate == 0.2
    failsafe.on_command(VelocityCommand(-2.0, 0.0, 0.0, 0.0), 0.2)  # flying back in is allowed
    assert failsafe.step(0.25).setpoint.vx == pytest.approx(-2.0)


def test_geofence_uses_body_orientation():
    failsafe = make(geofence_radius_m=5.0)
    yaw90 = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))  # body forward = world +y
    failsafe.on_odometry((0.0, 0.0, 0.0), yaw90, 0.0)
    failsafe.on_odometry((0.0, 6.0, 0.0), yaw90, 0.1)  # outside along world +y
    failsafe.on_command(VelocityCommand(1.0, 1.0, 0.0, 0.0), 0.1)  # forward (= outward) and left (= world -x)
    decision = failsafe.step(0.15)
    assert decision.setpoint.vx == pytest.approx(0.0, abs=1e-9) and decision.setpoint.vy == pytest.approx(1.0)


def test_geofence_hovers_when_odometry_goes_stale_and_warns_without_odometry():
    failsafe = make(geofence_radius_m=5.0, odom_timeout_s=0.3)
    failsafe.on_command(VelocityCommand(1.0), 0.0)
    blind = failsafe.step(0.05)
    assert blind.setpoint == VelocityCommand(1.0) and blind.level == WARN and "no odometry" in blind.message
    failsafe.on_odometry((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), 0.1)
    failsafe.on_command(VelocityCommand(1.0), 0.45)
    stale = failsafe.step(0.5)
    assert stale.setpoint == HOVER and stale.fenced and "odometry stale" in stale.message


def test_non_finite_odometry_is_rejected():
    failsafe = make(geofence_radius_m=5.0)
    assert not failsafe.on_odometry((NAN, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), 0.0)
    assert not failsafe.on_odometry((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), 0.0)
    assert failsafe.fence_center is None and failsafe.counters["rejected_odometry"] == 2


@pytest.mark.parametrize("overrides, problem", [
    (dict(command_timeout_s=0.0), "command_timeout_s"),
    (dict(max_yaw_rate_radps=NAN), "max_yaw_rate_radps"),
    (dict(command_timeout_s=2.0, action_timeout_s=1.0), "must exceed"),
    (dict(action="explode"), "failsafe action must be one of"),
    (dict(geofence_radius_m=-1.0), "geofence_radius_m"),
])
def test_config_errors_name_the_problem(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        FailsafeConfig(**overrides)
