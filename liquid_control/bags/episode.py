"""Record a simulated episode straight into a rosbag2 MCAP bag, without ROS.

`liquid-control evaluate` flies episodes in-process (no ROS graph), yet its runs should be
replayable and evaluable like the demo's recordings. `EpisodeBagRecorder` writes the same
topics, types, frames and offered QoS that the sim node and the policy node publish
(liquid_control/nodes/sim_node.py, DESIGN.md "Interfaces"), serialised as CDR by rosbags'
Kilted typestore, through the crash-safe `BagWriter`:

    /camera/image_raw  sensor_msgs/msg/Image        rgb8, header.stamp = capture time, frame camera_optical_frame
    /cmd_vel           geometry_msgs/msg/TwistStamped  heading frame FLU [vx, vy, vz, yaw_rate], frame base_link
    /odom              nav_msgs/msg/Odometry          pose in odom, twist in base_link (body FLU)

Log time = header stamp (sim time), as a recorder running on `use_sim_time` would log it.
`RecordingController` wraps an episode controller so that `run_episode` records itself.

Safety: bad input (wrong shape, non-finite value, negative stamp) raises `BagError` naming the
argument; the bag keeps what was written before (flushed at least every `flush_period_s`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liquid_control.bags import BagError
from liquid_control.bags.writer import BagWriter, BagWriterConfig, default_qos, standard_typestore
from liquid_control.interfaces.topics import CAMERA_IMAGE, CMD_VEL, ODOM, Interface

IMAGE_TYPE = CAMERA_IMAGE.type
COMMAND_TYPE = CMD_VEL.type
ODOMETRY_TYPE = ODOM.type


def qos_metadata(interface: Interface) -> dict:
    """The bag metadata's offered QoS of a table topic."""
    qos = interface.qos
    return default_qos(qos.reliability, depth=qos.depth, durability=qos.durability)


@dataclass
class EpisodeBagConfig:
    """Topic and frame names (the sim node's defaults) and how the bag is written.

    compression: MCAP chunk compression ("none", "zstd", "lz4").
    fsync: sync every flush to disk; off by default because an offline evaluation can simply
        be run again, and one sync per second per worker is wasted time there.
    """

    image_topic: str = CAMERA_IMAGE.absolute
    command_topic: str = CMD_VEL.absolute
    odometry_topic: str = ODOM.absolute
    camera_frame_id: str = "camera_optical_frame"
    base_frame_id: str = "base_link"
    odom_frame_id: str = "odom"
    compression: str = "zstd"
    fsync: bool = False


def _stamp_ns(stamp_s: float, what: str) -> int:
    stamp = float(stamp_s)
    if not np.isfinite(stamp) or stamp < 0:
        raise BagError(f"{what}: stamp must be a finite, non-negative time in seconds, got {stamp_s!r}")
    return int(round(stamp * 1e9))


def _vector(values: Any, size: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.shape != (size,) or not np.all(np.isfinite(array)):
        raise BagError(f"{what} must be {size} finite numbers, got {np.asarray(values).tolist()!r}")
    return array


class EpisodeBagRecorder:
    """Writes one episode's camera images, commands and odometry to a new bag directory `path`.

    Use as a context manager, or call `close()` (idempotent) when the episode ends.
    """

    def __init__(self, path: str | Path, config: EpisodeBagConfig | None = None) -> None:
        self.config = config or EpisodeBagConfig()
        store = standard_typestore()
        self._types = store.types
        self._serialize = store.serialize_cdr
        self.writer = BagWriter(path, BagWriterConfig(compression=self.config.compression, fsync=self.config.fsync))
        # Offered QoS as the live publishers offer it (the interface table).
        for name, interface in ((self.config.image_topic, CAMERA_IMAGE), (self.config.command_topic, CMD_VEL),
                                (self.config.odometry_topic, ODOM)):
            self.writer.add_topic(name, interface.type, [qos_metadata(interface)])

    @property
    def bag_dir(self) -> Path:
        return self.writer.bag_dir

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        return self._types["std_msgs/msg/Header"](
            stamp=self._types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)

    def _vector3(self, values: np.ndarray) -> Any:
        return self._types["geometry_msgs/msg/Vector3"](x=float(values[0]), y=float(values[1]), z=float(values[2]))

    def _write(self, topic: str, msgtype: str, stamp_ns: int, msg: Any) -> None:
        self.writer.write(topic, stamp_ns, self._serialize(msg, msgtype).tobytes())

    def image(self, stamp_s: float, rgb: np.ndarray) -> None:
        """One camera frame: (H, W, 3) uint8 RGB, stamped with its capture time (s, sim time)."""
        stamp_ns = _stamp_ns(stamp_s, "image")
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise BagError(f"image must be an (H, W, 3) uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
        height, width, _ = rgb.shape
        msg = self._types[IMAGE_TYPE](header=self._header(stamp_ns, self.config.camera_frame_id), height=height,
                                      width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
                                      data=np.ascontiguousarray(rgb).reshape(-1))
        self._write(self.config.image_topic, IMAGE_TYPE, stamp_ns, msg)

    def command(self, stamp_s: float, cmd4: Any) -> None:
        """One velocity command [vx, vy, vz (m/s), yaw_rate (rad/s)] in the heading frame FLU."""
        stamp_ns = _stamp_ns(stamp_s, "command")
        command = _vector(cmd4, 4, "command [vx, vy, vz, yaw_rate]")
        twist = self._types["geometry_msgs/msg/Twist"](linear=self._vector3(command[:3]),
                                                       angular=self._vector3(np.array([0.0, 0.0, command[3]])))
        msg = self._types[COMMAND_TYPE](header=self._header(stamp_ns, self.config.base_frame_id), twist=twist)
        self._write(self.config.command_topic, COMMAND_TYPE, stamp_ns, msg)

    def odometry(self, stamp_s: float, position: Any, quaternion_xyzw: Any, velocity_world: Any,
                 angular_velocity_body: Any = (0.0, 0.0, 0.0)) -> None:
        """Ground-truth state: position (m, odom frame), orientation quaternion xyzw (world_from_body),
        velocity (m/s, world frame; stored in the body frame as nav_msgs/Odometry's twist is, like the
        sim node), angular velocity (rad/s, body FLU)."""
        stamp_ns = _stamp_ns(stamp_s, "odometry")
        position = _vector(position, 3, "position")
        quaternion = _vector(quaternion_xyzw, 4, "quaternion_xyzw")
        norm = float(np.linalg.norm(quaternion))
        if abs(norm - 1.0) > 1e-3:
            raise BagError(f"quaternion_xyzw must be a unit quaternion, got norm {norm:.6f}")
        x, y, z, w = quaternion / norm
        world_from_body = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        velocity_body = world_from_body.T @ _vector(velocity_world, 3, "velocity_world")
        angular = _vector(angular_velocity_body, 3, "angular_velocity_body")
        t = self._types
        pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]), z=float(position[2])),
            orientation=t["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))
        twist = t["geometry_msgs/msg/Twist"](linear=self._vector3(velocity_body), angular=self._vector3(angular))
        msg = t[ODOMETRY_TYPE](header=self._header(stamp_ns, self.config.odom_frame_id),
                               child_frame_id=self.config.base_frame_id,
                               pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
                               twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))
        self._write(self.config.odometry_topic, ODOMETRY_TYPE, stamp_ns, msg)

    def close(self) -> None:
        """Finish the bag (MCAP summary, final metadata.yaml)."""
        self.writer.close()

    def __enter__(self) -> EpisodeBagRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingController:
    """An episode Controller (simulation.episode) that records what it sees and does.

    Each newly delivered camera frame goes to the bag at its capture time; every control step
    records the true state (odometry) at the step time and the command the wrapped controller
    returns, stamped with the step time (as the policy node stamps its commands). The commands
    recorded are the controller's output, before the episode's safety clamp.
    """

    def __init__(self, controller: Any, recorder: EpisodeBagRecorder) -> None:
        self.controller = controller
        self.recorder = recorder
        self._last_seq: int | None = None

    def reset(self, spec: Any) -> None:
        self._last_seq = None
        self.controller.reset(spec)

    def act(self, observation: Any) -> np.ndarray:
        frame = observation.frame
        if frame is not None and frame.seq != self._last_seq:
            self.recorder.image(frame.capture_time_s, frame.image)
            self._last_seq = frame.seq
        state = observation.state
        self.recorder.odometry(observation.time_s, state.position, state.quaternion, state.velocity_world,
                               state.angular_velocity_body)
        command = self.controller.act(observation)
        self.recorder.command(observation.time_s, command)
        return command
