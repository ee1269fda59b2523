"""Failsafe state machine (no ROS), driven by an injected clock: every path, with known answers."""
import math

import pytest

from liquid_control.deploy.failsafe import (ERROR, OK, WARN, BridgeState, Failsafe, FailsafeAction, FailsafeConfig,
                                            clamp_command, rotate)
from liquid_control.deploy.mavlink_link import HOVER, VelocityCommand

NAN, INF = float("nan"), float("inf")


def make(in_offboard=True, **overrides) -> Failsafe:
    """A failsafe whose vehicle beat once at t=0 (in its offboard mode unless told). require_live off and the
    hand-back far away by default: these tests are about command freshness; the liveness tests set both."""
    config = dict(command_timeout_s=0.5, action_timeout_s=2.0, handback_timeout_s=50.0, require_live=False,
                  heartbeat_timeout_s=100.0, max_horizontal_speed_mps=2.0, max_vertical_speed_mps=1.0,
                  max_yaw_rate_radps=1.0)
    config.update(overrides)
    failsafe = Failsafe(FailsafeConfig(**config))
    failsafe.on_vehicle_heartbeat(0.0, in_offboard)
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
    (dict(action_timeout_s=3.0, handback_timeout_s=3.0), "handback_timeout_s .* must exceed action_timeout_s"),
    (dict(handback_timeout_s=INF), "handback_timeout_s"),
    (dict(action="explode"), "failsafe action must be one of"),
    (dict(geofence_radius_m=-1.0), "geofence_radius_m"),
])
def test_config_errors_name_the_problem(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        FailsafeConfig(**overrides)


# -- hand-back to the flight controller (issue 14, defect 1) ------------------------------------------------------
def live(**overrides) -> Failsafe:
    return make(require_live=True, action_timeout_s=1.0, handback_timeout_s=2.0, **overrides)


def feed(failsafe, t, live_flag=True, cmd=VelocityCommand(0.4)):
    """What the policy node sends each tick: its liveness, then its command."""
    failsafe.on_liveness(live_flag, t)
    failsafe.on_command(cmd, t)


def test_policy_watchdog_hover_is_not_live_and_ends_in_a_hand_back():
    failsafe = live(action="land", allow_mode_change=False)
    for i in range(10):
        feed(failsafe, i * 0.05)
    assert failsafe.step(0.46).state is BridgeState.ACTIVE and failsafe.step(0.46).setpoint == VelocityCommand(0.4)
    # perception dies: the policy keeps publishing its watchdog's zeros, flagged not live, forever
    t, decisions = 0.5, []
    while t < 3.0:
        feed(failsafe, t, live_flag=False, cmd=HOVER)
        decisions.append((t, failsafe.step(t)))
        t += 0.05
    streaming = [t for t, d in decisions if d.stream]
    stopped = [(t, d) for t, d in decisions if not d.stream]
    assert streaming and all(d.setpoint == HOVER for _, d in decisions)
    assert max(streaming) <= 0.45 + 2.0 + 1e-9  # hover only until handback_timeout_s after the last live output
    assert stopped and stopped[0][0] == pytest.approx(2.5, abs=0.06)
    first = stopped[0][1]
    assert first.state is BridgeState.HANDED_BACK and first.level == ERROR and first.event == "handed_back"
    assert "handed back to the flight controller" in first.message and "COM_OF_LOSS_T" in first.message
    assert "NOT sent because allow_mode_change is false" in first.message
    assert all(d.request_action is None for _, d in decisions)  # no mode change without allow_mode_change
    assert all(d.state is BridgeState.HANDED_BACK and not d.event for _, d in stopped[1:])  # the event once
    assert failsafe.counters["handbacks"] == 1 and failsafe.handed_back


def test_stale_policy_output_is_flown_as_hover_even_if_its_command_is_not_zero():
    failsafe = live()
    feed(failsafe, 0.0, live_flag=False, cmd=VelocityCommand(0.9))
    decision = failsafe.step(0.05)
    assert decision.stream and decision.setpoint == HOVER and decision.state is BridgeState.NOT_LIVE
    failsafe2 = live()
    failsafe2.on_command(VelocityCommand(0.9), 0.0)  # a cmd_vel source without policy/live
    assert failsafe2.step(0.05).setpoint == HOVER and "has not reported liveness" in failsafe2.step(0.05).message


def test_without_any_live_output_the_stream_stops_after_the_timeout_from_the_first_heartbeat():
    failsafe = live(allow_mode_change=True)
    assert failsafe.step(1.5).stream and failsafe.step(1.5).state is BridgeState.NO_COMMAND  # no action at start-up
    assert failsafe.step(1.5).request_action is None
    stopped = failsafe.step(2.1)
    assert not stopped.stream and stopped.state is BridgeState.HANDED_BACK
    assert "live policy output yet" in stopped.message
    assert stopped.request_action is None  # never a mode change before the policy ever flew


@pytest.mark.parametrize("in_offboard", [True, False])
def test_mode_change_before_the_hand_back_only_when_allowed_and_in_offboard(in_offboard):
    failsafe = live(action="return", allow_mode_change=True, in_offboard=in_offboard)
    feed(failsafe, 0.0)
    decisions = [failsafe.step(t / 100) for t in range(1, 300)]
    requests = [(i, d.request_action) for i, d in enumerate(decisions) if d.request_action is not None]
    if in_offboard:
        assert len(requests) == 1 and requests[0][1] is FailsafeAction.RETURN
        assert decisions[requests[0][0]].stream  # commanded while still streaming hover, before the hand-back
    else:
        assert requests == [] and "not in its offboard mode" in decisions[150].message
    assert not decisions[-1].stream and decisions[-1].state is BridgeState.HANDED_BACK


def test_a_late_step_still_requests_the_action_with_the_hand_back():
    failsafe = live(action="land", allow_mode_change=True)
    feed(failsafe, 0.0)
    decision = failsafe.step(5.0)  # the cycle between 1 s and 2 s never ran (a stalled executor)
    assert not decision.stream and decision.request_action is FailsafeAction.LAND


def test_hand_back_latches_until_live_output_returns_and_the_vehicle_left_offboard():
    failsafe = live()
    feed(failsafe, 0.0)
    assert not failsafe.step(2.1).stream
    failsafe.on_vehicle_heartbeat(2.2, in_offboard=True)
    feed(failsafe, 2.3)  # the policy is live again, but the vehicle is still in OFFBOARD/GUIDED
    held = failsafe.step(2.35)
    assert not held.stream and "still in its offboard mode" in held.message
    failsafe.on_vehicle_heartbeat(2.4, in_offboard=None)  # unknown mode: stay stopped
    feed(failsafe, 2.4)
    assert not failsafe.step(2.45).stream
    failsafe.on_vehicle_heartbeat(3.5, in_offboard=False)  # the FC's failsafe (or the pilot) left offboard
    assert not failsafe.step(3.5).stream  # ... but the newest live output (2.4) is older than command_timeout_s
    feed(failsafe, 3.6)
    resumed = failsafe.step(3.65)
    assert resumed.stream and resumed.event == "resumed" and resumed.state is BridgeState.ACTIVE
    assert resumed.setpoint == VelocityCommand(0.4)
    assert failsafe.step(3.7).event == ""


def test_require_live_off_counts_every_valid_command_as_live():
    failsafe = make(require_live=False, action_timeout_s=1.0, handback_timeout_s=2.0)
    failsafe.on_command(VelocityCommand(0.3), 0.0)
    assert failsafe.step(0.1).setpoint == VelocityCommand(0.3)
    assert failsafe.step(1.9).stream and not failsafe.step(2.1).stream
