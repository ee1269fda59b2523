"""recorder_node: records chosen topics into a rosbag2 MCAP bag (generic raw subscriptions).

The per-topic QoS rules and sample identity live in nodes/recording.py.

Subscriptions are raw (`raw=True`): the callback gets the CDR bytes the bag
stores, so nothing is deserialised. A topic's type comes from the `types`
parameter ("topic:=pkg/msg/Type") or from the ROS graph, polled every
`discovery_period_s`. Its QoS follows its publishers' offers, as in rosbag2:
best effort if any publisher is best effort, transient local only if all are.
A topic without a publisher is not subscribed (the next discovery looks again),
except when its type is pre-configured: then it is subscribed reliably at once,
so a reliable publisher (commands) is recorded from its very first message, and
re-subscribed as soon as its publishers offer something else (a best-effort
camera). A re-subscription makes the new subscription before it retires the old
one; a sample that arrives through both is recorded once (publisher GID +
sequence number).

Safety: the bag stays readable whatever happens. Chunks are flushed to the OS
and metadata.yaml rewritten at least every `flush_period_s` (BagWriter), so a
crash of the recorded graph loses nothing and a SIGKILL of this process loses at
most the last `flush_period_s` (repair with `liquid-control record --repair`);
Ctrl-C / SIGTERM close the bag properly.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from liquid_control.bags import BagError
from liquid_control.bags.writer import BagWriter, BagWriterConfig, message_definition
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, declare_parameters_with_ranges, make_status,
                                         message_class, string_list_parameter)
from liquid_control.nodes.compat import subscription_event_callbacks_class
from liquid_control.nodes.recording import (DEDUPLICATION_WINDOW, IGNORED_WHEN_RECORDING_ALL, RETIRE_AFTER_S,
                                            RecordedTopic, bag_qos, describe, offered_qos, same_qos, sample_key,
                                            unserved)

# Iron+: rclpy.event_handler; Humble: rclpy.qos_event (nodes/compat.py).
EVENT_CALLBACKS, EVENT_CALLBACKS_MISSING = subscription_event_callbacks_class()

PARAMS = [
    ParamSpec("output", "", "bag directory to create; empty: rosbag2_YYYY_MM_DD-HH_MM_SS in the working directory"),
    ParamSpec("compression", "none", "MCAP chunk compression", choices=("none", "zstd", "lz4")),
    ParamSpec("flush_period_s", 1.0, "longest time (s) received messages stay only in memory", 0.05, 10.0),
    ParamSpec("discovery_period_s", 0.5, "how often (s) the graph is polled for topics to record", 0.05, 10.0),
    ParamSpec("queue_depth", 100, "subscription queue depth (messages)", 1, 10000),
    ParamSpec("max_duration_s", 0.0, "stop recording after this many seconds (0: until shut down)", 0.0, 1e9),
]

class RecorderNode(Node):
    def __init__(self, parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__("recorder", parameter_overrides=parameter_overrides or [])
        self.params = declare_parameters_with_ranges(self, PARAMS)
        if EVENT_CALLBACKS_MISSING:
            self.get_logger().warning(EVENT_CALLBACKS_MISSING)
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
        self.subscriptions_by_topic: dict[str, RecordedTopic] = {}
        self.counts: dict[str, int] = {}
        self.refused: set[str] = set()
        self.in_bag: set[str] = set()  # topics added to the bag (a provisional one: at its first message)
        self.retired: list[Any] = []  # subscriptions to destroy outside their own callbacks
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
        """Subscribe to every wanted topic whose type and publishers are known; follow publisher QoS."""
        for subscription in self.retired:
            self.destroy_subscription(subscription)
        self.retired.clear()
        graph = dict(self.get_topic_names_and_types())
        wanted = set(graph) - set(IGNORED_WHEN_RECORDING_ALL) if self.record_all else set(self.requested)
        for topic in sorted(wanted - self.refused):
            publishers = self.get_publishers_info_by_topic(topic)
            entry = self.subscriptions_by_topic.get(topic)
            if entry is not None:
                self.follow_publishers(topic, entry, publishers)
                continue
            msgtype = self.type_overrides.get(topic) or (graph.get(topic) or [None])[0]
            # No publisher and no configured type: wait. Guessing reliable would never match a
            # best-effort publisher (camera images, features) and record nothing.
            if msgtype is not None and (publishers or topic in self.type_overrides):
                self.subscribe(topic, msgtype, publishers)

    def subscribe(self, topic: str, msgtype: str, publishers: list[Any]) -> None:
        try:
            cls = message_class(msgtype)
            if publishers:
                self.add_to_bag(topic, msgtype, publishers)
            else:
                message_definition(msgtype)  # refuse a type the bag cannot describe now, not at its first message
        except (ValueError, BagError) as err:
            self.refused.add(topic)  # warn once, do not retry every discovery period
            self.get_logger().warning(f"not recording {topic}: {err}")
            return
        self.counts[topic] = 0
        entry = RecordedTopic(msgtype, cls, provisional=not publishers)
        # No publisher yet (pre-configured type): reliable, which a reliable publisher serves from its first
        # message (its history covers the discovery gap); a best-effort one gets its own subscription when it
        # appears. Not both at once from the start: measured here, a best-effort twin then recorded a reliable
        # publisher's messages 5.. before the reliable subscription's resent 0..4 (out of order).
        self.add_subscription(topic, entry, offered_qos(publishers, self.params["queue_depth"]))
        self.subscriptions_by_topic[topic] = entry  # listed with its subscription: other threads may read it
        self.get_logger().info(f"recording {topic} [{msgtype}] ({describe(entry.qos)}"
                               f"{', until its publishers appear' if entry.provisional else ''})")

    def add_subscription(self, topic: str, entry: RecordedTopic, qos: QoSProfile) -> None:
        if entry.subscriptions and entry.recent is None:
            entry.recent = OrderedDict()  # two subscriptions at once: a sample may arrive twice
        # rclpy's default "incompatible QoS" warning is noise here: follow_publishers re-subscribes.
        events = {} if EVENT_CALLBACKS is None else \
            {"event_callbacks": EVENT_CALLBACKS(incompatible_qos=lambda event: None)}
        entry.subscriptions.append((qos, self.create_subscription(
            entry.cls, topic, lambda data, info: self.on_message(topic, data, info), qos, raw=True, **events)))
        entry.kept_matched_at = None

    def add_to_bag(self, topic: str, msgtype: str, publishers: list[Any]) -> None:
        self.writer.add_topic(topic, msgtype, [bag_qos(p.qos_profile) for p in publishers]
                              or [bag_qos(offered_qos([], self.params["queue_depth"]))])
        self.in_bag.add(topic)

    def follow_publishers(self, topic: str, entry: RecordedTopic, publishers: list[Any]) -> None:
        """Choose the subscription the publishers' offers call for; retire the others once it has matched."""
        if not publishers:
            return
        wanted = offered_qos(publishers, self.params["queue_depth"])
        # Provisional (made before any publisher): follow their offers exactly, e.g. transient local
        # for latched publishers; otherwise only when some publisher cannot be served (no churn).
        if len(entry.subscriptions) == 1 and not same_qos(wanted, entry.qos) and \
                (entry.provisional or unserved(entry.qos, wanted)):
            # Make the new subscription before breaking the old one.
            self.get_logger().info(f"re-subscribing {topic}: {describe(entry.qos)} -> {describe(wanted)}, "
                                   "as its publishers offer")
            self.add_subscription(topic, entry, wanted)
        entry.provisional = False
        if len(entry.subscriptions) > 1:
            if entry.subscriptions[-1][1].get_publisher_count() < len(publishers):
                entry.kept_matched_at = None
            elif entry.kept_matched_at is None:
                entry.kept_matched_at = time.monotonic()
            elif time.monotonic() - entry.kept_matched_at >= RETIRE_AFTER_S:
                # Destroyed at the next discovery, never inside one of its own callbacks.
                self.retired.extend(subscription for _, subscription in entry.subscriptions[:-1])
                del entry.subscriptions[:-1]

    def on_message(self, topic: str, data: bytes, info: dict[str, Any]) -> None:
        entry = self.subscriptions_by_topic[topic]
        if entry.recent is not None:  # record each sample once, whichever subscription brings it
            key = sample_key(data, info)
            if key in entry.recent:
                return
            entry.recent[key] = None
            if len(entry.recent) > DEDUPLICATION_WINDOW:
                entry.recent.popitem(last=False)
        if topic not in self.in_bag:  # a pre-configured topic: its publishers' offers are known now
            try:
                self.add_to_bag(topic, entry.msgtype, self.get_publishers_info_by_topic(topic))
            except (OSError, BagError) as err:
                self.stop_on_write_error(err)
                return
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
