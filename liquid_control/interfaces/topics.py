"""The interface table: every topic and service of the graph, in one place.

Each entry has its default name (relative names resolve in the node's namespace and can
be remapped), its message or service type, its QoS (topics), who produces it and who
consumes it. Nodes, launch files and commands take names and QoS from here, so a name is
written once; docs/INTERFACES.md is `render_markdown()` of this table (a test keeps it so).

No ROS here (launch files, `--help` and bag tools import it): `nodes.common.qos_profile`
turns a `Qos` into an rclpy QoSProfile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Node names as the graph starts them (liquid_control.nodes.graph, launch/*.launch.py).
SIM, PERCEPTION, POLICY, BRIDGE, RECORDER, PLAYER, DEMO = (
    "sim", "perception", "policy", "mavlink_bridge", "recorder", "bag_player", "demo")
CAMERA_DRIVER = "camera driver"
EVERY_NODE = "every node"


@dataclass(frozen=True)
class Qos:
    """A QoS profile without rclpy: keep last `depth`, reliability and durability as rosbag2 spells them."""

    label: str
    reliability: str  # "reliable" | "best_effort"
    durability: str  # "volatile" | "transient_local"
    depth: int

    def settings(self) -> str:
        return f"{self.reliability.replace('_', ' ')}, {self.durability.replace('_', ' ')}, keep last {self.depth}"

    def describe(self) -> str:
        return f"{self.label}: {self.settings()}"


# Sensor streams per REP-2003: drivers publish reliable (so RViz2's and other default, reliable
# subscriptions get them) and consumers subscribe best effort (a slow reader drops old frames instead
# of queueing them; a best-effort reader matches both kinds of publisher).
SENSOR_PUBLISHER_QOS = Qos("sensor publisher", "reliable", "volatile", 5)
SENSOR_QOS = Qos("sensor data", "best_effort", "volatile", 5)
# Perception and policy only ever process the newest frame.
NEWEST_QOS = Qos("newest frame", "best_effort", "volatile", 1)
# Only the newest command matters, but it must not be lost on a lossy link.
COMMAND_QOS = Qos("command", "reliable", "volatile", 1)
# Slowly changing state: late subscribers get the last value.
LATCHED_QOS = Qos("latched", "reliable", "transient_local", 1)
# Episode events: a monitor that starts late still gets the recent ones.
EVENTS_QOS = Qos("events", "reliable", "transient_local", 50)
# TF as tf2_ros's broadcasters offer it: /tf reliable, keep last 100; /tf_static latched (transient
# local), keep last 1: one message holds every static transform of a broadcaster.
TF_QOS = Qos("tf", "reliable", "volatile", 100)
TF_STATIC_QOS = Qos("tf static", "reliable", "transient_local", 1)
# rclpy's default (a plain depth of 10); REP-2003's choice for sensor publishers.
DEFAULT_QOS = Qos("default", "reliable", "volatile", 10)


@dataclass(frozen=True)
class Interface:
    """One topic (qos set) or service (qos None).

    `qos` is what publishers offer; `subscriber_qos` what subscribers request where that differs
    (sensor streams, REP-2003), else None: subscribers use `qos` too (`subscription_qos`).
    """

    name: str
    type: str  # "pkg/msg/Type" or "pkg/srv/Type"
    qos: Optional[Qos]
    producers: tuple[str, ...]  # publishers, or the server of a service
    consumers: tuple[str, ...]  # subscribers, or the callers of a service
    notes: str
    subscriber_qos: Optional[Qos] = None

    @property
    def subscription_qos(self) -> Optional[Qos]:
        return self.subscriber_qos or self.qos

    @property
    def kind(self) -> str:
        return "service" if self.qos is None else "topic"

    @property
    def absolute(self) -> str:
        """The name in the root namespace ("/cmd_vel"), as bags and graph queries see it."""
        return self.name if self.name.startswith("/") else "/" + self.name


CAMERA_IMAGE = Interface(
    "camera/image_raw", "sensor_msgs/msg/Image", SENSOR_PUBLISHER_QOS, (SIM, CAMERA_DRIVER, PLAYER),
    (PERCEPTION, RECORDER), "rgb8, bgr8, mono8, rgba8 or bgra8 (interfaces.codec); header.stamp = capture time",
    SENSOR_QOS)
CAMERA_COMPRESSED = Interface(
    "camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", SENSOR_PUBLISHER_QOS, (CAMERA_DRIVER, PLAYER),
    (PERCEPTION,), "jpeg or png; perception subscribes it instead of camera/image_raw with input:=compressed",
    SENSOR_QOS)
CAMERA_INFO = Interface(
    "camera/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_PUBLISHER_QOS, (SIM, CAMERA_DRIVER), (RECORDER,),
    "true intrinsics of the rendered image", SENSOR_QOS)
FEATURES = Interface(
    "features", "sensor_msgs/msg/Image", NEWEST_QOS, (PERCEPTION,), (POLICY, RECORDER),
    "1xN 32FC1 feature vector with the source image's header (capture stamp)")
CMD_VEL = Interface(
    "cmd_vel", "geometry_msgs/msg/TwistStamped", COMMAND_QOS, (POLICY,), (SIM, BRIDGE, RECORDER, DEMO),
    "heading frame, FLU (yaw-only body frame): linear x forward, y left, z up (m/s), angular z yaw rate CCW "
    "(rad/s); frame_id base_link")
ODOM = Interface(
    "odom", "nav_msgs/msg/Odometry", SENSOR_PUBLISHER_QOS, (SIM, "state estimator"), (BRIDGE, DEMO, RECORDER),
    "ground truth in sim (metrics, the expert); the bridge's geofence; never a policy input", SENSOR_QOS)
TF = Interface(
    "/tf", "tf2_msgs/msg/TFMessage", TF_QOS, (SIM, BRIDGE), ("rviz2, any tf2 listener",),
    "odom -> base_link (REP-105): the sim's stamped with its odometry, the bridge's from the flight controller's "
    "estimate (publish_tf:=true); needs tf2_msgs (every ROS 2 install, no PyPI wheel)")
TF_STATIC = Interface(
    "/tf_static", "tf2_msgs/msg/TFMessage", TF_STATIC_QOS, (SIM,), ("rviz2, any tf2 listener",),
    "base_link -> camera optical frame (REP-103: x right, y down, z forward) from the camera mount")
CLOCK = Interface(
    "/clock", "rosgraph_msgs/msg/Clock", DEFAULT_QOS, (SIM, PLAYER), (EVERY_NODE,),
    "sim time (sim) or bag time (bag_player clock:=true) for nodes with use_sim_time")
DIAGNOSTICS = Interface(
    "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", DEFAULT_QOS, (EVERY_NODE,), (RECORDER,),
    "loop rate, lateness, inference time, stale inputs, bad frames")
EPISODE_STATUS = Interface(
    "episode/status", "std_msgs/msg/String", EVENTS_QOS, (SIM,), (DEMO, RECORDER),
    "JSON episode events: start, progress, end (reason, metrics), finished")
MAVLINK_MODE = Interface(
    "mavlink/mode", "std_msgs/msg/String", LATCHED_QOS, (BRIDGE,), (), "the autopilot's flight mode")
MAVLINK_ARMED = Interface(
    "mavlink/armed", "std_msgs/msg/Bool", LATCHED_QOS, (BRIDGE,), (), "the autopilot is armed")
MAVLINK_CONNECTED = Interface(
    "mavlink/connected", "std_msgs/msg/Bool", LATCHED_QOS, (BRIDGE,), (), "heartbeats arrive from the autopilot")
POLICY_LIVE = Interface(
    "policy/live", "std_msgs/msg/Bool", COMMAND_QOS, (POLICY,), (BRIDGE, RECORDER),
    "published with every cmd_vel, just before it: true when that command came from the model on fresh features, "
    "false for the watchdog's or a fault's hover; the bridge hands control back to the flight controller after "
    "handback_timeout_s without live output")
MAVLINK_ODOM = Interface(
    "mavlink/odom", "nav_msgs/msg/Odometry", DEFAULT_QOS, (BRIDGE,), (RECORDER,),
    "the flight controller's estimate (LOCAL_POSITION_NED + ATTITUDE) in REP-103/105 frames: odom (ENU) -> "
    "base_link (FLU), twist in base_link; the bridge's geofence uses it with odometry_source:=vehicle")
MAVLINK_BATTERY = Interface(
    "mavlink/battery", "sensor_msgs/msg/BatteryState", DEFAULT_QOS, (BRIDGE,), (RECORDER,),
    "BATTERY_STATUS: voltage, current (negative = discharging), percentage, cell voltages; NaN where unknown")
EPISODE_RESET = Interface(
    "episode/reset", "std_srvs/srv/Trigger", None, (SIM,), (DEMO,),
    "restart the episodes at the current scenario and seed")
POLICY_RESET = Interface(
    "policy/reset", "std_srvs/srv/Trigger", None, (POLICY,), (), "reset the CfC hidden state")
MAVLINK_ARM = Interface(
    "mavlink/arm", "std_srvs/srv/SetBool", None, (BRIDGE,), (), "arm or disarm (only with allow_arming)")
MAVLINK_SET_OFFBOARD = Interface(
    "mavlink/set_offboard", "std_srvs/srv/Trigger", None, (BRIDGE,), (),
    "switch to offboard (PX4) or guided (ArduPilot) (only with allow_mode_change)")

INTERFACES: tuple[Interface, ...] = (
    CAMERA_IMAGE, CAMERA_COMPRESSED, CAMERA_INFO, FEATURES, CMD_VEL, ODOM, TF, TF_STATIC, CLOCK, DIAGNOSTICS,
    EPISODE_STATUS, MAVLINK_MODE, MAVLINK_ARMED, MAVLINK_CONNECTED, POLICY_LIVE, MAVLINK_ODOM, MAVLINK_BATTERY,
    EPISODE_RESET, POLICY_RESET, MAVLINK_ARM, MAVLINK_SET_OFFBOARD)

# What the live perception/policy graph publishes itself: a bag's copies are replayed under this prefix
# (bag_player recorded_prefix), so they never mix with the live ones.
LIVE_GRAPH_TOPICS = (CMD_VEL, POLICY_LIVE, FEATURES, DIAGNOSTICS)
RECORDED_PREFIX = "/recorded"


def render_markdown() -> str:
    """docs/INTERFACES.md: the table above as Markdown."""
    lines = ["# Interfaces", "",
             "Generated from `liquid_control/interfaces/topics.py` by `render_markdown()`; edit the table there "
             "(tests/test_interfaces.py checks that this file matches it).", "",
             "Relative names resolve in the node's namespace and can be remapped.", "",
             "QoS is what publishers offer; where subscribers request something else (sensor streams, "
             "REP-2003: reliable publishers, best-effort subscribers) both are given.", "",
             "| name | kind | type | QoS | producers | consumers | notes |", "|---|---|---|---|---|---|---|"]
    for item in INTERFACES:
        qos = item.qos.describe() if item.qos else "-"
        if item.subscriber_qos is not None:
            qos = f"publishers {item.qos.settings()}; subscribers {item.subscriber_qos.settings()} " \
                  f"({item.subscriber_qos.label}, REP-2003)"
        lines.append(f"| `{item.name}` | {item.kind} | `{item.type}` | {qos} | {', '.join(item.producers) or '-'} "
                     f"| {', '.join(item.consumers) or '-'} | {item.notes} |")
    lines += ["", f"The bag player plays a bag's {', '.join(f'`{t.absolute}`' for t in LIVE_GRAPH_TOPICS)} "
              f"under `{RECORDED_PREFIX}` by default, so they never mix with what the live graph publishes.", ""]
    return "\n".join(lines)
