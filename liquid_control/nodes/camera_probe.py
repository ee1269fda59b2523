"""The ROS side of `liquid-control doctor`: which RMW runs, and what the camera topics deliver.

`measure_camera` starts a short-lived node in its own rclpy context, listens to the image and
camera_info topics for a while and returns a plain CameraSample (inference.preflight judges it).
It subscribes best-effort (rclpy's sensor-data profile), which matches reliable and best-effort
camera drivers alike.
"""
from __future__ import annotations

import time
from typing import Optional

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from liquid_control.inference.preflight import CameraSample


def rmw_implementation() -> Optional[str]:
    try:
        return rclpy.get_rmw_implementation_identifier()
    except (RuntimeError, AttributeError):
        return None


def measure_camera(image_topic: str, info_topic: str, duration_s: float, discovery_s: float = 5.0) -> CameraSample:
    """Listen `duration_s` seconds from the first image (waiting up to `discovery_s` for it)."""
    context = rclpy.context.Context()
    rclpy.init(context=context, args=[])
    node = rclpy.create_node("liquid_doctor", context=context, start_parameter_services=False)
    executor = SingleThreadedExecutor(context=context)
    images: list[tuple[float, str, int, int]] = []
    infos: list[CameraInfo] = []
    try:
        node.create_subscription(Image, image_topic, lambda m: images.append(
            (time.monotonic(), m.encoding, int(m.width), int(m.height))), qos_profile_sensor_data)
        node.create_subscription(CameraInfo, info_topic, infos.append, qos_profile_sensor_data)
        executor.add_node(node)
        end = time.monotonic() + discovery_s
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
            if images:  # the window starts with the first frame
                end = images[0][0] + duration_s
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    info = infos[-1] if infos else None
    return CameraSample(
        image_topic, len(images), duration_s if images else discovery_s, tuple(t for t, *_ in images),
        tuple(e for _, e, _, _ in images), tuple((w, h) for *_, w, h in images),
        None if info is None else tuple(float(v) for v in info.k),
        None if info is None else (int(info.width), int(info.height)))
