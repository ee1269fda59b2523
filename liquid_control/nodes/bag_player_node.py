"""bag_player_node: replays a rosbag2 bag live, with its original timing, so the ROS graph can run on it.

Messages are published as the stored CDR bytes (rclpy `Publisher.publish(bytes)`
publishes serialized data as is), each at
    start + delay_s + (log_time - bag_start - start_offset_s) / rate
on the monotonic clock, from a playback thread (the executor stays free for
parameters and diagnostics). With `clock` true, /clock carries bag time at
`clock_rate_hz`, so nodes with use_sim_time follow the bag. The bag's copies of
what a live graph publishes itself (/cmd_vel, /features, /diagnostics) are played
under `recorded_prefix` (/recorded/cmd_vel, ...) so that they never mix with the
live policy's commands and features ("" plays them under their own names);
`remap` renames any topic ("from:=to", overrides the prefix); `topics` limits
what is played. At the end of the bag the node shuts down, or starts over when
`loop` is true.

Safety: a bag that cannot be read, or has no playable topic, stops the node at
start with the reason logged; a topic whose type is not installed is skipped
with a warning. Publishers are reliable + volatile (depth 10): they match both
reliable and best-effort subscribers.
"""
from __future__ import annotations

import threading
import time

from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock

from liquid_control.bags.reader import BagReader, ReplayTiming
from liquid_control.interfaces.topics import CLOCK, DEFAULT_QOS, LIVE_GRAPH_TOPICS, RECORDED_PREFIX
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, declare_parameters_with_ranges, make_status,
                                         message_class, qos_profile, string_list_parameter)
from liquid_control.util.timing import LoopTiming

PARAMS = [
    ParamSpec("bag", "", "bag directory or .mcap/.db3 file to play"),
    ParamSpec("recorded_prefix", RECORDED_PREFIX, "namespace under which the bag's "
              f"{', '.join(t.absolute for t in LIVE_GRAPH_TOPICS)} are played, apart from the live graph's "
              "('': their own names)"),
    ParamSpec("rate", 1.0, "playback speed factor", 0.01, 100.0),
    ParamSpec("start_offset_s", 0.0, "bag seconds skipped from the first message", 0.0, 1e9),
    ParamSpec("delay_s", 0.0, "wait (s) before the first message, e.g. for subscribers to connect", 0.0, 60.0),
    ParamSpec("wait_for_subscribers_s", 0.0, "before playing, wait up to this long (s) until every played topic "
              "has a subscriber (0: do not wait)", 0.0, 600.0),
    ParamSpec("loop", False, "start over at the end of the bag"),
    ParamSpec("clock", False, "publish /clock from bag time"),
    ParamSpec("clock_rate_hz", 100.0, "/clock publishing rate (Hz)", 1.0, 1000.0),
]


class BagPlayerNode(Node):
    def __init__(self, parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__("bag_player", parameter_overrides=parameter_overrides or [])
        self.params = declare_parameters_with_ranges(self, PARAMS)
        if not self.params["bag"]:
            raise ValueError("parameter 'bag' is empty: give the bag to play")
        only = {self.resolve_topic_name(t) for t in string_list_parameter(self, "topics", "topics to play; empty: all")}
        prefix = self.params["recorded_prefix"].rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"parameter 'recorded_prefix': {prefix!r} must be absolute (start with '/') or empty")
        self.remap: dict[str, str] = {t.absolute: prefix + t.absolute for t in LIVE_GRAPH_TOPICS} if prefix else {}
        for item in string_list_parameter(self, "remap", "topic renames, 'from:=to'"):
            source, sep, target = item.partition(":=")
            if not sep or not source or not target:
                raise ValueError(f"parameter 'remap': {item!r} is not of the form from:=to")
            self.remap[self.resolve_topic_name(source)] = self.resolve_topic_name(target)
        self.timing = ReplayTiming(self.params["rate"], self.params["start_offset_s"])
        self.reader = BagReader(self.params["bag"])
        self.publishers_by_topic = {}
        for topic, info in self.reader.topics.items():
            if only and topic not in only:
                continue
            if self.params["clock"] and self.remap.get(topic, topic) == CLOCK.absolute:
                self.get_logger().info(f"not playing the bag's {topic}: /clock comes from bag time (clock:=true)")
                continue
            try:
                cls = message_class(info.msgtype)
            except ValueError as err:
                self.get_logger().warning(f"not playing {topic}: {err}")
                continue
            self.publishers_by_topic[topic] = self.create_publisher(cls, self.remap.get(topic, topic),
                                                                    qos_profile(DEFAULT_QOS))
        if not self.publishers_by_topic:
            self.reader.close()
            raise ValueError(f"nothing to play in {self.params['bag']}: no topic left "
                             f"(bag topics: {', '.join(self.reader.topics) or 'none'})")
        self.clock_publisher = (self.create_publisher(Clock, CLOCK.name, qos_profile(CLOCK)) if self.params["clock"]
                                else None)
        self.loop_timing = LoopTiming()
        self.timing_lock = threading.Lock()
        self.published = 0
        self.loops = 0
        self.stop = threading.Event()
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0, self.publish_diagnostics)
        self.thread = threading.Thread(target=self.play, name="bag_playback", daemon=True)
        self.thread.start()
        self.get_logger().info(f"playing {self.params['bag']} ({len(self.publishers_by_topic)} topics) "
                               f"at rate {self.timing.rate}")

    def wait_for_subscribers(self) -> None:
        """Reliable delivery starts only once a publisher has matched its subscribers."""
        deadline = time.monotonic() + self.params["wait_for_subscribers_s"]
        while time.monotonic() < deadline and not self.stop.is_set():
            waiting = [t for t, p in self.publishers_by_topic.items() if p.get_subscription_count() == 0]
            if not waiting:
                return
            self.stop.wait(0.05)
        if not self.stop.is_set():
            self.get_logger().warning(f"playing although these topics have no subscriber yet: {waiting}")

    def play(self) -> None:
        try:
            if self.params["wait_for_subscribers_s"] > 0:
                self.wait_for_subscribers()
            while not self.stop.is_set():
                started = time.monotonic()
                self.play_once()
                self.loops += 1
                if not self.params["loop"]:
                    break
                # A bag whose messages share one log time would otherwise loop as fast as the CPU allows.
                self.stop.wait(max(0.0, 0.01 - (time.monotonic() - started)))
        except Exception as err:  # a corrupt message half-way: stop cleanly and say why
            self.get_logger().error(f"playback stopped: {err}")
        if not self.stop.is_set():
            self.get_logger().info(f"end of bag: {self.published} messages published")
            self.context.try_shutdown()  # ends spin_node's executor: the process exits

    def play_once(self) -> None:
        bag_start = self.reader.start_ns
        period = 1.0 / self.params["clock_rate_hz"]
        start = time.monotonic() + self.params["delay_s"]
        next_clock = time.monotonic()
        for message in self.reader.messages(list(self.publishers_by_topic),
                                            start_ns=self.timing.first_log_time_ns(bag_start)):
            due = start + self.timing.wall_delay_s(message.log_time_ns, bag_start)
            while True:
                now = time.monotonic()
                if self.clock_publisher is not None and next_clock <= min(now, due):
                    self.publish_clock(max(0, self.timing.bag_time_ns(max(0.0, next_clock - start), bag_start)))
                    next_clock += period
                    continue
                if now >= due:
                    break
                wake = min(due, next_clock) if self.clock_publisher is not None else due
                if self.stop.wait(wake - now):
                    return
            self.publishers_by_topic[message.topic].publish(message.data)
            self.published += 1
            with self.timing_lock:
                self.loop_timing.tick(time.monotonic(), expected_s=due)

    def publish_clock(self, bag_time_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(bag_time_ns, 1_000_000_000)
        self.clock_publisher.publish(msg)

    def publish_diagnostics(self) -> None:
        with self.timing_lock:
            values = self.loop_timing.summary(time.monotonic())
        values.update(published=self.published, loops=self.loops, bag=self.params["bag"])
        self.diagnostics.publish(make_status("bag_player", 0, f"{self.published} messages published", values))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
        self.reader.close()


def main(args: list[str] | None = None, parameter_overrides: list[Parameter] | None = None) -> int:
    from liquid_control.nodes.common import spin_node

    return spin_node(lambda: BagPlayerNode(parameter_overrides), args)


if __name__ == "__main__":
    raise SystemExit(main())
