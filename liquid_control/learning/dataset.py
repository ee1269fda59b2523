"""Training data: one episode = one sequence of (image, capture time, expert command, state).

Shard format (format "liquid_control.episode", version 1): one ``.npz`` file per episode,
named ``<scenario>_<seed:06d>.npz``, holding one row per *delivered* camera frame:

- ``images``          (N, H, W, 3) uint8 RGB at the perception input size (what
                      `models.perception.preprocess` would produce, times 255);
- ``capture_times_s`` (N,) float64 sim/header time the frame was captured (s);
- ``labels``          (N, 4) float32 expert command [vx, vy, vz, yaw_rate] (heading frame FLU, m/s, rad/s)
                      at the control step the frame was delivered: the training target;
- ``commands``        (N, 4) float32 command actually flown at that step (differs from the label
                      when the data was collected with a perturbed or learned controller);
- ``positions`` (N, 3), ``yaws`` (N,), ``velocities_body`` (N, 3), ``targets`` (N, 3): ground truth
                      (NaN when unknown, e.g. real-drone bags);
- ``segmentation``    (N, H, W) uint8 per-pixel class (simulation.camera.SEGMENT_CLASSES: sky, ground,
                      target, other), optional (absent in real-drone data and older shards): the mask
                      for training's background recolouring;
- ``meta``            JSON string: format, version, scenario, seed, task, source, controller, metrics.

Shards are written to a hidden temporary name, fsynced, then renamed into place
(`write_shard`), so a crashed or killed collector never leaves a file that looks
whole; readers skip hidden files. Loading uses ``allow_pickle=False``.

`load_episodes` reads shard directories, single shards and rosbag2 recordings
(image topic + command topic, via `bags.reader.BagReader`) into the same
`EpisodeData`, so real-drone data trains the same way as simulated data.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

FORMAT = "liquid_control.episode"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".npz"
ARRAY_KEYS = ("images", "capture_times_s", "labels", "commands", "positions", "yaws", "velocities_body", "targets")


class DatasetError(ValueError):
    """A shard, directory or bag that cannot be used for training; the message names it and the problem."""


@dataclass
class EpisodeData:
    """One training sequence (rows = delivered frames, in capture order). See the module docstring."""

    images: np.ndarray
    capture_times_s: np.ndarray
    labels: np.ndarray
    commands: np.ndarray | None = None
    positions: np.ndarray | None = None
    yaws: np.ndarray | None = None
    velocities_body: np.ndarray | None = None
    targets: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or f"{self.meta.get('scenario', 'episode')}_{self.meta.get('seed', 0)}")

    def validate(self, where: str = "episode") -> None:
        """Raise DatasetError unless shapes, dtypes and values are usable."""
        n = len(self)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise DatasetError(f"{where}: images must be uint8 (N, H, W, 3), got {self.images.dtype} "
                               f"{self.images.shape}")
        if n < 1:
            raise DatasetError(f"{where}: no frames")
        if self.capture_times_s.shape != (n,) or not np.all(np.isfinite(self.capture_times_s)):
            raise DatasetError(f"{where}: capture_times_s must be {n} finite values, got shape "
                               f"{self.capture_times_s.shape}")
        if n > 1 and np.any(np.diff(self.capture_times_s) <= 0):
            raise DatasetError(f"{where}: capture times must increase strictly")
        if self.labels.shape != (n, 4) or not np.all(np.isfinite(self.labels)):
            raise DatasetError(f"{where}: labels must be ({n}, 4) finite values, got shape {self.labels.shape}")
        if self.segmentation is not None and (self.segmentation.dtype != np.uint8
                                              or self.segmentation.shape != self.images.shape[:3]):
            raise DatasetError(f"{where}: segmentation must be uint8 {self.images.shape[:3]}, got "
                               f"{self.segmentation.dtype} {self.segmentation.shape}")

    def resized(self, height: int, width: int) -> "EpisodeData":
        """The same episode with images resized (INTER_AREA, as `preprocess` does) to height x width."""
        if self.images.shape[1:3] == (height, width):
            return self
        images = np.stack([cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in self.images])
        segmentation = None if self.segmentation is None else np.stack(
            [cv2.resize(s, (width, height), interpolation=cv2.INTER_NEAREST) for s in self.segmentation])
        return EpisodeData(**{**self.__dict__, "images": images, "segmentation": segmentation})


def shard_name(scenario: str, seed: int) -> str:
    return f"{scenario}_{int(seed):06d}{SHARD_SUFFIX}"


def _nan(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def shard_bytes(episode: EpisodeData, where: str = "episode") -> bytes:
    """One episode as the bytes of a shard file (compressed .npz); `write_shard_bytes` stores them.
    Split from write_shard so a remote worker compresses and the driver only writes (collect --ray)."""
    episode.validate(where)
    n = len(episode)
    arrays = {
        "images": episode.images,
        "capture_times_s": episode.capture_times_s.astype(np.float64),
        "labels": episode.labels.astype(np.float32),
        "commands": (episode.commands if episode.commands is not None else episode.labels).astype(np.float32),
        "positions": episode.positions.astype(np.float32) if episode.positions is not None else _nan((n, 3)),
        "yaws": episode.yaws.astype(np.float32) if episode.yaws is not None else _nan((n,)),
        "velocities_body": (episode.velocities_body.astype(np.float32) if episode.velocities_body is not None
                            else _nan((n, 3))),
        "targets": episode.targets.astype(np.float32) if episode.targets is not None else _nan((n, 3)),
    }
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **episode.meta}
    if episode.segmentation is not None:
        arrays["segmentation"] = episode.segmentation
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_shard_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write shard bytes atomically: hidden temp file, fsync, rename, fsync the directory."""
    path = Path(path)
    if path.suffix != SHARD_SUFFIX:
        raise DatasetError(f"{path}: shard names must end in {SHARD_SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        # Make the rename itself durable: a power cut must not resurrect a missing shard.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_shard(path: str | os.PathLike, episode: EpisodeData) -> Path:
    """Write one episode atomically (see write_shard_bytes)."""
    path = Path(path)
    if path.suffix != SHARD_SUFFIX:
        raise DatasetError(f"{path}: shard names must end in {SHARD_SUFFIX}")
    return write_shard_bytes(path, shard_bytes(episode, str(path)))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def read_shard(path: str | os.PathLike) -> EpisodeData:
    """Read one shard (no pickle); DatasetError names the file and the problem."""
    path = Path(path)
    try:
        # np.load reads a non-zip file as a pickle and then says it "contains pickled data": name the real fault.
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                raise DatasetError(f"shard {path}: not an .npz archive (no zip header)")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (*ARRAY_KEYS, "meta") if k not in data.files]
            if missing:
                raise DatasetError(f"shard {path}: missing arrays {missing}")
            arrays = {k: data[k] for k in ARRAY_KEYS}
            arrays["segmentation"] = data["segmentation"] if "segmentation" in data.files else None
            meta = json.loads(str(data["meta"]))
    except DatasetError:
        raise
    except Exception as exc:  # zipfile / numpy / json raise many types; all mean "unreadable"
        raise DatasetError(f"shard {path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != FORMAT:
        raise DatasetError(f"shard {path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DatasetError(f"shard {path}: format_version {meta.get('format_version')} is newer than this code")
    meta.setdefault("name", path.stem)
    episode = EpisodeData(meta=meta, **arrays)
    episode.validate(f"shard {path}")
    return episode


def list_shards(directory: str | os.PathLike) -> list[Path]:
    """Finished shards in a directory (hidden temporary files are never listed)."""
    directory = Path(directory)
    return sorted(p for p in directory.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))


# --------------------------------------------------------------------------- rosbag2
def _is_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    return path.is_dir() and (any(path.glob("*.mcap")) or any(path.glob("*.db3"))) and not list_shards(path)


def episode_from_bag(path: str | os.PathLike, image_topic: str | None = None, command_topic: str | None = None,
                     height: int = 48, width: int = 64, max_command_gap_s: float = 0.1) -> EpisodeData:
    """A rosbag2 recording as one training sequence.

    Each image is labelled with the command whose stamp is nearest to the image's stamp; images with
    no command within `max_command_gap_s` are left out (the next kept frame then has a longer
    timespan, exactly like a dropped frame). Topics default to the bag reader's auto-detection.
    """
    from liquid_control.bags import BagError
    from liquid_control.bags.reader import BagReader

    path = Path(path)
    try:
        with BagReader(path, image_topic=image_topic, command_topic=command_topic) as reader:
            used_image_topic, used_command_topic = reader.require_image_topic(), reader.command_topic
            commands = list(reader.commands())
            frames = [(f.stamp_ns, cv2.resize(f.image, (width, height), interpolation=cv2.INTER_AREA))
                      for f in reader.images()]
    except BagError as exc:
        raise DatasetError(f"bag {path}: {exc}") from exc
    if not frames:
        raise DatasetError(f"bag {path}: no images on {used_image_topic!r}")
    if not commands:
        raise DatasetError(f"bag {path}: no commands on {used_command_topic!r}")
    command_stamps = np.array([c.stamp_ns for c in commands], dtype=np.int64)
    order = np.argsort(command_stamps, kind="stable")
    command_stamps = command_stamps[order]
    command_values = np.stack([commands[i].command for i in order])
    frames.sort(key=lambda item: item[0])
    t0 = frames[0][0]
    rows: list[tuple[float, np.ndarray, np.ndarray]] = []
    last_stamp = None
    for stamp, image in frames:
        if stamp == last_stamp:  # duplicate stamps would give a zero timespan
            continue
        i = int(np.searchsorted(command_stamps, stamp))
        candidates = [j for j in (i - 1, i) if 0 <= j < len(command_stamps)]
        j = min(candidates, key=lambda k: abs(int(command_stamps[k]) - stamp))
        if abs(int(command_stamps[j]) - stamp) > max_command_gap_s * 1e9:
            continue
        rows.append(((stamp - t0) / 1e9, image, command_values[j]))
        last_stamp = stamp
    if not rows:
        raise DatasetError(f"bag {path}: no image has a command within {max_command_gap_s} s of its stamp")
    episode = EpisodeData(
        images=np.stack([r[1] for r in rows]).astype(np.uint8),
        capture_times_s=np.array([r[0] for r in rows], dtype=np.float64),
        labels=np.stack([r[2] for r in rows]).astype(np.float32),
        meta={"format": FORMAT, "format_version": FORMAT_VERSION, "source": "rosbag2", "name": path.stem,
              "bag": str(path), "image_topic": used_image_topic, "command_topic": used_command_topic,
              "stamp0_ns": int(t0)})
    episode.validate(f"bag {path}")
    return episode


# --------------------------------------------------------------------------- loading
def load_episodes(sources: Iterable[str | os.PathLike], height: int, width: int,
                  image_topic: str | None = None, command_topic: str | None = None,
                  min_frames: int = 2) -> list[EpisodeData]:
    """Every episode under `sources` (shard directories, shard files, rosbag2 bags), images at height x width.

    Episodes shorter than `min_frames` are skipped (nothing to learn a sequence from).
    """
    episodes: list[EpisodeData] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise DatasetError(f"data source {path} does not exist")
        if path.is_file() and path.suffix == SHARD_SUFFIX:
            found = [read_shard(path)]
        elif _is_bag(path):
            found = [episode_from_bag(path, image_topic, command_topic, height, width)]
        elif path.is_dir():
            shards = list_shards(path)
            bags = [p for p in sorted(path.iterdir()) if p.is_dir() and _is_bag(p)]
            if not shards and not bags:
                raise DatasetError(f"data source {path} holds no {SHARD_SUFFIX} shards and no rosbag2 bags")
            found = [read_shard(p) for p in shards]
            found += [episode_from_bag(p, image_topic, command_topic, height, width) for p in bags]
        else:
            raise DatasetError(f"data source {path} is neither a shard ({SHARD_SUFFIX}), a shard directory "
                               "nor a rosbag2 bag (.mcap/.db3 or a directory holding one)")
        episodes += [e.resized(height, width) for e in found if len(e) >= min_frames]
    if not episodes:
        raise DatasetError(f"no usable episodes in {', '.join(map(str, sources))}")
    return episodes


def split_episodes(episodes: Sequence[EpisodeData], validation_fraction: float,
                   seed: int) -> tuple[list[EpisodeData], list[EpisodeData]]:
    """(train, validation) split by whole episodes (seeded); at least one training episode."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(len(episodes))
    count = int(round(validation_fraction * len(episodes)))
    if validation_fraction > 0 and len(episodes) > 1:
        count = max(count, 1)
    count = min(count, len(episodes) - 1)
    validation = [episodes[i] for i in sorted(order[:count])]
    train = [episodes[i] for i in sorted(order[count:])]
    return train, validation
