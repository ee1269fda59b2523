"""Recorder node over real DDS: crash safety (SIGKILL), clean close (SIGTERM/SIGINT), discovery and QoS."""
from __future__ import annotations

import signal
import time

import pytest
import yaml

import bag_fixtures as bf
from liquid_control.bags.reader import BagReader
from liquid_control.bags.writer import mcap_has_footer, repair_bag

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

TOPIC = "/rec_test/cmd_vel"  # each test appends its own suffix: a killed recorder stays in DDS discovery
DISCOVERY_TIMEOUT_S = 30.0  # DDS discovery is slow on a loaded 2-core machine


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    node = rclpy.create_node("recorder_test")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


class RecorderCounts:
    """What the recorder says it received, from its 1 Hz /diagnostics (proof of delivery across processes).

    Waiting on this instead of a fixed sleep matters on a loaded machine: a reliable
    publisher can see the recorder's subscription long before the recorder has
    discovered the publisher and taken its messages.
    """

    def __init__(self, node) -> None:
        self.counts: dict[str, int] = {}
        self.node = node
        self.subscription = node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "recorder":
                for item in status.values:
                    if item.key.startswith("messages "):
                        self.counts[item.key[len("messages "):]] = int(item.value)

    def close(self) -> None:
        self.node.destroy_subscription(self.subscription)


def start_recorder(tmp_path, bag, topic: str, *extra: str):
    return bf.cli_process("record", "-o", str(bag), "--topics", topic, "--types", f"{topic}:={bf.TWIST_STAMPED}",
                          *extra, log_path=tmp_path / f"{bag.name}.log")


class NumberedPublisher:
    """Publishes TwistStamped with linear.x = 0, 1, 2, ... and remembers when each went out."""

    def __init__(self, node, topic: str) -> None:
        self.node = node
        self.publisher = node.create_publisher(TwistStamped, topic, 100)
        self.sent: list[float] = []  # monotonic send time of message i

    def publish(self, count: int, period_s: float = 0.01) -> None:
        for _ in range(count):
            msg = TwistStamped()
            msg.twist.linear.x = float(len(self.sent))
            self.publisher.publish(msg)
            self.sent.append(time.monotonic())
            time.sleep(period_s)

    def close(self) -> None:
        self.node.destroy_publisher(self.publisher)


def test_sigkill_keeps_everything_up_to_the_last_second(tmp_path, ros):
    bag = tmp_path / "killed"
    topic = TOPIC + "_killed"
    process = start_recorder(tmp_path, bag, topic)
    counts = RecorderCounts(ros)
    publisher = NumberedPublisher(ros, topic)
    try:
        with bf.Spinner(ros):
            assert bf.wait_until(lambda: publisher.publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S), \
                (tmp_path / "killed.log").read_text()
            # Publish until the recorder reports receiving, then 2.5 s more, then kill it.
            start = time.monotonic()
            while counts.counts.get(topic, 0) == 0 and time.monotonic() - start < DISCOVERY_TIMEOUT_S:
                publisher.publish(5, period_s=0.02)
            assert counts.counts.get(topic, 0) > 0, (tmp_path / "killed.log").read_text()
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                publisher.publish(5, period_s=0.02)
            kill_time = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        bf.stop_process(process)
        counts.close()
        publisher.close()
    sent = publisher.sent
    mcap = next(bag.glob("*.mcap"))
    assert not mcap_has_footer(mcap)  # killed: no summary was written
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9 and metadata["message_count"] > 0  # refreshed while recording

    with BagReader(bag) as reader:
        assert reader.repaired
        received = [int(sample.command[0]) for sample in reader.commands()]
    assert received == list(range(len(received)))  # a gap-free prefix of what was sent
    # Flush period 1 s, flush timer every 0.1 s: everything sent 1.25 s before the kill is on disk.
    must_have = sum(1 for t in sent if t <= kill_time - 1.25)
    assert must_have > 20 and len(received) >= must_have, (len(received), must_have, len(sent))
    assert metadata["message_count"] <= len(received)  # metadata never claims more than the file holds

    result = repair_bag(bag)
    assert result.messages == len(received) and (bag / f"{mcap.name}.truncated").exists()
    assert mcap_has_footer(mcap)
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:  # rosbags needs the summary: proves the repair
        assert reader.message_count == len(received)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_the_bag_cleanly(tmp_path, ros, signum):
    bag = tmp_path / f"closed_{signum.name}"
    topic = f"{TOPIC}_{signum.name.lower()}"
    # Flush period far beyond the test: only the close on the signal can write the messages.
    process = start_recorder(tmp_path, bag, topic, "--compress", "--flush-period", "10")
    counts = RecorderCounts(ros)
    publisher = NumberedPublisher(ros, topic)
    try:
        with bf.Spinner(ros):
            assert bf.wait_until(lambda: publisher.publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S)
            publisher.publish(30)
            assert bf.wait_until(lambda: counts.counts.get(topic) == 30, DISCOVERY_TIMEOUT_S), counts.counts
            assert yaml.safe_load((bag / "metadata.yaml").read_text())[
                "rosbag2_bagfile_information"]["message_count"] == 0  # nothing flushed yet
            process.send_signal(signum)
            assert process.wait(timeout=15) == 0
    finally:
        bf.stop_process(process)
        counts.close()
        publisher.close()
    mcap = next(bag.glob("*.mcap"))
    assert mcap_has_footer(mcap)
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["message_count"] == 30
    assert metadata["topics_with_message_count"][0]["topic_metadata"]["type"] == bf.TWIST_STAMPED
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(mcap, "rb") as handle:  # the mcap reader + mcap-ros2-support read what we wrote
        decoded = [m.twist.linear.x for *_, m in make_reader(handle, decoder_factories=[DecoderFactory()])
                   .iter_decoded_messages()]
    assert decoded == [float(i) for i in range(30)]
    with BagReader(bag) as reader:
        assert not reader.repaired and reader.command_topic == topic


def test_record_all_follows_publisher_qos_and_skips_unknown_types(tmp_path, ros):
    from liquid_control.nodes.recorder_node import RecorderNode

    bag = tmp_path / "all"
    recorder = RecorderNode([Parameter("output", value=str(bag)), Parameter("discovery_period_s", value=0.1)])
    publisher = ros.create_publisher(Image, "/rec_test/image", qos_profile_sensor_data)  # best effort
    try:
        with bf.Spinner(recorder):
            assert bf.wait_until(lambda: "/rec_test/image" in recorder.subscriptions_by_topic, DISCOVERY_TIMEOUT_S)
            assert bf.wait_until(lambda: publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S)
            for i in range(5):
                publisher.publish(Image(height=1, width=2, encoding="mono8", step=2, data=bytes([i, 255 - i])))
                time.sleep(0.05)
            assert bf.wait_until(lambda: recorder.counts["/rec_test/image"] == 5, 5.0)
    finally:
        recorder.close()
        recorder.destroy_node()
        ros.destroy_publisher(publisher)
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = {t["topic_metadata"]["name"]: t for t in metadata["topics_with_message_count"]}
    assert "/rosout" not in topics and "/parameter_events" not in topics
    assert topics["/rec_test/image"]["topic_metadata"]["offered_qos_profiles"][0]["reliability"] == "best_effort"
    with BagReader(bag) as reader:
        frames = list(reader.images())
    assert [f.image[0, 1, 0] for f in frames] == [255, 254, 253, 252, 251]


def test_bad_parameters_and_unknown_types(tmp_path, ros):
    from liquid_control.nodes.recorder_node import RecorderNode

    with pytest.raises(ValueError, match="'types'.*not of the form"):
        RecorderNode([Parameter("output", value=str(tmp_path / "a")),
                      Parameter("types", Parameter.Type.STRING_ARRAY, ["/x=std_msgs/msg/String"])])
    recorder = RecorderNode([Parameter("output", value=str(tmp_path / "b")),
                             Parameter("topics", Parameter.Type.STRING_ARRAY, ["/custom"]),
                             Parameter("types", Parameter.Type.STRING_ARRAY, ["/custom:=acme_msgs/msg/Thing"])])
    try:
        assert "/custom" in recorder.refused and not recorder.subscriptions_by_topic  # warned, not crashed
    finally:
        recorder.close()
        recorder.destroy_node()
    from liquid_control.bags import BagError

    with pytest.raises(BagError, match="already exists"):
        RecorderNode([Parameter("output", value=str(tmp_path / "b"))])


def test_flushes_while_simulated_time_stands_still(tmp_path, ros):
    """use_sim_time with no /clock (a crashed simulator): the flush timer still runs on the steady clock."""
    from liquid_control.nodes.recorder_node import RecorderNode

    bag = tmp_path / "sim_time"
    topic = TOPIC + "_sim_time"
    recorder = RecorderNode([Parameter("output", value=str(bag)), Parameter("use_sim_time", value=True),
                             Parameter("flush_period_s", value=0.3),
                             Parameter("topics", Parameter.Type.STRING_ARRAY, [topic]),
                             Parameter("types", Parameter.Type.STRING_ARRAY, [f"{topic}:={bf.TWIST_STAMPED}"])])
    publisher = NumberedPublisher(ros, topic)
    try:
        with bf.Spinner(recorder):
            assert bf.wait_until(lambda: publisher.publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S)
            assert bf.wait_until(lambda: (publisher.publish(1), recorder.counts[topic] > 0)[1], DISCOVERY_TIMEOUT_S)
            sent = len(publisher.sent)
            assert bf.wait_until(lambda: recorder.counts[topic] == sent, 5.0)
            # The bag is never closed here: only the periodic flush can put the messages on disk.
            assert bf.wait_until(lambda: yaml.safe_load((bag / "metadata.yaml").read_text())[
                "rosbag2_bagfile_information"]["message_count"] == sent, 3.0)
    finally:
        recorder.close()
        recorder.destroy_node()
        publisher.close()


def shipped_recorder_parameters(repo_root) -> list:
    """config/recorder.yaml as parameter overrides (what `--params-file` gives the node)."""
    with open(repo_root / "config" / "recorder.yaml") as handle:
        values = yaml.safe_load(handle)["recorder"]["ros__parameters"]
    return [Parameter(name, value=value) for name, value in values.items()]


@pytest.mark.parametrize("setup", ["subscriber_first", "shipped_yaml"])
def test_best_effort_publisher_appearing_after_the_recorder_is_recorded(tmp_path, ros, repo_root, setup):
    """The recorder starts before the best-effort image publisher exists. subscriber_first: only a
    subscriber (e.g. perception) puts the topic in the graph; shipped_yaml: config/recorder.yaml,
    whose `types` pre-declares /camera/image_raw. Either way, the images must be recorded."""
    from liquid_control.nodes.recorder_node import RecordedTopic, RecorderNode

    bag = tmp_path / setup
    if setup == "shipped_yaml":
        topic = "/camera/image_raw"
        parameters = shipped_recorder_parameters(repo_root)
    else:
        topic = "/rec_test/late_image"
        parameters = [Parameter("topics", Parameter.Type.STRING_ARRAY, [topic])]
    parameters += [Parameter("output", value=str(bag)), Parameter("discovery_period_s", value=0.1)]
    consumer = ros.create_subscription(Image, topic, lambda msg: None, qos_profile_sensor_data)
    recorder = RecorderNode(parameters)
    publisher = None
    try:
        with bf.Spinner(recorder):
            if setup == "subscriber_first":  # the recorder has seen the topic (type known), no publisher yet
                assert bf.wait_until(lambda: topic in dict(recorder.get_topic_names_and_types()), DISCOVERY_TIMEOUT_S)
                time.sleep(0.5)  # several discovery periods
                assert topic not in recorder.subscriptions_by_topic  # waits for a publisher instead of guessing
            else:
                entry: RecordedTopic = recorder.subscriptions_by_topic[topic]  # pre-declared: subscribed at once
                assert entry.provisional and entry.qos.reliability.name == "RELIABLE"  # for reliable publishers
            publisher = ros.create_publisher(Image, topic, qos_profile_sensor_data)  # best effort, like the sim
            assert bf.wait_until(lambda: publisher.get_subscription_count() >= 2, DISCOVERY_TIMEOUT_S)
            assert bf.wait_until(lambda: topic in recorder.subscriptions_by_topic
                                 and not recorder.subscriptions_by_topic[topic].provisional, DISCOVERY_TIMEOUT_S)
            assert recorder.subscriptions_by_topic[topic].qos.reliability.name == "BEST_EFFORT"
            time.sleep(0.3)  # the recorder's side of the match
            for i in range(5):
                publisher.publish(Image(height=1, width=2, encoding="mono8", step=2, data=bytes([i, 255 - i])))
                time.sleep(0.05)
            assert bf.wait_until(lambda: recorder.counts.get(topic) == 5, 5.0), recorder.counts
    finally:
        recorder.close()
        recorder.destroy_node()
        ros.destroy_subscription(consumer)
        if publisher is not None:
            ros.destroy_publisher(publisher)
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = {t["topic_metadata"]["name"]: t for t in metadata["topics_with_message_count"]}
    assert topics[topic]["message_count"] == 5
    assert [q["reliability"] for q in topics[topic]["topic_metadata"]["offered_qos_profiles"]] == ["best_effort"]
    with BagReader(bag, image_topic=topic) as reader:
        assert [f.image[0, 1, 0] for f in reader.images()] == [255, 254, 253, 252, 251]


def test_pre_declared_topic_keeps_every_message_through_qos_changes(tmp_path, ros):
    """Pre-declared type, no publisher yet. A reliable publisher then sends at 100 Hz: recorded from its
    very first message, in order. Then a best-effort publisher joins, which the reliable subscription
    cannot serve: the recorder re-subscribes best effort (the reliable one records until it is retired)
    and records both publishers, each message once."""
    from liquid_control.nodes.recorder_node import RETIRE_AFTER_S, RecorderNode

    bag = tmp_path / "switch"
    topic = TOPIC + "_switch"
    recorder = RecorderNode([Parameter("output", value=str(bag)), Parameter("discovery_period_s", value=0.1),
                             Parameter("topics", Parameter.Type.STRING_ARRAY, [topic]),
                             Parameter("types", Parameter.Type.STRING_ARRAY, [f"{topic}:={bf.TWIST_STAMPED}"])])
    reliable = NumberedPublisher(ros, topic)  # reliable, depth 100
    best_effort = None
    try:
        with bf.Spinner(recorder):
            entry = recorder.subscriptions_by_topic[topic]
            assert bf.wait_until(lambda: reliable.publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S)
            end = time.monotonic() + DISCOVERY_TIMEOUT_S
            while time.monotonic() < end and (entry.provisional or recorder.counts[topic] == 0):
                reliable.publish(5)
            assert len(entry.subscriptions) == 1 and entry.qos.reliability.name == "RELIABLE", recorder.counts
            before_best_effort = len(reliable.sent)
            best_effort = ros.create_publisher(TwistStamped, topic, qos_profile_sensor_data)
            end = time.monotonic() + DISCOVERY_TIMEOUT_S
            while time.monotonic() < end and (entry.qos.reliability.name != "BEST_EFFORT"
                                              or best_effort.get_subscription_count() == 0):
                reliable.publish(5)
            assert entry.qos.reliability.name == "BEST_EFFORT", recorder.counts
            time.sleep(0.3)  # the recorder's side of the best-effort match
            for i in range(20):
                reliable.publish(1)
                message = TwistStamped()
                message.twist.linear.x = 1000.0 + i
                best_effort.publish(message)
            end = time.monotonic() + RETIRE_AFTER_S + 5  # past the old one's retirement too
            while time.monotonic() < end and len(entry.subscriptions) > 1:
                reliable.publish(5)
            reliable.publish(20)
            wait_until_stable(lambda: recorder.counts[topic])
    finally:
        recorder.close()
        recorder.destroy_node()
        reliable.close()
        if best_effort is not None:
            ros.destroy_publisher(best_effort)
    with BagReader(bag) as reader:
        received = [int(sample.command[0]) for sample in reader.commands()]
    from_reliable = [x for x in received if x < 1000]
    # Every message from the very first one, each once: nothing was lost or doubled by the switch ...
    assert sorted(from_reliable) == list(range(len(reliable.sent))), from_reliable
    # ... and in order while one subscription served the reliable publisher.
    assert from_reliable[:before_best_effort] == list(range(before_best_effort))
    assert sorted(x for x in received if x >= 1000) == list(range(1000, 1020))
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    (recorded,) = metadata["topics_with_message_count"]
    assert [q["reliability"] for q in recorded["topic_metadata"]["offered_qos_profiles"]] == ["reliable"]
    assert len(received) == len(set(received))


def wait_until_stable(value, quiet_s: float = 0.5, timeout_s: float = 5.0) -> None:
    """Wait until value() has not changed for quiet_s (the last messages have arrived)."""
    last, since, deadline = value(), time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        if (current := value()) != last:
            last, since = current, time.monotonic()
