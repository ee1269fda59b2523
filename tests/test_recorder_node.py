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


def start_recorder(tmp_path, bag, topic: str, *extra: str):
    return bf.cli_process("record", "-o", str(bag), "--topics", topic, "--types", f"{topic}:={bf.TWIST_STAMPED}",
                          *extra, log_path=tmp_path / f"{bag.name}.log")


def publish_numbered(publisher, count: int | None, duration_s: float | None, period_s: float) -> list[float]:
    """Publish TwistStamped with linear.x = 0, 1, 2, ...; returns each message's monotonic send time."""
    sent: list[float] = []
    end = time.monotonic() + (duration_s or 1e9)
    while (count is None or len(sent) < count) and time.monotonic() < end:
        msg = TwistStamped()
        msg.twist.linear.x = float(len(sent))
        publisher.publish(msg)
        sent.append(time.monotonic())
        time.sleep(period_s)
    return sent


def test_sigkill_keeps_everything_up_to_the_last_second(tmp_path, ros):
    bag = tmp_path / "killed"
    topic = TOPIC + "_killed"
    process = start_recorder(tmp_path, bag, topic)
    try:
        publisher = ros.create_publisher(TwistStamped, topic, 100)
        assert bf.wait_until(lambda: publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S), \
            (tmp_path / "killed.log").read_text()
        sent = publish_numbered(publisher, None, duration_s=2.5, period_s=0.02)
        kill_time = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        bf.stop_process(process)
        ros.destroy_publisher(publisher)
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
    process = start_recorder(tmp_path, bag, topic, "--compress")
    try:
        publisher = ros.create_publisher(TwistStamped, topic, 100)
        assert bf.wait_until(lambda: publisher.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S)
        publish_numbered(publisher, 30, None, period_s=0.01)
        time.sleep(0.5)  # let the last messages arrive
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0
    finally:
        bf.stop_process(process)
        ros.destroy_publisher(publisher)
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
