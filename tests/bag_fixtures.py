"""Helpers that build small rosbag2 bags for the bag tests.

Three independent writers so the reader is checked against bags it did not write:
rosbags' Writer (mcap and sqlite3), and mcap + mcap-ros2-support (not rosbags).
Images are random noise so a wrong channel order or row padding is visible.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
TWIST = "geometry_msgs/msg/Twist"


@dataclass
class Entry:
    """One message to put in a bag: rosbags message object, and what a reader must return."""

    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any
    expected: Any = None  # RGB image or (4,) command


def _header(stamp_ns: int, frame: str = "camera"):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame,
    )


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def image_msg(stamp_ns: int, rgb: np.ndarray, encoding: str, row_padding: int = 0):
    """sensor_msgs/Image holding `rgb` in `encoding`; returns (msg, expected RGB as a reader must return it)."""
    height, width, _ = rgb.shape
    if encoding == "rgb8":
        pixels, expected = rgb, rgb
    elif encoding == "bgr8":
        pixels, expected = rgb[:, :, ::-1], rgb
    elif encoding == "mono8":
        grey = rgb[:, :, 0]
        pixels, expected = grey[:, :, None], np.repeat(grey[:, :, None], 3, axis=2)
    else:  # an encoding the reader must refuse; payload sized like mono8
        pixels, expected = rgb[:, :, :1], None
    rows = pixels.reshape(height, -1)
    if row_padding:
        rows = np.concatenate([rows, np.full((height, row_padding), 7, np.uint8)], axis=1)
    msg = T[IMAGE](header=_header(stamp_ns), height=height, width=width, encoding=encoding, is_bigendian=0,
                   step=rows.shape[1], data=np.ascontiguousarray(rows).reshape(-1))
    return msg, expected


def compressed_msg(stamp_ns: int, rgb: np.ndarray, codec: str, fmt: str | None = None):
    """sensor_msgs/CompressedImage; the expected RGB is what OpenCV decodes (JPEG is lossy)."""
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", rgb[:, :, ::-1])
    assert ok
    expected = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    msg = T[COMPRESSED](header=_header(stamp_ns), format=fmt if fmt is not None else f"rgb8; {codec} compressed bgr8",
                        data=buf.reshape(-1))
    return msg, expected


def twist_stamped_msg(stamp_ns: int, command):
    v = T["geometry_msgs/msg/Vector3"]
    twist = T[TWIST](linear=v(x=command[0], y=command[1], z=command[2]), angular=v(x=0.0, y=0.0, z=command[3]))
    return T[TWIST_STAMPED](header=_header(stamp_ns, "base_link"), twist=twist)


def twist_msg(command):
    v = T["geometry_msgs/msg/Vector3"]
    return T[TWIST](linear=v(x=command[0], y=command[1], z=command[2]), angular=v(x=0.0, y=0.0, z=command[3]))


def standard_entries(n: int = 6, height: int = 23, width: int = 37, encoding: str = "rgb8",
                     image_topic: str = "/camera/image_raw", command_topic: str = "/cmd_vel",
                     start_ns: int = 1_700_000_000_000_000_000, period_ns: int = 33_000_000,
                     stamped_commands: bool = True) -> list[Entry]:
    """n images (odd size by default) and n commands, stamps 1 ms before their log times."""
    entries = []
    for i in range(n):
        log = start_ns + i * period_ns
        msg, expected = image_msg(log - 1_000_000, random_rgb(height, width, seed=i), encoding)
        entries.append(Entry(image_topic, IMAGE, log, msg, expected))
        command = np.array([0.1 * i, -0.2, 0.05 * i, 0.3 - 0.1 * i])
        if stamped_commands:
            entries.append(Entry(command_topic, TWIST_STAMPED, log + 500_000, twist_stamped_msg(log, command), command))
        else:
            entries.append(Entry(command_topic, TWIST, log + 500_000, twist_msg(command), command))
    return entries


def write_rosbags_bag(path: Path, entries: list[Entry], storage: str = "mcap") -> Path:
    """A rosbag2 directory written by rosbags' Writer (version 9)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for entry in entries:
            if entry.topic not in connections:
                connections[entry.topic] = writer.add_connection(entry.topic, entry.msgtype, typestore=TYPESTORE)
            writer.write(connections[entry.topic], entry.log_time_ns,
                         TYPESTORE.serialize_cdr(entry.msg, entry.msgtype))
    return path


def _as_plain(msg: Any) -> Any:
    """rosbags dataclass -> nested dicts with bytes for uint8 arrays (what mcap_ros2's encoder takes)."""
    if isinstance(msg, np.ndarray):
        return msg.tobytes() if msg.dtype == np.uint8 else msg.tolist()
    if hasattr(msg, "__dataclass_fields__"):
        return {name: _as_plain(getattr(msg, name)) for name in msg.__dataclass_fields__ if name != "__msgtype__"}
    return msg


def write_mcap_ros2_file(path: Path, entries: list[Entry]) -> Path:
    """A bare .mcap written by the `mcap` package + mcap-ros2-support (no rosbags, no metadata.yaml)."""
    from mcap_ros2.writer import Writer

    with open(path, "wb") as handle:
        writer = Writer(handle)
        schemas = {}
        for entry in entries:
            if entry.msgtype not in schemas:
                text, _ = TYPESTORE.generate_msgdef(entry.msgtype, ros_version=2)
                schemas[entry.msgtype] = writer.register_msgdef(entry.msgtype, text)
            writer.write_message(entry.topic, schemas[entry.msgtype], _as_plain(entry.msg),
                                 log_time=entry.log_time_ns, publish_time=entry.log_time_ns)
        writer.finish()
    return path


def cdr(entry: Entry) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(entry.msg, entry.msgtype))


# -- ROS helpers for the node tests (rclpy imported lazily: the reader tests need no ROS) --

REPO = Path(__file__).resolve().parent.parent


def cli_process(*args: str, log_path: Path):
    """Start `liquid-control ARGS` in a subprocess (same ROS_DOMAIN_ID as the test), output to log_path."""
    import os
    import subprocess
    import sys

    log = open(log_path, "wb")
    return subprocess.Popen([sys.executable, "-m", "liquid_control.cli", *args], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def stop_process(process, timeout: float = 10.0) -> None:
    """Make sure a test subprocess is gone (SIGKILL if it does not exit)."""
    import subprocess

    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


class Spinner:
    """Spins rclpy nodes in a background thread for the duration of a `with` block."""

    def __init__(self, *nodes) -> None:
        import threading

        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor()
        for node in nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down under us at teardown
            pass

    def __enter__(self) -> "Spinner":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)


def wait_until(predicate, timeout: float, period: float = 0.02) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()
