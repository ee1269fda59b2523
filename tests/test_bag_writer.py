"""BagWriter: rosbag2 MCAP readable by mcap + mcap-ros2-support and rosbags, periodic flush, repair, errors."""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

import bag_fixtures as bf
from liquid_control.bags import BagError
from liquid_control.bags.reader import BagReader
from liquid_control.bags.writer import (BagWriter, BagWriterConfig, default_qos, mcap_has_footer, message_definition,
                                        repair_bag)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metadata_of(bag) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def write_standard(bag, compression="none", clock=None):
    entries = bf.standard_entries(n=5, height=7, width=9)
    with BagWriter(bag, BagWriterConfig(compression=compression), **({"clock": clock} if clock else {})) as writer:
        writer.add_topic("/camera/image_raw", bf.IMAGE, [default_qos("best_effort", depth=5)])
        writer.add_topic("/cmd_vel", bf.TWIST_STAMPED, [default_qos("reliable", depth=1)])
        for entry in entries:
            writer.write(entry.topic, entry.log_time_ns, bf.cdr(entry))
    return entries


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_readable_by_mcap_rosbags_and_our_reader(tmp_path, compression):
    bag = tmp_path / "bag"
    entries = write_standard(bag, compression)
    mcap = bag / "bag_0.mcap"
    assert mcap_has_footer(mcap)

    with open(mcap, "rb") as handle:  # mcap + mcap-ros2-support (the reference MCAP stack)
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        decoded = [(channel.topic, message.log_time, msg)
                   for _, channel, message, msg in reader.iter_decoded_messages(log_time_order=True)]
        summary = reader.get_summary()
    assert header.profile == "ros2"
    assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
    assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
    assert {c.compression for c in summary.chunk_indexes} == {"" if compression == "none" else compression}
    assert [(t, lt) for t, lt, _ in decoded] == [(e.topic, e.log_time_ns) for e in entries]
    image = decoded[0][2]
    assert (image.width, image.height, image.encoding) == (9, 7, "rgb8")
    assert bytes(image.data) == entries[0].expected.tobytes()

    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:  # rosbags reads the directory through metadata.yaml
        assert reader.message_count == 10
        cdr = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert cdr == [(e.topic, e.log_time_ns, bf.cdr(e)) for e in entries]
    assert qos["/camera/image_raw"].reliability.name == "BEST_EFFORT" and qos["/cmd_vel"].depth == 1

    with BagReader(bag) as reader:
        frames = list(reader.images())
    np.testing.assert_array_equal(frames[4].image, entries[8].expected)


def test_metadata_yaml_is_rosbag2_version_9(tmp_path):
    bag = tmp_path / "bag"
    entries = write_standard(bag)
    info = metadata_of(bag)
    assert info["version"] == 9 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == ["bag_0.mcap"] and info["files"][0]["path"] == "bag_0.mcap"
    first, last = entries[0].log_time_ns, entries[-1].log_time_ns
    assert info["starting_time"]["nanoseconds_since_epoch"] == first
    assert info["duration"]["nanoseconds"] == last - first
    assert info["message_count"] == 10 and info["files"][0]["message_count"] == 10
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert topics["/cmd_vel"]["message_count"] == 5
    meta = topics["/camera/image_raw"]["topic_metadata"]
    assert meta["type"] == bf.IMAGE and meta["serialization_format"] == "cdr"
    assert meta["type_description_hash"] == bf.TYPESTORE.hash_rihs01(bf.IMAGE)
    assert meta["offered_qos_profiles"][0]["reliability"] == "best_effort"  # v9: a list, not a YAML string
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:  # rosbags' strict metadata parser
        assert reader.duration == last - first + 1 and reader.message_count == 10


def test_flushes_at_least_once_per_period_while_open(tmp_path):
    clock = ManualClock()
    bag = tmp_path / "live"
    writer = BagWriter(bag, BagWriterConfig(flush_period_s=1.0), clock=clock)
    writer.add_topic("/cmd_vel", bf.TWIST)
    payload = bf.cdr(bf.Entry("/cmd_vel", bf.TWIST, 0, bf.twist_msg([1.0, 0.0, 0.0, 0.0])))

    def on_disk() -> int:
        """Messages a reader finds in the file as it is now (copied, then repaired by the reader)."""
        copy = tmp_path / f"copy{clock.now}"
        copy.mkdir()
        shutil.copy(writer.mcap_path, copy / "x.mcap")
        try:
            with BagReader(copy / "x.mcap") as reader:
                return reader.message_count
        except BagError:
            return 0

    for i in range(5):
        writer.write("/cmd_vel", 100 + i, payload)
    assert on_disk() == 0 and not writer.flush_if_due()  # younger than the period: still in memory
    assert metadata_of(bag)["message_count"] == 0
    clock.now = 1.0
    assert writer.flush_if_due()  # what a recorder's timer calls in quiet periods
    assert on_disk() == 5 and metadata_of(bag)["message_count"] == 5
    writer.write("/cmd_vel", 200, payload)
    clock.now = 2.5
    writer.write("/cmd_vel", 201, payload)  # a write finding the flush due flushes itself too
    assert on_disk() == 7 and metadata_of(bag)["message_count"] == 7
    before = (bag / "metadata.yaml").stat().st_mtime_ns
    clock.now = 10.0
    assert not writer.flush_if_due()  # idle: nothing new, no disk traffic
    assert (bag / "metadata.yaml").stat().st_mtime_ns == before
    writer.close()
    writer.close()  # idempotent
    assert metadata_of(bag)["message_count"] == 7 and mcap_has_footer(writer.mcap_path)


def test_custom_type_with_explicit_definition(tmp_path):
    bag = tmp_path / "custom"
    with BagWriter(bag) as writer:
        writer.add_topic("/thing", "acme_msgs/msg/Thing", msgdef="int32 a\nstring name\n")
        writer.write("/thing", 5, b"\x00\x01\x00\x00" + (7).to_bytes(4, "little") + (4).to_bytes(4, "little")
                     + b"abc\x00")
    with BagReader(bag) as reader:
        (raw,) = list(reader.messages())
        thing = reader.deserialize(raw)
    assert (thing.a, thing.name) == (7, "abc")
    (topic,) = metadata_of(bag)["topics_with_message_count"]
    assert topic["topic_metadata"]["type_description_hash"].startswith("RIHS01_")  # computed from the text
    with pytest.raises(BagError, match="invalid message definition"):
        BagWriter(tmp_path / "bad").add_topic("/x", "acme_msgs/msg/X", msgdef="nopkg/Missing field")


def test_concurrent_writers(tmp_path):
    bag = tmp_path / "threads"
    payload = bf.cdr(bf.Entry("/a", bf.TWIST, 0, bf.twist_msg([0.0, 0.0, 0.0, 0.0])))
    with BagWriter(bag, BagWriterConfig(chunk_size_bytes=2048, flush_period_s=0.05)) as writer:
        writer.add_topic("/a", bf.TWIST)
        writer.add_topic("/b", bf.TWIST)
        threads = [threading.Thread(target=lambda t=t: [writer.write(t, i, payload) for i in range(400)])
                   for t in ("/a", "/b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with BagReader(bag) as reader:
        assert {t.name: t.message_count for t in reader.topics.values()} == {"/a": 400, "/b": 400}


def test_writer_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BagError, match="already exists and is not an empty directory"):
        BagWriter(tmp_path / "full")
    with pytest.raises(BagError, match="unknown compression 'gzip'"):
        BagWriterConfig(compression="gzip")
    with pytest.raises(BagError, match="flush_period_s must be positive"):
        BagWriterConfig(flush_period_s=0.0)
    with pytest.raises(BagError, match="unknown message type 'acme_msgs/msg/Thing'"):
        message_definition("acme_msgs/msg/Thing")
    writer = BagWriter(tmp_path / "bag")
    writer.add_topic("/a", bf.TWIST)
    with pytest.raises(BagError, match="already added"):
        writer.add_topic("/a", bf.TWIST)
    with pytest.raises(BagError, match="unknown message type"):
        writer.add_topic("/b", "acme_msgs/msg/Thing")
    with pytest.raises(BagError, match="'/c' was not added"):
        writer.write("/c", 1, b"")
    with pytest.raises(BagError, match="negative log time"):
        writer.write("/a", -1, b"")
    writer.close()
    with pytest.raises(BagError, match="already closed"):
        writer.write("/a", 1, b"")


def test_repair_bag_in_place(tmp_path):
    clock = ManualClock()
    bag = tmp_path / "bag"
    entries = bf.standard_entries(n=6, height=4, width=4)
    writer = BagWriter(bag, clock=clock)
    writer.add_topic("/camera/image_raw", bf.IMAGE)
    writer.add_topic("/cmd_vel", bf.TWIST_STAMPED)
    for i, entry in enumerate(entries):
        writer.write(entry.topic, entry.log_time_ns, bf.cdr(entry))
        if i == 5:
            clock.now = 1.0
            writer.flush_if_due()  # the first 6 messages are on disk
    writer._file.flush()  # what a SIGKILL leaves: flushed chunks, the open chunk lost, no summary
    killed = tmp_path / "killed"
    shutil.copytree(bag, killed)
    writer.close()

    complete = repair_bag(bag)
    assert complete.complete and complete.messages == -1  # already fine: untouched
    cli_copy = tmp_path / "cli_copy"
    shutil.copytree(killed, cli_copy)
    from liquid_control import cli

    assert cli.main(["record", "--repair", str(cli_copy)]) == 0 and mcap_has_footer(cli_copy / "bag_0.mcap")
    assert cli.main(["record", "--repair", str(tmp_path / "absent")]) == 2
    result = repair_bag(killed)
    assert not result.complete and result.messages == 6
    assert (killed / "bag_0.mcap.truncated").exists() and mcap_has_footer(killed / "bag_0.mcap")
    info = metadata_of(killed)
    assert info["message_count"] == 6 and info["starting_time"]["nanoseconds_since_epoch"] == entries[0].log_time_ns
    assert info["duration"]["nanoseconds"] == entries[5].log_time_ns - entries[0].log_time_ns
    from rosbags.highlevel import AnyReader

    with AnyReader([killed]) as reader:
        assert [bytes(raw) for _, _, raw in reader.messages()] == [bf.cdr(e) for e in entries[:6]]

    with pytest.raises(BagError, match="expected one .mcap file"):
        repair_bag(tmp_path)
    (tmp_path / "notmcap.mcap").write_bytes(b"hello world" * 10)
    with pytest.raises(BagError, match="is not an MCAP file"):
        repair_bag(tmp_path / "notmcap.mcap")
    with pytest.raises(BagError, match="no such bag"):
        repair_bag(tmp_path / "absent")
