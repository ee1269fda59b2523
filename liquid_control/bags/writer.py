"""Crash-safe rosbag2 MCAP writer, and repair of an MCAP whose writer was killed.

Why not rosbags' own writer: its MCAP storage keeps the open chunk in memory
until it reaches 1 MiB and writes the summary only on close, with no way to
flush in between (rosbags 0.11.9, rosbag2/storage_mcap.py: McapWriter.write /
close_chunk). A recorder killed after a minute of 30 Hz 64x48 images would
lose everything. This writer uses the `mcap` package's Writer, whose `flush()`
closes the open chunk and hands it to the OS, and calls it at least once per
`flush_period_s`; metadata.yaml is rewritten atomically after every flush and
on close. A SIGKILLed writer therefore leaves an MCAP holding every chunk up
to the last flush but no summary/footer; `repair_bag` rebuilds the summary
(the reader does that into a temporary copy automatically).

Layout (what `ros2 bag record -s mcap` produces, metadata version 9):
    BAG_DIR/metadata.yaml
    BAG_DIR/BAG_DIR_0.mcap   profile "ros2", schemas "ros2msg", channels "cdr"
"""
from __future__ import annotations

import os
import struct
import threading
import zlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from mcap.records import Channel, DataEnd, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

import liquid_control
from liquid_control.bags import BagError

METADATA_VERSION = 9
ROS_DISTRO = "kilted"
MCAP_PROFILE = "ros2"
MCAP_MAGIC = b"\x89MCAP0\r\n"
COMPRESSIONS = {"none": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}
# QoS field values mean "infinite" in rosbag2's metadata (RMW_DURATION_INFINITE as sec/nsec).
INFINITE_DURATION = {"sec": 9223372036, "nsec": 854775807}


def default_qos(reliability: str = "reliable", depth: int = 10, durability: str = "volatile") -> dict[str, Any]:
    """One offered QoS profile in rosbag2 metadata v9 form (what `ros2 bag info` prints)."""
    return {
        "history": "keep_last",
        "depth": int(depth),
        "reliability": reliability,
        "durability": durability,
        "deadline": dict(INFINITE_DURATION),
        "lifespan": dict(INFINITE_DURATION),
        "liveliness": "automatic",
        "liveliness_lease_duration": dict(INFINITE_DURATION),
        "avoid_ros_namespace_conventions": False,
    }


@lru_cache(maxsize=1)
def standard_typestore():
    """rosbags typestore of the standard ROS 2 Kilted message types."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def message_definition(msgtype: str) -> tuple[str, str]:
    """(ros2msg definition text with dependencies, RIHS01 type hash) of a standard ROS 2 type.

    Raises BagError for a type the Kilted typestore does not know (e.g. a custom package).
    """
    store = standard_typestore()
    if msgtype not in store.fielddefs:
        raise BagError(
            f"unknown message type {msgtype!r}: not a standard ROS 2 Kilted type; pass its definition explicitly"
        )
    text, _ = store.generate_msgdef(msgtype, ros_version=2)
    return text, store.hash_rihs01(msgtype)


def definition_hash(msgtype: str, msgdef: str) -> str:
    """RIHS01 hash of a type given as ros2msg text (dependencies: in the text or standard types)."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.EMPTY)
    try:
        types = dict(standard_typestore().fielddefs)
        types.update(get_types_from_msg(msgdef, msgtype))
        store.register(types)
        return store.hash_rihs01(msgtype)
    except Exception as err:  # rosbags raises parser- and typesys-specific errors
        raise BagError(f"invalid message definition for {msgtype!r}: {err}") from err


@dataclass
class BagWriterConfig:
    """How a bag is written.

    compression: MCAP chunk compression ("none", "zstd" or "lz4"); rosbag2's
        metadata then still says compression "" because it is storage-level,
        exactly like `ros2 bag record --storage-preset-profile zstd_fast`.
    chunk_size_bytes: a chunk is closed early when it grows past this.
    flush_period_s: upper bound (s, monotonic clock) on how long received
        messages stay only in memory; also the metadata.yaml refresh period.
    fsync: also fsync the MCAP and metadata.yaml on every flush, so that a
        power loss (battery unplugged after a crash), not only a killed
        process, keeps everything up to the last flush. Costs one disk sync per
        flush_period_s (docs/BENCHMARKS.md).
    """

    compression: str = "none"
    chunk_size_bytes: int = 1 << 20
    flush_period_s: float = 1.0
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise BagError(f"unknown compression {self.compression!r}: use one of {', '.join(COMPRESSIONS)}")
        if self.flush_period_s <= 0:
            raise BagError(f"flush_period_s must be positive, got {self.flush_period_s}")
        if self.chunk_size_bytes <= 0:
            raise BagError(f"chunk_size_bytes must be positive, got {self.chunk_size_bytes}")


@dataclass
class TopicRecord:
    """What metadata.yaml says about one topic."""

    name: str
    msgtype: str
    type_hash: str
    offered_qos: list[dict[str, Any]]
    message_count: int = 0


@dataclass
class _Stats:
    topics: dict[str, TopicRecord] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None

    def add(self, topic: str, log_time_ns: int) -> None:
        self.topics[topic].message_count += 1
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)


def metadata_dict(mcap_name: str, stats: _Stats, compressed_chunks: bool = False) -> dict[str, Any]:
    """rosbag2 metadata.yaml content, version 9, for a single-file MCAP bag."""
    count = sum(t.message_count for t in stats.topics.values())
    start = stats.start_ns or 0
    duration = (stats.end_ns - stats.start_ns) if stats.start_ns is not None else 0
    info = {
        "version": METADATA_VERSION,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {
                "topic_metadata": {
                    "name": t.name,
                    "type": t.msgtype,
                    "serialization_format": "cdr",
                    "offered_qos_profiles": t.offered_qos,
                    "type_description_hash": t.type_hash,
                },
                "message_count": t.message_count,
            }
            for t in stats.topics.values()
        ],
        # Chunk compression is storage-level: rosbag2 leaves these empty for it.
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [mcap_name],
        "files": [
            {
                "path": mcap_name,
                "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": duration},
                "message_count": count,
            }
        ],
        "custom_data": {"writer": f"liquid_control {liquid_control.__version__}",
                        "chunk_compression": "zstd" if compressed_chunks else "none"},
        "ros_distro": ROS_DISTRO,
    }
    return {"rosbag2_bagfile_information": info}


# libyaml's emitter when present: 10x faster than pure Python, and this runs once per second.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_metadata_yaml(bag_dir: Path, metadata: dict[str, Any], fsync: bool = True) -> None:
    """Replace BAG_DIR/metadata.yaml atomically (a reader never sees half a file)."""
    text = yaml.dump(metadata, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)
    tmp = bag_dir / "metadata.yaml.tmp"
    with open(tmp, "w", encoding="utf8") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, bag_dir / "metadata.yaml")


class BagWriter:
    """Writes one rosbag2 MCAP bag; thread-safe; use as a context manager.

    Safety: everything written is on disk (in the OS) within `flush_period_s` of
    the first `write` after it, or of `flush_if_due()` which a recorder calls
    from a timer so that quiet periods flush too. `close()` is idempotent.
    """

    def __init__(self, bag_dir: str | Path, config: BagWriterConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BagWriterConfig()
        self.bag_dir = Path(bag_dir)
        if self.bag_dir.exists() and (not self.bag_dir.is_dir() or any(self.bag_dir.iterdir())):
            raise BagError(f"bag output {self.bag_dir} already exists and is not an empty directory")
        self.bag_dir.mkdir(parents=True, exist_ok=True)
        self.mcap_path = self.bag_dir / f"{self.bag_dir.name}_0.mcap"
        self._clock = clock
        self._lock = threading.Lock()
        self._file = open(self.mcap_path, "xb")
        self._mcap = McapWriter(self._file, chunk_size=self.config.chunk_size_bytes,
                                compression=COMPRESSIONS[self.config.compression])
        self._mcap.start(profile=MCAP_PROFILE, library=f"liquid_control-{liquid_control.__version__}")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._stats = _Stats()
        self._closed = False
        self._last_flush = clock()
        self._unflushed = 0  # messages written since the last flush
        self._write_metadata()

    # -- topics and messages -------------------------------------------------
    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[dict[str, Any]] = (),
                  msgdef: str | None = None, type_hash: str = "") -> None:
        """Declare a topic before writing to it.

        `msgdef` (ros2msg text) defaults to the standard type's; `type_hash` (RIHS01)
        defaults to the hash of the definition.
        """
        with self._lock:
            self._check_open()
            if topic in self._channels:
                raise BagError(f"topic {topic!r} was already added to {self.bag_dir}")
            if msgdef is None:
                msgdef, type_hash = message_definition(msgtype)
            elif not type_hash:
                type_hash = definition_hash(msgtype, msgdef)
            if msgtype not in self._schemas:
                self._schemas[msgtype] = self._mcap.register_schema(msgtype, "ros2msg", msgdef.encode())
            qos = [dict(q) for q in offered_qos]
            self._channels[topic] = self._mcap.register_channel(
                topic, "cdr", self._schemas[msgtype],
                {"offered_qos_profiles": yaml.safe_dump(qos, sort_keys=False) if qos else "",
                 "topic_type_hash": type_hash},
            )
            self._stats.topics[topic] = TopicRecord(topic, msgtype, type_hash, qos)

    @property
    def topics(self) -> dict[str, TopicRecord]:
        return dict(self._stats.topics)

    @property
    def message_count(self) -> int:
        return sum(t.message_count for t in self._stats.topics.values())

    def write(self, topic: str, log_time_ns: int, data: bytes, publish_time_ns: int | None = None) -> None:
        """Append one serialized (CDR) message; log time in ns (receive time, like rosbag2)."""
        with self._lock:
            self._check_open()
            channel = self._channels.get(topic)
            if channel is None:
                raise BagError(f"topic {topic!r} was not added to {self.bag_dir} before writing")
            if log_time_ns < 0:
                raise BagError(f"negative log time {log_time_ns} ns on {topic!r}")
            self._mcap.add_message(channel, int(log_time_ns), bytes(data),
                                   int(log_time_ns if publish_time_ns is None else publish_time_ns))
            self._stats.add(topic, int(log_time_ns))
            self._unflushed += 1
            self._flush_if_due_locked()

    # -- durability ------------------------------------------------------------
    def flush(self) -> None:
        """Close the open chunk, push it to the OS, then rewrite metadata.yaml."""
        with self._lock:
            self._check_open()
            self._flush_locked()

    def flush_if_due(self) -> bool:
        """Flush when `flush_period_s` has passed since the last flush; True if it flushed."""
        with self._lock:
            if self._closed:
                return False
            return self._flush_if_due_locked()

    def _flush_if_due_locked(self) -> bool:
        if self._clock() - self._last_flush < self.config.flush_period_s:
            return False
        if not self._unflushed:  # idle: nothing to write, no disk traffic
            self._last_flush = self._clock()
            return False
        self._flush_locked()
        return True

    def _flush_locked(self) -> None:
        self._unflushed = 0
        self._mcap.flush()
        if self.config.fsync:
            os.fsync(self._file.fileno())
        self._last_flush = self._clock()
        # Metadata after data: metadata.yaml never counts messages the MCAP lacks.
        self._write_metadata()

    def _write_metadata(self) -> None:
        write_metadata_yaml(self.bag_dir, metadata_dict(self.mcap_path.name, self._stats,
                                                         self.config.compression != "none"), self.config.fsync)

    def close(self) -> None:
        """Write the MCAP summary and footer and the final metadata.yaml."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # rosbag2 (Jazzy+) also stores its metadata inside the MCAP.
            self._mcap.add_metadata("rosbag2", {"serialized_metadata": yaml.dump(
                metadata_dict(self.mcap_path.name, self._stats)["rosbag2_bagfile_information"], Dumper=_DUMPER,
                sort_keys=False)})
            self._mcap.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._write_metadata()

    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"bag {self.bag_dir} is already closed")

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- repair ---------------------------------------------------------------------

@dataclass
class RepairResult:
    """What `repair_mcap` kept."""

    messages: int
    topics: dict[str, TopicRecord]
    start_ns: int | None
    end_ns: int | None
    bytes_in: int
    complete: bool  # True when the source already had a valid footer (nothing was lost)


def mcap_has_footer(path: Path) -> bool:
    """True when the file ends with the MCAP magic, i.e. its writer closed it."""
    size = path.stat().st_size
    if size < 2 * len(MCAP_MAGIC) + 29:
        return False
    with open(path, "rb") as handle:
        handle.seek(-len(MCAP_MAGIC), os.SEEK_END)
        return handle.read() == MCAP_MAGIC


def _salvage_records(path: Path, digests_only: bool = False) -> tuple[list[Schema], list[Channel], list, bool]:
    """Schemas, channels and messages of every complete, CRC-valid record, in file order.

    Reading stops at the first truncated or corrupt record: that is where the
    killed writer was interrupted, and nothing after it can be trusted.
    digests_only: keep (channel id, log time, CRC32 of the data) per message instead of the
    message (for `verify_mcap`, which must not hold a whole bag in memory).
    """
    schemas: list[Schema] = []
    channels: list[Channel] = []
    messages: list[Message] = []
    with open(path, "rb") as handle:
        head = handle.read(len(MCAP_MAGIC))
        if head != MCAP_MAGIC:
            raise BagError(f"{path} is not an MCAP file (starts {head[:8].hex()})")
        handle.seek(0)
        reader = StreamReader(handle, validate_crcs=True, record_size_limit=1 << 31)
        complete = False
        try:
            for record in reader.records:
                if isinstance(record, DataEnd):
                    break  # the summary only repeats schemas/channels (its own CRC is checked elsewhere)
                if isinstance(record, Schema):
                    schemas.append(record)
                elif isinstance(record, Channel):
                    channels.append(record)
                elif isinstance(record, Message):
                    messages.append((record.channel_id, record.log_time, zlib.crc32(record.data))
                                    if digests_only else record)
            complete = True
        except Exception:  # noqa: BLE001 -- a damaged chunk fails in parser- and codec-specific ways (McapError,
            pass  # struct.error, zstd/lz4 errors, ...): all mean "nothing from here on can be trusted"
    return schemas, channels, messages, complete


FOOTER_SIZE = 1 + 8 + 8 + 8 + 4  # opcode, length, summary_start, summary_offset_start, summary_crc


def _summary_problem(path: Path) -> str | None:
    """Why the summary section (chunk indexes, statistics) of a closed MCAP cannot be trusted, or None.

    The footer's summary_crc covers the summary and the footer fields before it (MCAP spec, Footer);
    rosbags reads chunks through that summary without checking it.
    """
    size = path.stat().st_size
    footer_pos = size - len(MCAP_MAGIC) - FOOTER_SIZE
    with open(path, "rb") as handle:
        handle.seek(footer_pos)
        footer = handle.read(FOOTER_SIZE)
        opcode, length, summary_start, _, crc = struct.unpack("<BQQQI", footer)
        if opcode != 0x02 or length != FOOTER_SIZE - 9:
            return "the footer record is damaged"
        if crc == 0:
            return None  # the writer stored no summary CRC: nothing to check
        start = summary_start or footer_pos
        if not len(MCAP_MAGIC) <= start <= footer_pos:
            return f"the footer points outside the file (summary at byte {summary_start})"
        handle.seek(start)
        actual = zlib.crc32(footer[:FOOTER_SIZE - 4], zlib.crc32(handle.read(footer_pos - start)))
    return None if actual == crc else f"summary section CRC mismatch (stored {crc:#010x}, computed {actual:#010x})"


@dataclass
class McapCheck:
    """What `verify_mcap` found: a problem (None when intact) and every message's digest."""

    problem: str | None
    digests: Counter  # (topic, log time ns, CRC32 of data) -> how many messages carry it


def verify_mcap(path: Path) -> McapCheck:
    """Check a closed MCAP: summary CRC, every chunk CRC and the data-section CRC where stored.

    The digests let a reader check that what the (unchecked) message and chunk indexes lead it to
    is exactly what the CRC-checked chunks hold.
    """
    path = Path(path)
    problem = _summary_problem(path)
    _, channels, digests, complete = _salvage_records(path, digests_only=True)
    if not complete and problem is None:
        problem = "a chunk or the data section fails its CRC check or cannot be parsed"
    topic_of = {c.id: c.topic for c in channels}
    return McapCheck(problem, Counter((topic_of.get(cid, ""), t, crc) for cid, t, crc in digests))


def repair_mcap(src: Path, dst: Path) -> RepairResult:
    """Rewrite the readable part of MCAP `src` as a complete MCAP `dst` (summary + footer).

    Raises BagError when `src` is not an MCAP or holds no channel at all.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BagError(f"cannot repair {src}: no such file")
    schemas, channels, messages, complete = _salvage_records(src)
    if not channels:
        raise BagError(f"cannot repair {src}: no complete channel record survives (the file holds no data)")
    schema_by_id = {s.id: s for s in schemas}
    stats = _Stats()
    with open(dst, "wb") as handle:
        out = McapWriter(handle, compression=CompressionType.ZSTD)
        out.start(profile=MCAP_PROFILE, library=f"liquid_control-{liquid_control.__version__} repair")
        new_schema: dict[int, int] = {}
        new_channel: dict[int, int] = {}
        for channel in channels:
            schema = schema_by_id.get(channel.schema_id)
            if schema is not None and schema.id not in new_schema:
                new_schema[schema.id] = out.register_schema(schema.name, schema.encoding, schema.data)
            new_channel[channel.id] = out.register_channel(
                channel.topic, channel.message_encoding, new_schema.get(channel.schema_id, 0), dict(channel.metadata))
            qos_text = channel.metadata.get("offered_qos_profiles", "")
            qos = yaml.safe_load(qos_text) if qos_text else []
            stats.topics[channel.topic] = TopicRecord(
                channel.topic, schema.name if schema else "", channel.metadata.get("topic_type_hash", ""),
                qos if isinstance(qos, list) else [])
        topic_of = {c.id: c.topic for c in channels}
        for message in messages:
            if message.channel_id not in new_channel:
                continue
            out.add_message(new_channel[message.channel_id], message.log_time, message.data,
                            message.publish_time, message.sequence)
            stats.add(topic_of[message.channel_id], message.log_time)
        out.finish()
    return RepairResult(sum(t.message_count for t in stats.topics.values()), stats.topics,
                        stats.start_ns, stats.end_ns, src.stat().st_size, complete)


def repair_bag(path: str | Path, keep_original: bool = True) -> RepairResult:
    """Make a bag whose recorder was killed readable again, in place.

    `path` is a bag directory or its .mcap file. The MCAP is rebuilt from every
    complete chunk (the original is kept as `<name>.mcap.truncated` unless
    keep_original is False) and metadata.yaml is regenerated from what survived.
    A bag that is already complete is left untouched.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.mcap"))
        if len(candidates) != 1:
            raise BagError(f"cannot repair {path}: expected one .mcap file in it, found {len(candidates)}")
        mcap_path, bag_dir = candidates[0], path
    elif path.is_file():
        mcap_path, bag_dir = path, path.parent
    else:
        raise BagError(f"cannot repair {path}: no such bag")
    if mcap_has_footer(mcap_path):
        return RepairResult(-1, {}, None, None, mcap_path.stat().st_size, True)
    tmp = mcap_path.with_name(mcap_path.name + ".repairing")
    try:
        result = repair_mcap(mcap_path, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if keep_original:
        os.replace(mcap_path, mcap_path.with_name(mcap_path.name + ".truncated"))
    os.replace(tmp, mcap_path)
    stats = _Stats(topics=result.topics, start_ns=result.start_ns, end_ns=result.end_ns)
    write_metadata_yaml(bag_dir, metadata_dict(mcap_path.name, stats, compressed_chunks=True))
    return result

