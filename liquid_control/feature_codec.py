"""Wire formats between the nodes, without ROS: camera image payloads and feature vectors.

Features travel as a `sensor_msgs/Image` of height 1, width N, encoding `32FC1`
(little-endian float32), so they keep the source image's header (stamp) and need
no custom message type (DESIGN.md "Interfaces"). Functions here work on the
message's fields, so they are tested without rclpy; every problem raises
`ValueError` naming the field that is wrong.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FEATURE_ENCODING = "32FC1"
# sensor_msgs/Image encodings the perception node accepts -> channels per pixel.
IMAGE_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
MAX_IMAGE_PIXELS = 4096 * 4096  # refuse absurd sizes before touching memory


def _flat_bytes(data: Any) -> np.ndarray:
    """A message's uint8[] payload (bytes, bytearray, array.array('B'), memoryview, ndarray) as a uint8 view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints (rare: hand-built messages)
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_view(width: int, height: int, encoding: str, step: int, data: Any) -> np.ndarray:
    """uint8 (H, W, C) view (no copy when possible) of a raw sensor_msgs/Image payload.

    Rows may be padded (`step` > width * channels). Raises ValueError for an unsupported
    encoding, an empty or absurd size, a step shorter than a row, or data shorter than
    height * step (truncated) or longer (a size that does not match the payload).
    """
    if encoding not in IMAGE_CHANNELS:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {sorted(IMAGE_CHANNELS)}")
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image size {width}x{height} is empty or too large")
    channels = IMAGE_CHANNELS[encoding]
    row = width * channels
    if step < row:
        raise ValueError(f"image step {step} is shorter than a {encoding} row of width {width} ({row} bytes)")
    flat = _flat_bytes(data)
    if flat.size != step * height:
        what = "truncated" if flat.size < step * height else "too long"
        raise ValueError(f"image data is {what}: {flat.size} bytes, a {width}x{height} {encoding} image with "
                         f"step {step} has {step * height}")
    rows = flat.reshape(height, step)
    if step != row:
        rows = rows[:, :row]
    return rows.reshape(height, width, channels)


def features_to_payload(features: np.ndarray) -> tuple[int, int, str, int, bool, bytes]:
    """(height, width, encoding, step, is_bigendian, data) of a feature vector as a 1xN 32FC1 image."""
    vector = np.ascontiguousarray(features, dtype="<f4").reshape(-1)
    return 1, int(vector.size), FEATURE_ENCODING, 4 * int(vector.size), False, vector.tobytes()


def features_from_payload(height: int, width: int, encoding: str, step: int, is_bigendian: bool, data: Any,
                          expected_size: int | None = None) -> np.ndarray:
    """float32 (N,) feature vector from a 1xN 32FC1 image's fields; ValueError if it is not one."""
    if encoding != FEATURE_ENCODING:
        raise ValueError(f"features must have encoding {FEATURE_ENCODING}, got {encoding!r}")
    if height != 1 or width < 1:
        raise ValueError(f"features must be a 1xN image, got {height}x{width}")
    if expected_size is not None and width != expected_size:
        raise ValueError(f"features have {width} values, the policy expects {expected_size}")
    if step != 4 * width:
        raise ValueError(f"features step {step} != 4 * width ({4 * width})")
    flat = _flat_bytes(data)
    if flat.size != 4 * width:
        raise ValueError(f"features data holds {flat.size} bytes, expected {4 * width}")
    vector = flat.view(">f4" if is_bigendian else "<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ValueError("features contain NaN or inf")
    return vector
