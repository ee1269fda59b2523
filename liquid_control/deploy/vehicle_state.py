"""The flight controller's own state estimate in ROS frames (no ROS): MAVLink NED/FRD -> REP-103/105 ENU/FLU.

MAVLink reports LOCAL_POSITION_NED (position and velocity in the local North-East-Down
frame) and ATTITUDE (roll, pitch, yaw of the body Forward-Right-Down frame relative to
NED, ZYX Euler angles, and body rates in FRD). ROS wants the `odom` frame East-North-Up
(REP-105) and `base_link` Forward-Left-Up (REP-103):

- a world vector maps NED -> ENU as (x, y, z) -> (y, x, -z): a rotation of pi about the
  horizontal axis halfway between north and east;
- a body vector maps FRD -> FLU as (x, y, z) -> (x, -y, -z): a rotation of pi about x;
- so the orientation is q_enu_flu = Q_ENU_NED * q_ned_frd * Q_FRD_FLU; with level flight
  it gives yaw_enu = pi/2 - yaw_ned (north-facing is +90 deg in ENU), roll unchanged and
  pitch negated (nose up is a negative rotation about FLU's y, which points left).

nav_msgs/Odometry carries the pose in `odom` and the twist in `base_link` (child frame),
so the NED velocity is rotated into the body. BATTERY_STATUS -> voltage, current,
remaining fraction and cell voltages with MAVLink's "unknown" markers as NaN.
(Message definitions: mavlink.io/en/messages/common.html.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Quaternion = tuple[float, float, float, float]  # x, y, z, w (ROS order)
Vector = tuple[float, float, float]

_S = math.sqrt(0.5)
Q_ENU_NED: Quaternion = (_S, _S, 0.0, 0.0)  # pi about (1, 1, 0)/sqrt(2)
Q_FRD_FLU: Quaternion = (1.0, 0.0, 0.0, 0.0)  # pi about x

UINT16_UNKNOWN = 65535  # BATTERY_STATUS voltages: cell not present
INT16_UNKNOWN = 32767  # BATTERY_STATUS temperature: unknown


def quaternion_multiply(a: Quaternion, b: Quaternion) -> Quaternion:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def quaternion_from_euler(roll: float, pitch: float, yaw: float) -> Quaternion:
    """ZYX (yaw, then pitch, then roll about the moved axes), the convention of MAVLink ATTITUDE and tf2."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy)


def euler_from_quaternion(q: Quaternion) -> tuple[float, float, float]:
    """(roll, pitch, yaw), ZYX; the inverse of quaternion_from_euler away from pitch = +-pi/2."""
    x, y, z, w = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def rotate_vector(q: Quaternion, v: Vector, inverse: bool = False) -> Vector:
    """v rotated by the unit quaternion q (its conjugate with inverse=True)."""
    x, y, z, w = q
    if inverse:
        x, y, z = -x, -y, -z
    tx, ty, tz = 2 * (y * v[2] - z * v[1]), 2 * (z * v[0] - x * v[2]), 2 * (x * v[1] - y * v[0])
    return (v[0] + w * tx + (y * tz - z * ty), v[1] + w * ty + (z * tx - x * tz), v[2] + w * tz + (x * ty - y * tx))


def ned_to_enu(v: Vector) -> Vector:
    return (v[1], v[0], -v[2])


def frd_to_flu(v: Vector) -> Vector:
    return (v[0], -v[1], -v[2])


def orientation_enu_flu(roll: float, pitch: float, yaw: float) -> Quaternion:
    """base_link (FLU) orientation in odom (ENU) from MAVLink ATTITUDE angles (FRD relative to NED)."""
    q = quaternion_multiply(quaternion_multiply(Q_ENU_NED, quaternion_from_euler(roll, pitch, yaw)), Q_FRD_FLU)
    if q[3] < 0:  # one sign for equal rotations: w >= 0
        q = (-q[0], -q[1], -q[2], -q[3])
    return q


@dataclass(frozen=True)
class LocalPosition:
    """LOCAL_POSITION_NED: metres and m/s in NED."""

    position_ned: Vector
    velocity_ned: Vector
    received_s: float


@dataclass(frozen=True)
class Attitude:
    """ATTITUDE: radians (FRD relative to NED) and body rates rad/s in FRD."""

    roll: float
    pitch: float
    yaw: float
    rates_frd: Vector
    received_s: float


@dataclass(frozen=True)
class BatteryReading:
    """BATTERY_STATUS in SI units; NaN where the flight controller says unknown."""

    battery_id: int
    voltage_v: float
    current_a: float  # positive = drawn from the battery (MAVLink's sign)
    remaining: float  # 0..1
    temperature_c: float
    cell_voltages_v: tuple[float, ...]
    received_s: float


@dataclass(frozen=True)
class Odometry:
    """What nav_msgs/Odometry carries: pose of base_link (FLU) in odom (ENU), twist in base_link."""

    position: Vector
    orientation: Quaternion
    linear_velocity: Vector
    angular_velocity: Vector


def odometry(position: LocalPosition, attitude: Attitude) -> Odometry:
    q = orientation_enu_flu(attitude.roll, attitude.pitch, attitude.yaw)
    velocity_body = rotate_vector(q, ned_to_enu(position.velocity_ned), inverse=True)
    return Odometry(ned_to_enu(position.position_ned), q, velocity_body, frd_to_flu(attitude.rates_frd))


def battery_reading(voltages_mv, current_ca: int, remaining_pct: int, temperature_cdeg: int, received_s: float,
                    battery_id: int = 0, voltages_ext_mv=()) -> BatteryReading:
    """Decode BATTERY_STATUS fields. The total voltage is the sum of the valid entries (cells, or the total in
    cell 0 and its overflow in cell 1 for packs above 65.534 V); cell voltages only when there are several
    entries and each looks like a cell (< 5 V)."""
    cells = [v / 1000.0 for v in list(voltages_mv) + [v for v in voltages_ext_mv if v != 0]
             if v != UINT16_UNKNOWN]
    voltage = sum(cells) if cells else math.nan
    per_cell = tuple(cells) if len(cells) > 1 and all(0.0 < c < 5.0 for c in cells) else ()
    return BatteryReading(battery_id, voltage, math.nan if current_ca == -1 else current_ca / 100.0,
                          math.nan if remaining_pct == -1 else remaining_pct / 100.0,
                          math.nan if temperature_cdeg == INT16_UNKNOWN else temperature_cdeg / 100.0,
                          per_cell, received_s)
