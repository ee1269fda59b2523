"""MAVLink NED/FRD -> ROS ENU/FLU (REP-103/105) on known values, and BATTERY_STATUS decoding (no ROS)."""
import math

import pytest

from liquid_control.deploy.vehicle_state import (Attitude, LocalPosition, battery_reading, euler_from_quaternion,
                                                 odometry, orientation_enu_flu, quaternion_from_euler,
                                                 rotate_vector)

NAN = float("nan")


@pytest.mark.parametrize("yaw_ned, yaw_enu", [
    (0.0, math.pi / 2),  # facing north: +90 deg in ENU
    (math.pi / 2, 0.0),  # facing east: ENU's x axis
    (math.pi, -math.pi / 2),  # south
    (-math.pi / 2, math.pi),  # west
])
def test_heading_maps_as_pi_over_2_minus_yaw(yaw_ned, yaw_enu):
    roll, pitch, yaw = euler_from_quaternion(orientation_enu_flu(0.0, 0.0, yaw_ned))
    assert roll == pytest.approx(0.0, abs=1e-9) and pitch == pytest.approx(0.0, abs=1e-9)
    assert math.remainder(yaw - yaw_enu, 2 * math.pi) == pytest.approx(0.0, abs=1e-9)


def test_roll_keeps_its_sign_and_pitch_flips():
    # right wing down (FRD roll +) is a positive rotation about FLU's forward axis too; nose up (FRD pitch +)
    # is a negative rotation about FLU's y, which points left
    roll, pitch, yaw = euler_from_quaternion(orientation_enu_flu(0.1, 0.2, math.pi / 2))
    assert (roll, pitch, yaw) == pytest.approx((0.1, -0.2, 0.0), abs=1e-9)


def test_orientation_maps_body_axes_to_the_right_world_directions():
    q = orientation_enu_flu(0.0, 0.0, 0.0)  # facing north
    assert rotate_vector(q, (1.0, 0.0, 0.0)) == pytest.approx((0.0, 1.0, 0.0))  # forward = north = ENU +y
    assert rotate_vector(q, (0.0, 1.0, 0.0)) == pytest.approx((-1.0, 0.0, 0.0))  # left = west
    assert rotate_vector(q, (0.0, 0.0, 1.0)) == pytest.approx((0.0, 0.0, 1.0))  # up = up
    pitched = orientation_enu_flu(0.0, 0.3, 0.0)  # nose up 0.3 rad, facing north: forward points up-north
    assert rotate_vector(pitched, (1.0, 0.0, 0.0)) == pytest.approx((0.0, math.cos(0.3), math.sin(0.3)))


def test_odometry_converts_position_velocity_and_rates():
    position = LocalPosition((2.0, -1.0, -3.0), (0.0, 1.0, -0.5), 0.0)  # 2 N, 1 W, 3 m up; moving east, climbing
    attitude = Attitude(0.0, 0.0, 0.0, (0.1, 0.2, 0.3), 0.0)  # facing north
    odom = odometry(position, attitude)
    assert odom.position == pytest.approx((-1.0, 2.0, 3.0))
    # east while facing north is to the right: body FLU y = -1; climbing is +z
    assert odom.linear_velocity == pytest.approx((0.0, -1.0, 0.5))
    assert odom.angular_velocity == pytest.approx((0.1, -0.2, -0.3))
    assert odom.orientation[3] >= 0.0


def test_euler_round_trip():
    for angles in ((0.1, -0.2, 2.5), (-0.4, 0.7, -1.0)):
        assert euler_from_quaternion(quaternion_from_euler(*angles)) == pytest.approx(angles)


def test_battery_status_decoding():
    reading = battery_reading([4100, 4000, 65535] + [65535] * 7, 1250, 73, 2515, 1.0, battery_id=2)
    assert reading.voltage_v == pytest.approx(8.1) and reading.cell_voltages_v == pytest.approx((4.1, 4.0))
    assert reading.current_a == pytest.approx(12.5) and reading.remaining == pytest.approx(0.73)
    assert reading.temperature_c == pytest.approx(25.15) and reading.battery_id == 2
    unknown = battery_reading([16800] + [65535] * 9, -1, -1, 32767, 1.0)  # total only, nothing else known
    assert unknown.voltage_v == pytest.approx(16.8) and unknown.cell_voltages_v == ()
    assert all(math.isnan(v) for v in (unknown.current_a, unknown.remaining, unknown.temperature_c))
    nothing = battery_reading([65535] * 10, 0, 50, 0, 1.0)
    assert math.isnan(nothing.voltage_v)
