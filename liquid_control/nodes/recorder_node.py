"""recorder_node: records chosen topics into a rosbag2 MCAP bag (generic raw subscriptions).

Subscriptions are raw (`raw=True`): the callback gets the CDR bytes the bag
stores, so nothing is deserialised. A topic's type comes from the `types`
parameter ("topic:=pkg/msg/Type") or from the ROS graph, polled every
`discovery_period_s`; its QoS follows its publishers (best effort if any
publisher is best effort, as rosbag2 does) so no publisher is left unmatched.

Safety: the bag stays readable whatever happens. Chunks are flushed to the OS
and metadata.yaml rewritten at least every `flush_period_s` (BagWriter), so a
crash of the recorded graph loses nothing and a SIGKILL of this process loses at
most the last `flush_period_s` (repair with `liquid-control record --repair`);
Ctrl-C / SIGTERM close the bag properly.
"""
from __future__ import annotations

import importlib
import time
from datetime import datetime
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from liquid_control.bags import BagError
from liquid_control.bags.writer import BagWriter, BagWriterConfig, default_qos
from liquid_control.nodes.common import DiagnosticsPublisher, ParamSpec, declare_parameters_with_ranges, make_status

IGNORED_WHEN_RECORDING_ALL = ("/rosout", "/parameter_events")

PARAMS = [
    ParamSpec("output", "", "bag directory to create; empty: rosbag2_YYYY_MM_DD-HH_MM_SS in the working directory"),
    ParamSpec("compression", "none", "MCAP chunk compression", choices=("none", "zstd", "lz4")),
    ParamSpec("flush_period_s", 1.0, "longest time (s) received messages stay only in memory", 0.05, 10.0),
    ParamSpec("discovery_period_s", 0.5, "how often (s) the graph is polled for topics to record", 0.05, 10.0),
    ParamSpec("queue_depth", 100, "subscription queue depth (messages)", 1, 10000),
    ParamSpec("max_duration_s", 0.0, "stop recording after this many seconds (0: until shut down)", 0.0, 1e9),
]


def string_list_parameter(node: Node, name: str, description: str) -> list[str]:
    """Declare a string-array parameter whose default is empty (rclpy cannot infer [] as strings)."""
    from rcl_interfaces.msg import ParameterDescriptor

    value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY,
                                   ParameterDescriptor(description=description)).value
    return list(value or [])


def message_class(msgtype: str) -> Any:
    """The rclpy message class of 'pkg/msg/Type'; ValueError if that package is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"{msgtype!r} is not a message type of the form pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as err:
        raise ValueError(f"message type {msgtype!r} is not installed: {err}") from None


def _qos_dict(profile: QoSProfile) -> dict[str, Any]:
    qos = default_qos(reliability="best_effort" if profile.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable",
                      depth=profile.depth,
                      durability="transient_local" if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                      else "volatile")
    if profile.history == HistoryPolicy.KEEP_ALL:
        qos["history"] = "keep_all"
    return qos


class RecorderNode(Node):
    def __init__(self, parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__("recorder", parameter_overrides=parameter_overrides or [])
        self.params = declare_parameters_with_ranges(self, PARAMS)
        self.record_all = not (requested := string_list_parameter(self, "topics", "topics to record; empty: all"))
        self.requested = {self.resolve_topic_name(t) for t in requested}
        self.type_overrides: dict[str, str] = {}
        for item in string_list_parameter(self, "types", "type per topic, 'topic:=pkg/msg/Type'"):
            topic, sep, msgtype = item.partition(":=")
            if not sep or not topic or not msgtype:
                raise ValueError(f"parameter 'types': {item!r} is not of the form topic:=pkg/msg/Type")
            self.type_overrides[self.resolve_topic_name(topic)] = msgtype
        output = self.params["output"] or datetime.now().strftime("rosbag2_%Y_%m_%d-%H_%M_%S")
        self.writer = BagWriter(output, BagWriterConfig(compression=self.params["compression"],
                                                        flush_period_s=self.params["flush_period_s"]))
        self.subscriptions_by_topic: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.refused: set[str] = set()
        self.started = time.monotonic()
        self.diagnostics = DiagnosticsPublisher(self)
        self.discover()
        # Housekeeping runs on the steady clock: under use_sim_time a crashed simulator freezes ROS
        # time, and a ROS-time flush timer would then never fire again.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self.params["discovery_period_s"], self.discover, clock=steady)
        # A tenth of the period: quiet topics are flushed at most 1.1 flush periods after arrival.
        self.create_timer(self.params["flush_period_s"] / 10, self.flush_if_due, clock=steady)
        self.create_timer(1.0, self.publish_diagnostics, clock=steady)
        if self.params["max_duration_s"] > 0:
            self.create_timer(self.params["max_duration_s"], lambda: self.context.try_shutdown(), clock=steady)
        self.get_logger().info(f"recording {'all topics' if self.record_all else sorted(self.requested)} "
                               f"into {self.writer.bag_dir}")

    def discover(self) -> None:
        """Subscribe to every wanted topic whose type is now known."""
        graph = dict(self.get_topic_names_and_types())
        wanted = set(graph) - set(IGNORED_WHEN_RECORDING_ALL) if self.record_all else set(self.requested)
        for topic in sorted(wanted - set(self.subscriptions_by_topic) - self.refused):
            msgtype = self.type_overrides.get(topic) or (graph.get(topic) or [None])[0]
            if msgtype is not None:
                self.subscribe(topic, msgtype)

    def subscribe(self, topic: str, msgtype: str) -> None:
        publishers = self.get_publishers_info_by_topic(topic)
        best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
        latched = bool(publishers) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                           for p in publishers)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.params["queue_depth"],
                         reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        try:
            cls = message_class(msgtype)
            self.writer.add_topic(topic, msgtype, [_qos_dict(p.qos_profile) for p in publishers] or [_qos_dict(qos)])
        except (ValueError, BagError) as err:
            self.refused.add(topic)  # warn once, do not retry every discovery period
            self.get_logger().warning(f"not recording {topic}: {err}")
            return
        self.counts[topic] = 0
        self.subscriptions_by_topic[topic] = self.create_subscription(
            cls, topic, lambda data, topic=topic: self.on_message(topic, data), qos, raw=True)
        self.get_logger().info(f"recording {topic} [{msgtype}]")

    def on_message(self, topic: str, data: bytes) -> None:
        # Log time = receive time on this node's clock (ROS time under use_sim_time), like rosbag2.
        try:
            self.writer.write(topic, self.get_clock().now().nanoseconds, data)
        except (OSError, BagError) as err:
            self.stop_on_write_error(err)
            return
        self.counts[topic] += 1

    def flush_if_due(self) -> None:
        try:
            self.writer.flush_if_due()
        except OSError as err:
            self.stop_on_write_error(err)

    def stop_on_write_error(self, err: Exception) -> None:
        """Disk full or gone: stop rather than buffer without bound; the bag keeps what was flushed."""
        self.get_logger().error(f"cannot write to {self.writer.bag_dir}: {err}; stopping the recording")
        self.context.try_shutdown()

    def publish_diagnostics(self) -> None:
        values = {f"messages {topic}": n for topic, n in sorted(self.counts.items())}
        values.update(bag=str(self.writer.bag_dir), recording_s=round(time.monotonic() - self.started, 1))
        level = 0 if self.subscriptions_by_topic else 1
        self.diagnostics.publish(make_status("recorder", level, f"{len(self.counts)} topics, "
                                             f"{sum(self.counts.values())} messages", values))

    def close(self) -> None:
        """Final flush, MCAP summary and metadata.yaml (called by spin_node on any shutdown)."""
        try:
            self.writer.close()
        except OSError as err:  # the flushed part stays readable: `liquid-control record --repair`
            self.get_logger().error(f"could not close {self.writer.bag_dir} cleanly: {err}")
            return
        self.get_logger().info(f"closed {self.writer.bag_dir}: {self.writer.message_count} messages")


def main(args: list[str] | None = None, parameter_overrides: list[Parameter] | None = None) -> int:
    from liquid_control.nodes.common import spin_node

    return spin_node(lambda: RecorderNode(parameter_overrides), args)


if __name__ == "__main__":
    raise SystemExit(main())
