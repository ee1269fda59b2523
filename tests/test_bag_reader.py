"""BagReader against bags written by rosbags (mcap, sqlite3) and by mcap + mcap-ros2-support."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer as RawMcapWriter

import bag_fixtures as bf
from liquid_control.bags import BagError
from liquid_control.bags.images import image_message_to_rgb
from liquid_control.bags.reader import BagReader, ReplayTiming
from liquid_control.bags.writer import BagWriter, BagWriterConfig


def write_bag(kind: str, path: Path, entries: list[bf.Entry]) -> Path:
    if kind == "mcap_ros2":
        return bf.write_mcap_ros2_file(path.with_suffix(".mcap"), entries)
    return bf.write_rosbags_bag(path, entries, storage=kind)


@pytest.mark.parametrize("kind", ["mcap", "sqlite3", "mcap_ros2"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_raw_images_and_commands_round_trip(tmp_path, kind, encoding):
    entries = bf.standard_entries(n=4, height=23, width=37, encoding=encoding)
    bag = write_bag(kind, tmp_path / "bag", entries)
    with BagReader(bag) as reader:
        assert reader.storage == ("sqlite3" if kind == "sqlite3" else "mcap")
        assert reader.image_topic == "/camera/image_raw" and reader.command_topic == "/cmd_vel"
        frames = list(reader.images())
        commands = list(reader.commands())
    expected_images = [e for e in entries if e.msgtype == bf.IMAGE]
    expected_commands = [e for e in entries if e.msgtype == bf.TWIST_STAMPED]
    assert len(frames) == len(expected_images) == 4
    for frame, entry in zip(frames, expected_images):
        assert frame.image.shape == (23, 37, 3) and frame.image.dtype == np.uint8
        np.testing.assert_array_equal(frame.image, entry.expected)
        assert frame.encoding == encoding
        assert frame.stamp_ns == entry.log_time_ns - 1_000_000  # header stamp, not log time
    for sample, entry in zip(commands, expected_commands):
        np.testing.assert_allclose(sample.command, entry.expected)
        assert sample.stamp_ns == entry.log_time_ns - 500_000


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("mode", ["file", "message"])
def test_rosbag2_compressed_bags(tmp_path, storage, mode):
    """rosbag2's --compression-mode file/message (zstd), as rosbags writes it."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    entries = bf.standard_entries(n=3, height=5, width=6)
    path = tmp_path / "compressed"
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.set_compression(CompressionMode.FILE if mode == "file" else CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=bf.TYPESTORE)
                       for topic, msgtype in {e.topic: e.msgtype for e in entries}.items()}
        for entry in entries:
            writer.write(connections[entry.topic], entry.log_time_ns, bf.cdr(entry))
    with BagReader(path) as reader:
        frames = list(reader.images())
        assert len(list(reader.commands())) == 3
    for frame, entry in zip(frames, [e for e in entries if e.msgtype == bf.IMAGE]):
        np.testing.assert_array_equal(frame.image, entry.expected)


def test_row_padding_and_odd_sizes(tmp_path):
    entries = []
    for i, (h, w, enc) in enumerate([(1, 1, "rgb8"), (5, 3, "bgr8"), (17, 640, "mono8"), (31, 7, "rgb8")]):
        msg, expected = bf.image_msg(10 + i, bf.random_rgb(h, w, seed=i), enc, row_padding=3)
        assert msg.step > w * (1 if enc == "mono8" else 3)
        entries.append(bf.Entry("/cam/image", bf.IMAGE, 100 + i, msg, expected))
    with BagReader(bf.write_rosbags_bag(tmp_path / "bag", entries, "sqlite3")) as reader:
        frames = list(reader.images())
    for frame, entry in zip(frames, entries):
        np.testing.assert_array_equal(frame.image, entry.expected)


@pytest.mark.parametrize("kind", ["mcap", "mcap_ros2"])
@pytest.mark.parametrize("codec,fmt", [("jpeg", None), ("png", None), ("jpeg", "jpeg"), ("png", "png")])
def test_compressed_images(tmp_path, kind, codec, fmt):
    entries = []
    for i, (h, w) in enumerate([(48, 64), (23, 37)]):
        rgb = bf.random_rgb(h, w, seed=i) // 64 * 64  # flat-ish so JPEG stays close
        msg, expected = bf.compressed_msg(1_000 + i, rgb, codec, fmt)
        entries.append(bf.Entry("/camera/image_raw/compressed", bf.COMPRESSED, 2_000 + i, msg, expected))
        if codec == "png":
            np.testing.assert_array_equal(expected, rgb)  # PNG is lossless
    with BagReader(write_bag(kind, tmp_path / "bag", entries)) as reader:
        frames = list(reader.images())
    assert [f.encoding for f in frames] == [codec, codec]
    for frame, entry in zip(frames, entries):
        np.testing.assert_array_equal(frame.image, entry.expected)


def test_topic_auto_detection_and_override(tmp_path):
    rgb = bf.random_rgb(6, 8)
    raw, raw_expected = bf.image_msg(5, rgb, "rgb8")
    comp, comp_expected = bf.compressed_msg(5, rgb, "png")
    features = bf.T[bf.IMAGE](header=raw.header, height=1, width=4, encoding="32FC1", is_bigendian=0, step=16,
                              data=np.zeros(16, np.uint8))
    entries = [
        bf.Entry("/features", bf.IMAGE, 10, features),
        bf.Entry("/features", bf.IMAGE, 11, features),
        bf.Entry("/features", bf.IMAGE, 12, features),
        bf.Entry("/camera/image_raw/compressed", bf.COMPRESSED, 10, comp, comp_expected),
        bf.Entry("/camera/image_raw", bf.IMAGE, 10, raw, raw_expected),
        bf.Entry("/drone/cmd_vel", bf.TWIST, 10, bf.twist_msg([1.0, 2.0, 3.0, 4.0])),
        bf.Entry("/other_twist", bf.TWIST_STAMPED, 10, bf.twist_stamped_msg(9, [0.0, 0.0, 0.0, 0.0])),
        bf.Entry("/other_twist", bf.TWIST_STAMPED, 11, bf.twist_stamped_msg(9, [0.0, 0.0, 0.0, 0.0])),
    ]
    bag = bf.write_rosbags_bag(tmp_path / "bag", entries, "mcap")
    with BagReader(bag) as reader:
        assert reader.image_topic == "/camera/image_raw"  # named "image", raw preferred over compressed
        assert reader.command_topic == "/drone/cmd_vel"  # "cmd_vel" preferred over more messages
        (sample,) = list(reader.commands())
        np.testing.assert_allclose(sample.command, [1, 2, 3, 4])
        assert sample.stamp_ns == 10  # Twist has no header: log time
    with BagReader(bag, image_topic="camera/image_raw/compressed", command_topic="/other_twist") as reader:
        assert reader.image_topic == "/camera/image_raw/compressed"
        (frame,) = list(reader.images())
        assert frame.encoding == "png"
        assert len(list(reader.commands())) == 2
    with BagReader(bag, image_topic="/features") as reader:
        with pytest.raises(BagError, match="unsupported image encoding '32FC1'.*'/features'|'/features'.*32FC1"):
            list(reader.images())
    with pytest.raises(BagError, match="image topic '/nope' is not in bag"):
        BagReader(bag, image_topic="/nope")
    with pytest.raises(BagError, match="has type 'geometry_msgs/msg/Twist'"):
        BagReader(bag, image_topic="/drone/cmd_vel")


def test_zero_header_stamp_falls_back_to_log_time(tmp_path):
    msg, expected = bf.image_msg(0, bf.random_rgb(4, 4), "rgb8")
    bag = bf.write_rosbags_bag(tmp_path / "bag", [bf.Entry("/image", bf.IMAGE, 12345, msg, expected)])
    with BagReader(bag) as reader:
        (frame,) = list(reader.images())
    assert frame.stamp_ns == 12345


def test_no_image_topic(tmp_path):
    entries = [bf.Entry("/cmd_vel", bf.TWIST, 10, bf.twist_msg([0, 0, 0, 0]))]
    with BagReader(bf.write_rosbags_bag(tmp_path / "bag", entries, "sqlite3")) as reader:
        assert reader.image_topic is None
        with pytest.raises(BagError, match=r"no usable image topic.*/cmd_vel \[geometry_msgs/msg/Twist\]"):
            next(reader.images())


def test_image_topic_without_commands(tmp_path):
    msg, _ = bf.image_msg(1, bf.random_rgb(2, 2), "rgb8")
    with BagReader(bf.write_rosbags_bag(tmp_path / "bag", [bf.Entry("/image", bf.IMAGE, 1, msg)])) as reader:
        with pytest.raises(BagError, match="no command topic"):
            next(reader.commands())


def test_unknown_message_type(tmp_path):
    path = tmp_path / "unknown.mcap"
    with open(path, "wb") as handle:  # a channel whose schema carries no definition
        writer = RawMcapWriter(handle)
        writer.start(profile="ros2", library="test")
        schema = writer.register_schema("acme_msgs/msg/Frame", "ros2msg", b"")
        channel = writer.register_channel("/camera/frames", "cdr", schema)
        writer.add_message(channel, 1000, b"\x00\x01\x00\x00\x01\x02", 1000)
        writer.finish()
    with BagReader(path) as reader:
        assert reader.image_topic is None  # not an image type, so never picked
        (raw,) = list(reader.messages())
        with pytest.raises(BagError, match="unknown message type 'acme_msgs/msg/Frame'"):
            reader.deserialize(raw)


@pytest.mark.parametrize("encoding", ["yuv422", "32FC1", "16UC1"])
def test_unsupported_raw_encoding(tmp_path, encoding):
    msg, _ = bf.image_msg(1, bf.random_rgb(3, 4), encoding)
    with BagReader(bf.write_rosbags_bag(tmp_path / "bag", [bf.Entry("/image", bf.IMAGE, 1, msg)])) as reader:
        with pytest.raises(BagError, match=f"unsupported image encoding '{encoding}'"):
            list(reader.images())


def test_bad_payloads_raise_bag_errors_with_the_codec_message():
    """The bag path decodes with interfaces.codec (tested in test_codec.py) and reports its errors as BagError."""
    bad_raw = SimpleNamespace(encoding="rgb8", height=2, width=2, step=6, is_bigendian=0, data=bytes(11))
    with pytest.raises(BagError, match="holds 11 bytes"):
        image_message_to_rgb(bad_raw)
    with pytest.raises(BagError, match="unsupported CompressedImage format 'tiff'"):
        image_message_to_rgb(SimpleNamespace(format="tiff", data=b"II*\x00garbage"))
    with pytest.raises(BagError, match="neither a sensor_msgs/Image nor"):
        image_message_to_rgb(SimpleNamespace(width=1))


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_corrupt_files(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BagError, match="garbage"):
        BagReader(path)


def test_truncated_sqlite3(tmp_path):
    bag = bf.write_rosbags_bag(tmp_path / "bag", bf.standard_entries(n=30, height=20, width=20), "sqlite3")
    db3 = next(bag.glob("*.db3"))
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size // 2])
    with pytest.raises(BagError, match="cannot read bag .*malformed"):
        with BagReader(bag) as reader:
            list(reader.images())


def test_missing_and_empty(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="holds no .mcap or .db3"):
        BagReader(tmp_path / "empty")
    (tmp_path / "badmeta").mkdir()
    (tmp_path / "badmeta" / "metadata.yaml").write_text("just: [unclosed")
    with pytest.raises(BagError, match="metadata.yaml is unreadable"):
        BagReader(tmp_path / "badmeta")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2 storage file"):
        BagReader(tmp_path / "notes.txt")


def _flushed_bag(tmp_path: Path, chunks: int = 4, per_chunk: int = 3) -> tuple[Path, list[int]]:
    """A bag written by BagWriter with a manual clock: one chunk per tick, closed properly."""
    now = [0.0]
    entries = bf.standard_entries(n=chunks * per_chunk, height=8, width=8)
    images = [e for e in entries if e.msgtype == bf.IMAGE]
    bag = tmp_path / "flushed"
    writer = BagWriter(bag, BagWriterConfig(flush_period_s=1.0), clock=lambda: now[0])
    writer.add_topic("/camera/image_raw", bf.IMAGE)
    for i, entry in enumerate(images):
        writer.write(entry.topic, entry.log_time_ns, bf.cdr(entry))
        if i % per_chunk == per_chunk - 1:
            now[0] += 1.0  # the next write flushes the chunk
    writer.close()
    return bag, [e.log_time_ns for e in images]


def test_truncated_mcap_is_repaired_into_a_temporary_copy(tmp_path):
    bag, log_times = _flushed_bag(tmp_path)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    original = bytes(data)
    with BagReader(bag) as reader:
        assert not reader.repaired and len(list(reader.images())) == 12
    with open(mcap, "rb") as handle:
        chunk_starts = [c.chunk_start_offset for c in make_reader(handle).get_summary().chunk_indexes]
    assert len(chunk_starts) == 4
    # Cut inside the 2nd and the 4th chunk: a writer killed while writing them.
    for cut in (chunk_starts[1] + 30, chunk_starts[3] + 30):
        mcap.write_bytes(data[:cut])
        with BagReader(bag) as reader:
            assert reader.repaired
            got = [stamp + 1_000_000 for stamp, _, _ in reader.images()]  # fixtures stamp 1 ms before logging
        assert 0 < len(got) < 12 and got == log_times[: len(got)]
        # Whole chunks only: the write that finds a flush due goes into the chunk it closes.
        assert len(got) == (4 if cut < chunk_starts[2] else 10)
    assert mcap.read_bytes() == original[:cut]  # the reader never modifies the bag
    mcap.write_bytes(data[:20])  # magic + part of the header: nothing to salvage
    with pytest.raises(BagError, match="truncated and cannot be repaired"):
        BagReader(bag)


def test_replay_timing():
    timing = ReplayTiming(rate=2.0, start_offset_s=1.0)
    start = 5_000_000_000
    assert timing.wall_delay_s(start + 3_000_000_000, start) == pytest.approx(1.0)
    assert timing.wall_delay_s(start + 1_000_000_000, start) == 0.0
    assert timing.bag_time_ns(0.5, start) == start + 2_000_000_000
    for bad in (dict(rate=0.0), dict(rate=-1.0), dict(rate=float("nan")), dict(start_offset_s=-0.1)):
        with pytest.raises(BagError):
            ReplayTiming(**bad)


def test_bare_mcap_in_directory_without_metadata(tmp_path):
    bag, _ = _flushed_bag(tmp_path)
    (bag / "metadata.yaml").unlink()
    with BagReader(bag) as reader:
        assert len(list(reader.images())) == 12
    shutil.copy(next(bag.glob("*.mcap")), bag / "second.mcap")
    with pytest.raises(BagError, match="several storage files"):
        BagReader(bag)


def test_single_bit_flips_never_read_as_other_frames(tmp_path):
    """Issue #13: rosbags checks no MCAP CRC, so a flipped bit read as other frames or fewer frames
    without a word. Now every read is a BagError, the recorded frames, or an in-order subset of them
    with `repaired` set (what evaluate-bag reports and --strict refuses)."""
    bag, _ = _flushed_bag(tmp_path)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    with BagReader(bag) as reader:
        original = [(stamp, image.copy()) for stamp, image, _ in reader.images()]
    assert len(original) == 12
    outcomes = {"error": 0, "same": 0, "repaired": 0}
    rng = np.random.default_rng(13)
    # Every 37th byte (~175 reads, a few s; a stride of 5 passes too) hits every record kind: header,
    # schema, channel, chunk headers and payloads, message indexes, summary, footer.
    for position in range(0, len(data), 37):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        mcap.write_bytes(bytes(flipped))
        try:
            with BagReader(bag) as reader:
                got = [(stamp, image.copy()) for stamp, image, _ in reader.images()]
                repaired = reader.repaired
        except BagError:
            outcomes["error"] += 1
            continue
        if len(got) == len(original) and all(a[0] == b[0] and np.array_equal(a[1], b[1])
                                              for a, b in zip(got, original)):
            outcomes["same"] += 1
            continue
        assert repaired, f"bit flip at byte {position}: {len(got)} frames differ from the recording, not flagged"
        remaining = iter(original)  # an in-order subset of the recorded frames
        assert all(any(a[0] == b[0] and np.array_equal(a[1], b[1]) for b in remaining) for a in got), \
            f"bit flip at byte {position}: repaired read holds frames that were never recorded"
        outcomes["repaired"] += 1
    assert min(outcomes.values()) > 0, outcomes  # all three answers occur: the checks are exercised
