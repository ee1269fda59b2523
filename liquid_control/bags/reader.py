"""Read rosbag2 bags (mcap or sqlite3, ours or foreign) without ROS.

`BagReader` opens a rosbag2 directory (with metadata.yaml), a directory holding
one .mcap/.db3 but no metadata.yaml, or a bare .mcap/.db3 file. An MCAP whose
writer was killed (no summary/footer) is repaired into a temporary copy and
read from there; the original is not modified (`liquid-control record
--repair` fixes it in place). Messages are deserialised with the definitions
stored in the bag, falling back to the standard ROS 2 Kilted types.

For the offline evaluator and training it resolves two topics:
- image topic: a sensor_msgs/Image or CompressedImage topic, preferring names
  containing "image", then raw Image over compressed, then the most messages;
- command topic: geometry_msgs/TwistStamped or Twist, preferring names with
  "cmd_vel", then TwistStamped, then the most messages;
either can be named explicitly instead. `images()` yields
(stamp_ns, RGB uint8 image, encoding) and `commands()` yields
(stamp_ns, [vx, vy, vz, yaw_rate]) with stamps from header.stamp, falling back
to the bag's log time when a message has no header or a zero stamp.

Every failure is a `BagError` that names the file and the problem.
"""
from __future__ import annotations

import sqlite3
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from liquid_control.bags import BagError
from liquid_control.bags.images import image_message_to_rgb
from liquid_control.bags.writer import mcap_has_footer, repair_mcap, standard_typestore, verify_mcap
from liquid_control.interfaces.topics import CMD_VEL

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
TWIST_STAMPED_TYPE = "geometry_msgs/msg/TwistStamped"
TWIST_TYPE = "geometry_msgs/msg/Twist"
COMMAND_TYPES = (TWIST_STAMPED_TYPE, TWIST_TYPE)
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    message_count: int


@dataclass(frozen=True)
class RawMessage:
    """One stored message: CDR bytes as recorded, log time in ns."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


class ImageFrame(NamedTuple):
    """`for stamp_ns, image, encoding in reader.images()` works, as do the attribute names."""

    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    encoding: str  # Image encoding, or 'jpeg'/'png' for a CompressedImage


class CommandSample(NamedTuple):
    stamp_ns: int
    command: np.ndarray  # (4,) float64 [vx, vy, vz, yaw_rate]: m/s heading frame FLU, rad/s CCW


def _storage_file(path: Path) -> tuple[Path, str]:
    """(path rosbags should open, storage id) for a bag directory or file."""
    if path.is_file():
        storage = STORAGE_SUFFIXES.get(path.suffix)
        if storage is None:
            raise BagError(f"{path} is not a rosbag2 storage file (expected .mcap or .db3)")
        return path, storage
    metadata = path / "metadata.yaml"
    if metadata.is_file():
        # rosbags reads the directory (also file-compressed bags, e.g. *.mcap.zstd) through its metadata.
        try:
            info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
            return path, str(info["storage_identifier"])
        except (yaml.YAMLError, KeyError, TypeError, OSError, UnicodeDecodeError) as err:
            raise BagError(f"bag {path}: metadata.yaml is unreadable or not rosbag2 metadata ({err!r})") from err
    files = [p for p in sorted(path.iterdir()) if p.suffix in STORAGE_SUFFIXES]
    if not files:
        raise BagError(f"bag directory {path} holds no .mcap or .db3 file")
    if len(files) > 1:
        raise BagError(f"bag directory {path} has no metadata.yaml and several storage files: "
                       f"{', '.join(p.name for p in files)}")
    return files[0], STORAGE_SUFFIXES[files[0].suffix]


def _stamp_ns(msg: Any, log_time_ns: int) -> int:
    header = getattr(msg, "header", None)
    if header is None:
        return log_time_ns
    stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return stamp if stamp > 0 else log_time_ns


def _pick(candidates: list[TopicInfo], preferred_word: str, preferred_type: str) -> str | None:
    if not candidates:
        return None
    best = max(candidates, key=lambda t: (preferred_word in t.name.lower(), t.msgtype == preferred_type,
                                          t.message_count, t.name))
    return best.name


class BagReader:
    """Reads one bag; use as a context manager. See the module docstring for what it accepts."""

    def __init__(self, path: str | Path, image_topic: str | None = None, command_topic: str | None = None) -> None:
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        target, self.storage = _storage_file(self.path)
        # True when an MCAP without footer, or one failing its CRC checks, was read through a repaired
        # copy holding only the messages of the intact chunks before the damage.
        self.repaired = False
        self.repaired_message_count: int | None = None
        self.repair_reason: str | None = None
        self._digests: Counter | None = None  # what the CRC-checked chunks of a closed MCAP hold
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        target = self._repair_if_damaged(target)
        try:
            self._reader = AnyReader([target], default_typestore=standard_typestore())
            self._reader.open()
        except Exception as err:  # rosbags raises several types; all mean "cannot read this file"
            self._cleanup()
            raise BagError(f"cannot read bag {self.path}: {err}") from err
        if any(getattr(r, "compression_mode", None) == "message" for r in self._reader.readers):
            self._digests = None  # rosbag2 per-message compression: rosbags yields data other than stored
        self._add_standard_types()
        self.topics: dict[str, TopicInfo] = {
            name: TopicInfo(name, info.msgtype or "", int(info.msgcount))
            for name, info in self._reader.topics.items()
        }
        try:
            self.image_topic = self._resolve(image_topic, IMAGE_TYPES, "image") if image_topic else _pick(
                [t for t in self.topics.values() if t.msgtype in IMAGE_TYPES and t.message_count > 0],
                "image", IMAGE_TYPE)
            self.command_topic = self._resolve(command_topic, COMMAND_TYPES, "command") if command_topic else _pick(
                [t for t in self.topics.values() if t.msgtype in COMMAND_TYPES and t.message_count > 0],
                CMD_VEL.name, TWIST_STAMPED_TYPE)
        except BagError:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------
    def _repair_if_damaged(self, target: Path) -> Path:
        mcaps = [target] if target.suffix == ".mcap" else sorted(target.glob("*.mcap")) if target.is_dir() else []
        if self.storage != "mcap" or len(mcaps) != 1:
            return target
        if mcap_has_footer(mcaps[0]):
            # rosbags checks no chunk or summary CRC: a flipped bit would read as other data or fewer
            # messages. A closed bag that fails its CRCs is treated like a truncated one: only the
            # intact part before the damage is read, and `repaired` says so.
            check = verify_mcap(mcaps[0])
            if check.problem is None:
                self._digests = check.digests
                return target
            self.repair_reason = f"damaged ({check.problem})"
        else:
            self.repair_reason = "truncated"  # no footer: the writer did not close it
        with open(mcaps[0], "rb") as handle:
            if handle.read(8) != b"\x89MCAP0\r\n":
                raise BagError(f"{mcaps[0]} is not an MCAP file (bad magic): corrupt bag")
        self._tmp = tempfile.TemporaryDirectory(prefix="liquid_bag_repair_")
        repaired = Path(self._tmp.name) / mcaps[0].name
        try:
            result = repair_mcap(mcaps[0], repaired)
        except BagError as err:
            self._cleanup()
            raise BagError(f"bag {self.path} is {self.repair_reason} and cannot be repaired: {err}") from err
        self.repaired = True
        self.repaired_message_count = result.messages
        return repaired

    def _add_standard_types(self) -> None:
        """Bags that define some types but not others still read the standard ones.

        A type the bag lists without a definition (no schema, or an empty one)
        is decoded with the standard Kilted definition, or refused as unknown.
        """
        store = self._reader.typestore
        kilted = standard_typestore()
        self._undefined_types = {c.msgtype for c in self._reader.connections
                                 if not (c.msgdef.data or "").strip() or c.msgtype not in store.fielddefs}
        missing = {t for t in self._undefined_types if t not in store.fielddefs}
        if missing & set(kilted.fielddefs):
            store.register({k: v for k, v in kilted.fielddefs.items() if k not in store.fielddefs})

    def _resolve(self, name: str, types: Sequence[str], what: str) -> str:
        found = self.topics.get(name) or self.topics.get("/" + name.lstrip("/"))
        if found is None:
            raise BagError(f"{what} topic {name!r} is not in bag {self.path}; topics: {self._topic_list()}")
        if found.msgtype not in types:
            raise BagError(f"{what} topic {found.name!r} in bag {self.path} has type {found.msgtype!r}, "
                           f"expected one of {', '.join(types)}")
        return found.name

    def _topic_list(self) -> str:
        return ", ".join(f"{t.name} [{t.msgtype}]" for t in self.topics.values()) or "none"

    # -- generic access ---------------------------------------------------------
    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        """Log time just after the last message (rosbags convention)."""
        return int(self._reader.end_time)

    @property
    def message_count(self) -> int:
        return sum(t.message_count for t in self.topics.values())

    def messages(self, topics: Sequence[str] | None = None, start_ns: int | None = None) -> Iterator[RawMessage]:
        """Stored messages in log-time order, optionally only `topics` and from log time `start_ns` on."""
        connections = [c for c in self._reader.connections if topics is None or c.topic in topics]
        if not connections:
            return
        expected, seen, count = self._digests, Counter(), 0
        try:
            for connection, log_time, data in self._reader.messages(connections=connections, start=start_ns):
                if expected is not None:
                    # The chunks were CRC-checked at open; the message indexes that led here were not.
                    key = (connection.topic, int(log_time), zlib.crc32(data))
                    seen[key] += 1
                    count += 1
                    if seen[key] > expected[key]:
                        raise BagError(f"bag {self.path} is corrupt: the message index leads to a message on "
                                       f"{connection.topic!r} at log time {int(log_time)} that its chunks do not "
                                       "hold (damaged index)")
                yield RawMessage(connection.topic, connection.msgtype, int(log_time), bytes(data))
            if expected is not None and start_ns is None:
                wanted = {c.topic for c in connections}
                total = sum(n for (topic, _, _), n in expected.items() if topic in wanted)
                if count != total:
                    raise BagError(f"bag {self.path} is corrupt: its index leads to {count} messages on "
                                   f"{sorted(wanted)} but its chunks hold {total} (damaged index)")
        except BagError:
            raise
        except (sqlite3.Error, OSError, ValueError, KeyError, AssertionError) as err:
            raise BagError(f"bag {self.path} is corrupt: {type(err).__name__}: {err}") from err
        except Exception as err:  # rosbags' ReaderError / AnyReaderError / McapError variants
            raise BagError(f"cannot read messages from bag {self.path}: {err}") from err

    def deserialize(self, message: RawMessage) -> Any:
        """The message as a rosbags dataclass (fields named as in the .msg definition)."""
        store = self._reader.typestore
        if message.msgtype in self._undefined_types:
            store = standard_typestore()
            if message.msgtype not in store.fielddefs:
                raise BagError(f"unknown message type {message.msgtype!r} on {message.topic!r} in bag {self.path}: "
                               "the bag carries no definition for it and it is not a standard ROS 2 type")
        try:
            return store.deserialize_cdr(message.data, message.msgtype)
        except Exception as err:
            raise BagError(f"cannot decode a {message.msgtype} message on {message.topic!r} at log time "
                           f"{message.log_time_ns} in bag {self.path}: {err}") from err

    # -- what the evaluator and training use -------------------------------------
    def require_image_topic(self) -> str:
        if self.image_topic is None:
            raise BagError(f"bag {self.path} has no usable image topic (sensor_msgs/Image or CompressedImage "
                           f"with messages); topics: {self._topic_list()}")
        return self.image_topic

    def images(self) -> Iterator[ImageFrame]:
        """(stamp_ns, RGB image, encoding) for each message on the image topic, in log-time order."""
        topic = self.require_image_topic()
        for raw in self.messages([topic]):
            msg = self.deserialize(raw)
            try:
                image, encoding = image_message_to_rgb(msg)
            except BagError as err:
                raise BagError(f"image on {topic!r} at log time {raw.log_time_ns} in bag {self.path}: {err}") from err
            yield ImageFrame(_stamp_ns(msg, raw.log_time_ns), image, encoding)

    def commands(self) -> Iterator[CommandSample]:
        """(stamp_ns, [vx, vy, vz, yaw_rate]) for each message on the command topic."""
        if self.command_topic is None:
            raise BagError(f"bag {self.path} has no command topic (geometry_msgs/TwistStamped or Twist); "
                           f"topics: {self._topic_list()}")
        for raw in self.messages([self.command_topic]):
            msg = self.deserialize(raw)
            try:  # a bag's own (maybe corrupt) definition can lack the fields the standard type has
                twist = msg.twist if raw.msgtype == TWIST_STAMPED_TYPE else msg
                command = np.array([twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.z],
                                   dtype=np.float64)
            except (AttributeError, TypeError, ValueError) as err:
                raise BagError(f"command on {self.command_topic!r} at log time {raw.log_time_ns} in bag "
                               f"{self.path} does not have the {raw.msgtype} fields: {err}") from None
            yield CommandSample(_stamp_ns(msg, raw.log_time_ns), command)

    # -- lifetime --------------------------------------------------------------
    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        try:
            if getattr(getattr(self, "_reader", None), "stack", None):
                self._reader.close()
        finally:
            self._cleanup()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- replay timing (used by the bag player node; pure so it is testable without ROS) --

@dataclass(frozen=True)
class ReplayTiming:
    """How a bag's log times map onto wall time during live replay.

    rate: playback speed factor (2.0 = twice as fast); start_offset_s: bag
    seconds skipped from the first message.
    """

    rate: float = 1.0
    start_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and np.isfinite(self.rate)):
            raise BagError(f"replay rate must be a positive number, got {self.rate}")
        if not (self.start_offset_s >= 0 and np.isfinite(self.start_offset_s)):
            raise BagError(f"replay start offset must be >= 0 s, got {self.start_offset_s}")

    def first_log_time_ns(self, bag_start_ns: int) -> int:
        return bag_start_ns + int(round(self.start_offset_s * 1e9))

    def wall_delay_s(self, log_time_ns: int, bag_start_ns: int) -> float:
        """Seconds after playback start at which a message logged at `log_time_ns` is due."""
        return (log_time_ns - self.first_log_time_ns(bag_start_ns)) / 1e9 / self.rate

    def bag_time_ns(self, wall_elapsed_s: float, bag_start_ns: int) -> int:
        """Bag time (for /clock) reached `wall_elapsed_s` after playback start."""
        return self.first_log_time_ns(bag_start_ns) + int(round(wall_elapsed_s * self.rate * 1e9))
