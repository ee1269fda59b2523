"""ROS messages of the flight controller's state (the MAVLink bridge publishes them); the frame conversion
itself is liquid_control.deploy.vehicle_state (no ROS)."""
from __future__ import annotations

from typing import Any

from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import BatteryState

from liquid_control.deploy import vehicle_state


def odometry_msg(odom: vehicle_state.Odometry, stamp: Any, frame_id: str, child_frame_id: str) -> Odometry:
    """nav_msgs/Odometry: pose of child_frame_id (FLU) in frame_id (ENU), twist in child_frame_id. The
    covariances stay zero: MAVLink's LOCAL_POSITION_NED and ATTITUDE carry none."""
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, frame_id, child_frame_id
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = odom.position
    q.x, q.y, q.z, q.w = odom.orientation
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    v.x, v.y, v.z = odom.linear_velocity
    w.x, w.y, w.z = odom.angular_velocity
    return msg


def transform_msg(odom: vehicle_state.Odometry, stamp: Any, frame_id: str, child_frame_id: str) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, frame_id, child_frame_id
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = odom.position
    r.x, r.y, r.z, r.w = odom.orientation
    return msg


def battery_msg(reading: vehicle_state.BatteryReading, stamp: Any, frame_id: str) -> BatteryState:
    """sensor_msgs/BatteryState; its current is negative while discharging, MAVLink's positive."""
    msg = BatteryState()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.voltage = float(reading.voltage_v)
    msg.current = -float(reading.current_a)
    msg.percentage = float(reading.remaining)
    msg.temperature = float(reading.temperature_c)
    msg.charge = msg.capacity = msg.design_capacity = float("nan")
    msg.cell_voltage = [float(v) for v in reading.cell_voltages_v]
    msg.location = str(reading.battery_id)
    msg.present = True
    msg.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_UNKNOWN
    msg.power_supply_technology = BatteryState.POWER_SUPPLY_TECHNOLOGY_UNKNOWN
    return msg
