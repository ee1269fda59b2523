"""Cascaded velocity controller: step responses, yaw rate, body frame, limits, fail-safe input handling.

Step criterion (stated in the issue): after a setpoint step the tracked velocity is within 10% of the
step size by 1.5 s and stays there until 3 s, with at most 20% overshoot.
"""
import math

import numpy as np
import pytest

from liquid_control.simulation import ControlLimits, DroneWorld, QuadrotorSim, VelocityController, load_airframe


def fly(airframe_name, command, seconds, yaw=0.0, limits=ControlLimits(), start_command=(0.0, 0.0, 0.0, 0.0),
        settle_s=0.5):
    """Hover for settle_s, then fly `command`; returns times (s since the step) and per-step logs."""
    airframe = load_airframe(airframe_name)
    sim = QuadrotorSim(airframe)
    controller = VelocityController(airframe, limits)
    sim.reset((0.0, 0.0, 10.0), yaw)
    controller.reset(yaw)
    log = []
    n_settle = int(settle_s * sim.physics_hz)
    for k in range(n_settle + int(seconds * sim.physics_hz)):
        cmd = start_command if k < n_settle else command
        sim.step(controller.compute_rpm(sim.velocity_world, sim.rotation, sim.angular_velocity_body, cmd, sim.dt))
        if k >= n_settle:
            state = sim.state()
            log.append(np.concatenate([state.velocity_world, state.velocity_body, state.rpy,
                                       state.angular_velocity_body]))
    sim.close()
    return np.arange(1, len(log) + 1) / sim.physics_hz, np.array(log)


def assert_step_response(t, values, target):
    error = np.abs(values - target)
    assert error[t >= 1.5].max() <= 0.1 * abs(target), f"not within 10% after 1.5 s: {values[t >= 1.5][:3]}"
    overshoot = (values.max() - target) / target if target > 0 else (values.min() - target) / target
    assert overshoot <= 0.2


@pytest.mark.parametrize("airframe", ["cf2x", "quad250"])
@pytest.mark.parametrize("axis, size", [(0, 1.0), (1, -1.0), (2, 0.5)])
def test_velocity_step_settles(airframe, axis, size):
    command = [0.0, 0.0, 0.0, 0.0]
    command[axis] = size
    t, log = fly(airframe, command, 3.0)
    assert_step_response(t, log[:, axis], size)
    others = [i for i in range(3) if i != axis]
    assert np.abs(log[t >= 1.5][:, others]).max() < 0.05  # no cross-coupling into the other axes


@pytest.mark.parametrize("airframe", ["cf2x", "quad250"])
def test_yaw_rate_tracking(airframe):
    t, log = fly(airframe, [0.0, 0.0, 0.0, 0.8], 3.0)
    yaw = np.unwrap(log[:, 8])
    late = t >= 1.0
    rate = np.polyfit(t[late], yaw[late], 1)[0]
    assert rate == pytest.approx(0.8, rel=0.03)
    assert np.abs(log[:, 0:3]).max() < 0.05  # turning on the spot


def test_command_is_in_the_heading_frame():
    # Facing +y (yaw 90 deg), "forward" must move the drone along world +y.
    t, log = fly("cf2x", [1.0, 0.0, 0.0, 0.0], 2.5, yaw=math.pi / 2)
    assert log[-1, 1] == pytest.approx(1.0, abs=0.1)
    assert abs(log[-1, 0]) < 0.05
    assert log[-1, 3] == pytest.approx(1.0, abs=0.1)  # and forward in the body frame


def test_speed_and_tilt_limits_hold():
    limits = ControlLimits(max_speed_xy_mps=2.0, max_speed_z_mps=1.0, max_tilt_deg=20.0, max_yaw_rate_radps=1.0)
    t, log = fly("cf2x", [10.0, 10.0, 5.0, 5.0], 3.0, limits=limits)
    horizontal = np.hypot(log[:, 0], log[:, 1])
    assert horizontal.max() <= 2.0 * 1.1 and horizontal[-1] == pytest.approx(2.0, rel=0.1)
    assert log[:, 2].max() <= 1.0 * 1.15
    tilt = np.degrees(np.arccos(np.cos(log[:, 6]) * np.cos(log[:, 7])))
    assert tilt.max() <= 20.0 + 3.0  # small overshoot of the attitude loop allowed
    yaw_rate = np.gradient(np.unwrap(log[:, 8]), t)
    assert yaw_rate[t > 1.0].max() <= 1.0 * 1.1


def test_non_finite_command_means_hover():
    airframe = load_airframe("cf2x")
    controller = VelocityController(airframe)
    level = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    rpm = controller.compute_rpm((0.0, 0.0, 0.0), level, (0.0, 0.0, 0.0), (math.nan, 1.0, math.inf, 0.0), 1 / 240)
    assert rpm == pytest.approx([airframe.hover_rpm] * 4, rel=1e-9)
    with pytest.raises(ValueError, match="dt must be positive"):
        controller.compute_rpm((0.0, 0.0, 0.0), level, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), 0.0)
    with pytest.raises(ValueError, match="max_tilt_deg"):
        ControlLimits(max_tilt_deg=95.0)


def test_mixer_gives_attitude_priority_when_saturated():
    airframe = load_airframe("cf2x")
    controller = VelocityController(airframe)
    f_max = airframe.max_thrust_per_rotor_n
    # Full collective and a large roll torque: the roll difference survives, the collective gives way.
    torque = 0.6 * f_max * 4 * airframe.rotor_offset_m / 2
    rpm = np.array(controller._mix(4 * f_max, torque, 0.0, 0.0))
    thrust = airframe.kf_n_per_rpm2 * rpm**2
    assert thrust.max() <= f_max * (1 + 1e-9)
    achieved = airframe.rotor_offset_m * (-thrust[0] - thrust[1] + thrust[2] + thrust[3])
    assert achieved == pytest.approx(torque, rel=1e-6)


def test_world_rejects_bad_commands():
    with DroneWorld("cf2x") as world:
        with pytest.raises(RuntimeError, match="reset"):
            world.step([0, 0, 0, 0])
        world.reset()
        with pytest.raises(ValueError, match="vx, vy, vz, yaw_rate"):
            world.step([0.0, 0.0, 0.0])
        with pytest.raises(ValueError, match="finite"):
            world.step([0.0, math.nan, 0.0, 0.0])


def test_state_api_matches_the_fast_path():
    airframe = load_airframe("cf2x")
    sim = QuadrotorSim(airframe)
    sim.reset((0.0, 0.0, 2.0), 0.4)
    for _ in range(30):  # get into a non-trivial attitude and velocity
        sim.step([airframe.hover_rpm * f for f in (1.05, 1.0, 0.97, 1.02)])
    command = (0.7, -0.2, 0.3, 0.5)
    a, b = VelocityController(airframe), VelocityController(airframe)
    a.reset(0.4)
    b.reset(0.4)
    fast = a.compute_rpm(sim.velocity_world, sim.rotation, sim.angular_velocity_body, command, sim.dt)
    np.testing.assert_allclose(b.compute(sim.state(), command, sim.dt), fast, rtol=1e-12)
    sim.close()
