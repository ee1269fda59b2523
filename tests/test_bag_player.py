"""Live replay over real DDS: timing, rate, remap, /clock, start offset, loop; record -> replay -> record."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from mcap.writer import Writer as RawMcapWriter

import bag_fixtures as bf
from liquid_control.bags.reader import BagReader
from liquid_control.bags.writer import BagWriter

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

DISCOVERY_TIMEOUT_S = 30.0
# After the player's publishers see their subscribers, the subscribers may not yet have
# discovered the publishers (asymmetric DDS discovery on a loaded machine): give them this long.
SETTLE_S = "1.0"
BAG_START_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    node = rclpy.create_node("player_test")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


class Collector:
    """Subscribes to topics and stores (monotonic arrival time, message) per topic."""

    def __init__(self, node, topics: dict[str, type]) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[float, object]]] = {t: [] for t in topics}
        self.subscriptions = [node.create_subscription(cls, topic, lambda m, t=topic: self.on(t, m), 100)
                              for topic, cls in topics.items()]
        self.node = node

    def on(self, topic: str, msg: object) -> None:
        with self.lock:
            self.received[topic].append((time.monotonic(), msg))

    def get(self, topic: str) -> list[tuple[float, object]]:
        with self.lock:
            return list(self.received[topic])

    def close(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)


def write_numbered_bag(path, count: int = 10, period_ns: int = 100_000_000):
    """/cmd_vel TwistStamped with linear.x = i every period, one image 50 ms in, and a recorded
    /clock saying 1 s (which --clock must not replay: its /clock comes from bag time)."""
    rgb = bf.random_rgb(9, 13)
    image, _ = bf.image_msg(BAG_START_NS, rgb, "rgb8")
    with BagWriter(path) as writer:
        writer.add_topic("/cmd_vel", bf.TWIST_STAMPED)
        writer.add_topic("/camera/image_raw", bf.IMAGE)
        writer.add_topic("/clock", "rosgraph_msgs/msg/Clock")
        writer.write("/clock", BAG_START_NS + 10_000_000, bf.TYPESTORE.serialize_cdr(
            bf.T["rosgraph_msgs/msg/Clock"](clock=bf.T["builtin_interfaces/msg/Time"](sec=1, nanosec=0)),
            "rosgraph_msgs/msg/Clock").tobytes())
        for i in range(count):
            entry = bf.Entry("/cmd_vel", bf.TWIST_STAMPED, BAG_START_NS + i * period_ns,
                             bf.twist_stamped_msg(BAG_START_NS + i * period_ns, [float(i), 0.0, 0.0, 0.0]))
            writer.write(entry.topic, entry.log_time_ns, bf.cdr(entry))
            if i == 0:
                writer.write("/camera/image_raw", BAG_START_NS + 50_000_000,
                             bf.cdr(bf.Entry("/camera/image_raw", bf.IMAGE, 0, image)))
    return rgb


def test_replay_timing_rate_remap_and_clock(tmp_path, ros):
    bag = tmp_path / "numbered"
    rgb = write_numbered_bag(bag)
    collector = Collector(ros, {"/play_test/cmd": TwistStamped, "/play_test/image": Image, "/clock": Clock})
    process = bf.cli_process("replay", str(bag), "--rate", "2", "--remap", "/cmd_vel:=/play_test/cmd",
                             "camera/image_raw:=/play_test/image", "--clock", "--clock-rate", "50",
                             "--wait-for-subscribers", str(DISCOVERY_TIMEOUT_S), "--delay", SETTLE_S,
                             log_path=tmp_path / "player.log")
    try:
        with bf.Spinner(ros):
            assert process.wait(timeout=DISCOVERY_TIMEOUT_S + 15) == 0, (tmp_path / "player.log").read_text()
            time.sleep(0.2)
    finally:
        bf.stop_process(process)
        collector.close()
    commands = collector.get("/play_test/cmd")
    assert [int(m.twist.linear.x) for _, m in commands] == list(range(10))
    arrivals = np.array([t for t, _ in commands])
    # 100 ms apart in the bag, rate 2 -> 50 ms apart live.
    assert np.median(np.diff(arrivals)) == pytest.approx(0.050, abs=0.010)
    assert arrivals[-1] - arrivals[0] == pytest.approx(0.450, abs=0.080)
    ((_, image),) = collector.get("/play_test/image")
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(9, 13, 3), rgb)
    clock_ns = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for _, m in collector.get("/clock")]
    assert len(clock_ns) >= 10 and clock_ns == sorted(clock_ns)
    assert BAG_START_NS <= clock_ns[0] and clock_ns[-1] <= BAG_START_NS + 900_000_000


def test_start_offset_and_loop(tmp_path, ros):
    bag = tmp_path / "numbered"
    write_numbered_bag(bag)
    collector = Collector(ros, {"/loop_test/cmd": TwistStamped})
    process = bf.cli_process("replay", str(bag), "--rate", "4", "--start-offset", "0.55", "--loop",
                             "--topics", "/cmd_vel", "--remap", "/cmd_vel:=/loop_test/cmd",
                             "--wait-for-subscribers", str(DISCOVERY_TIMEOUT_S), "--delay", SETTLE_S,
                             log_path=tmp_path / "player.log")
    try:
        with bf.Spinner(ros):
            assert bf.wait_until(lambda: len(collector.get("/loop_test/cmd")) >= 10, DISCOVERY_TIMEOUT_S + 10), \
                (tmp_path / "player.log").read_text()
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
    finally:
        bf.stop_process(process)
        collector.close()
    values = [int(m.twist.linear.x) for _, m in collector.get("/loop_test/cmd")]
    assert values[:10] == [6, 7, 8, 9] * 2 + [6, 7]  # skips 0.55 s of bag, then starts over


def test_round_trip_record_replay_record(tmp_path, ros):
    """Published live -> recorded -> replayed -> recorded again: identical bytes, same timing."""
    topics = ["/rt/cmd_vel", "/rt/image_raw"]
    types = [f"/rt/cmd_vel:={bf.TWIST_STAMPED}", f"/rt/image_raw:={bf.IMAGE}"]
    first, second = tmp_path / "first", tmp_path / "second"

    recorder = bf.cli_process("record", "-o", str(first), "--topics", *topics, "--types", *types,
                              log_path=tmp_path / "first.log")
    command_pub = ros.create_publisher(TwistStamped, topics[0], 100)
    image_pub = ros.create_publisher(Image, topics[1], 100)
    try:
        assert bf.wait_until(lambda: command_pub.get_subscription_count() > 0
                             and image_pub.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S)
        for i in range(15):
            command = TwistStamped()
            command.twist.linear.x, command.twist.angular.z = float(i), -0.1 * i
            command.header.stamp.sec = i
            command_pub.publish(command)
            image_pub.publish(Image(height=3, width=5, encoding="bgr8", step=15,
                                    data=bf.random_rgb(3, 5, seed=i).tobytes()))
            time.sleep(0.04)
        time.sleep(0.3)
        recorder.send_signal(signal.SIGINT)
        assert recorder.wait(timeout=15) == 0
    finally:
        bf.stop_process(recorder)
        ros.destroy_publisher(command_pub)
        ros.destroy_publisher(image_pub)

    recorder = bf.cli_process("record", "-o", str(second), "--topics", *topics, "--types", *types,
                              log_path=tmp_path / "second.log")
    player = bf.cli_process("replay", str(first), "--wait-for-subscribers", str(DISCOVERY_TIMEOUT_S),
                            "--delay", SETTLE_S, log_path=tmp_path / "player.log")
    try:
        assert player.wait(timeout=DISCOVERY_TIMEOUT_S + 15) == 0, (tmp_path / "player.log").read_text()
        time.sleep(0.3)
        recorder.send_signal(signal.SIGINT)
        assert recorder.wait(timeout=15) == 0
    finally:
        bf.stop_process(player)
        bf.stop_process(recorder)

    def contents(bag):
        with BagReader(bag) as reader:
            return {t: [(m.log_time_ns, m.data) for m in reader.messages([t])] for t in topics}

    original, replayed = contents(first), contents(second)
    for topic in topics:
        assert len(original[topic]) == 15
        assert [d for _, d in replayed[topic]] == [d for _, d in original[topic]]  # byte-identical CDR
        gaps_original = np.diff([t for t, _ in original[topic]]) / 1e9
        gaps_replayed = np.diff([t for t, _ in replayed[topic]]) / 1e9
        assert np.abs(gaps_replayed - gaps_original).max() < 0.025
    with BagReader(second) as reader:
        samples = list(reader.commands())
        first_log_time = next(reader.messages([topics[0]])).log_time_ns
    assert [int(command[0]) for _, command in samples] == list(range(15))
    # Header stamps survive the trip; the zero stamp falls back to the log time.
    assert [c.stamp_ns for c in samples[1:3]] == [1_000_000_000, 2_000_000_000]
    assert samples[0].stamp_ns == first_log_time


def test_bad_inputs(tmp_path, ros):
    from liquid_control.bags import BagError
    from liquid_control.nodes.bag_player_node import BagPlayerNode

    with pytest.raises(ValueError, match="'bag' is empty"):
        BagPlayerNode([])
    with pytest.raises(BagError, match="does not exist"):
        BagPlayerNode([Parameter("bag", value=str(tmp_path / "absent"))])
    bag = tmp_path / "numbered"
    write_numbered_bag(bag, count=2)
    with pytest.raises(ValueError, match="'remap'.*not of the form"):
        BagPlayerNode([Parameter("bag", value=str(bag)), Parameter("remap", Parameter.Type.STRING_ARRAY, ["/a"])])
    unknown = tmp_path / "unknown.mcap"
    with open(unknown, "wb") as handle:
        writer = RawMcapWriter(handle)
        writer.start(profile="ros2", library="test")
        channel = writer.register_channel("/thing", "cdr", writer.register_schema("acme_msgs/msg/Thing", "ros2msg",
                                                                                  b"int32 a"))
        writer.add_message(channel, 1, b"\x00\x01\x00\x00\x05\x00\x00\x00", 1)
        writer.finish()
    with pytest.raises(ValueError, match="nothing to play"):
        BagPlayerNode([Parameter("bag", value=str(unknown))])
    # The CLI reports a bad bag as an error exit, not a traceback.
    process = bf.cli_process("replay", str(tmp_path / "absent"), log_path=tmp_path / "bad.log")
    try:
        assert process.wait(timeout=30) == 1
    finally:
        bf.stop_process(process)
    log = (tmp_path / "bad.log").read_text()
    assert "does not exist" in log and "Traceback" not in log


def played_names(bag, parameters) -> dict[str, str]:
    """bag topic -> the name the player publishes it under (the node is closed before it plays anything)."""
    from liquid_control.nodes.bag_player_node import BagPlayerNode

    player = BagPlayerNode([Parameter("bag", value=str(bag)), Parameter("delay_s", value=60.0), *parameters])
    try:
        return {topic: publisher.topic_name for topic, publisher in player.publishers_by_topic.items()}
    finally:
        player.close()
        player.destroy_node()


def test_recorded_outputs_of_the_live_graph_are_renamed(tmp_path, ros, repo_root):
    """A demo bag's /cmd_vel, /features and /diagnostics never come back under their own names by default:
    not from config/bag_player.yaml, not from `liquid-control replay`, not from the node's defaults."""
    import argparse

    import yaml

    from liquid_control.commands import replay

    bag = tmp_path / "demo"
    features = bf.T["sensor_msgs/msg/Image"](header=bf._header(0), height=1, width=2, encoding="32FC1",
                                             is_bigendian=0, step=8, data=np.zeros(8, np.uint8))
    status = bf.TYPESTORE.serialize_cdr(bf.T["diagnostic_msgs/msg/DiagnosticArray"](header=bf._header(0), status=[]),
                                        "diagnostic_msgs/msg/DiagnosticArray").tobytes()
    with BagWriter(bag) as writer:
        for topic, msgtype in [("/cmd_vel", bf.TWIST_STAMPED), ("/features", bf.IMAGE), ("/camera/image_raw", bf.IMAGE),
                               ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")]:
            writer.add_topic(topic, msgtype)
        writer.write("/cmd_vel", BAG_START_NS, bf.cdr(bf.Entry("/cmd_vel", bf.TWIST_STAMPED, 0,
                                                             bf.twist_stamped_msg(BAG_START_NS, [0.0] * 4))))
        writer.write("/features", BAG_START_NS, bf.cdr(bf.Entry("/features", bf.IMAGE, 0, features)))
        writer.write("/diagnostics", BAG_START_NS, status)
    renamed = {"/cmd_vel": "/recorded/cmd_vel", "/features": "/recorded/features",
               "/diagnostics": "/recorded/diagnostics", "/camera/image_raw": "/camera/image_raw"}

    with open(repo_root / "config" / "bag_player.yaml") as handle:
        shipped = yaml.safe_load(handle)["bag_player"]["ros__parameters"]
    yaml_parameters = [Parameter(k, value=v) for k, v in shipped.items() if k not in ("bag", "delay_s")]
    assert played_names(bag, yaml_parameters) == renamed
    assert played_names(bag, []) == renamed  # ros2 run without a parameter file
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    cli = [p for p in replay.parameter_overrides(parser.parse_args([str(bag)])) if p.name not in ("bag", "delay_s")]
    assert played_names(bag, cli) == renamed

    # Opting out, and a remap that overrides the prefix for its topic.
    args = parser.parse_args([str(bag), "--recorded-prefix", "", "--remap", "/features:=/old/features"])
    cli = [p for p in replay.parameter_overrides(args) if p.name not in ("bag", "delay_s")]
    assert played_names(bag, cli) == {**{t: t for t in renamed}, "/features": "/old/features"}
    with pytest.raises(ValueError, match="'recorded_prefix'.*absolute"):
        played_names(bag, [Parameter("recorded_prefix", value="recorded")])
