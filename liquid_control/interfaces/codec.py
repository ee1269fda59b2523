"""Image and feature payloads <-> numpy, one rule set for the live nodes and for bags.

Functions take a message's plain fields (encoding, height, width, step, is_bigendian,
data), so they run without ROS on rclpy messages, rosbags' dataclasses or test data.
Every problem raises ValueError naming the field that is wrong.

Raw images (sensor_msgs/Image):
- encodings rgb8, bgr8, mono8, rgba8, bgra8 (alpha is dropped);
- is_bigendian is ignored: byte order does not exist for 8-bit channels;
- step >= width * channels (rows may be padded);
- len(data) == step * height, or step * (height - 1) + width * channels: some drivers
  leave the padding off the last row, and nothing is ambiguous about it;
- width * height <= max_pixels (default 4096 x 4096), so a corrupt header cannot make us
  allocate or convert gigabytes.

Features travel as a sensor_msgs/Image of height 1, width N, encoding 32FC1, so they keep the
source image's header (capture stamp) and need no custom message type.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

FEATURE_ENCODING = "32FC1"
# encoding -> (channels, encoding of the first three (or one) channels as preprocess reads them)
RAW_ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "rgb8"),
    "bgr8": (3, "bgr8"),
    "mono8": (1, "mono8"),
    "rgba8": (4, "rgb8"),
    "bgra8": (4, "bgr8"),
}
_TO_RGB = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "mono8": cv2.COLOR_GRAY2RGB}
MAX_IMAGE_PIXELS = 4096 * 4096
COMPRESSED_CODECS = ("jpeg", "png")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def flat_bytes(data: Any) -> np.ndarray:
    """A uint8[] payload (bytes, bytearray, array.array('B'), memoryview, ndarray, list) as a flat uint8 array,
    without a copy where the buffer allows."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints (hand-built messages)
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def raw_image_view(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: Any,
                   max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """(pixels, encoding) of a sensor_msgs/Image: a read-only (H, W, C) uint8 view of `data` (no copy) with
    C = 3 for colour or 1 for mono8, and the encoding of that view (rgb8, bgr8 or mono8; rgba8/bgra8 lose
    their alpha channel). Rules: module docstring."""
    del is_bigendian  # 8-bit channels have no byte order
    if encoding not in RAW_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}: supported are {', '.join(RAW_ENCODINGS)}")
    height, width, step = int(height), int(width), int(step)
    if width <= 0 or height <= 0:
        raise ValueError(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ValueError(f"image size {width}x{height} exceeds the limit of {max_pixels} pixels")
    channels, view_encoding = RAW_ENCODINGS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise ValueError(f"image step {step} is shorter than a {encoding} row of width {width} ({row_bytes} bytes)")
    flat = flat_bytes(data)
    full, trimmed = step * height, step * (height - 1) + row_bytes
    if flat.size not in (full, trimmed):
        expected = f"{full}" if full == trimmed else f"{full} (or {trimmed} without the last row's padding)"
        raise ValueError(f"image data holds {flat.size} bytes; a {width}x{height} {encoding} image with step "
                         f"{step} holds {expected}")
    # Rows `step` bytes apart, each read for row_bytes: skips the padding and works with a trimmed last row.
    rows = np.lib.stride_tricks.as_strided(flat, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    pixels = rows.reshape(height, width, channels)
    return (pixels[:, :, :3] if channels == 4 else pixels), view_encoding


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """An owned, C-contiguous RGB (H, W, 3) uint8 copy of a raw_image_view result."""
    conversion = _TO_RGB[encoding]
    if conversion is None:
        return np.array(pixels, order="C")
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def raw_image_to_rgb(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: Any,
                     max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """RGB (H, W, 3) uint8 array (owned, contiguous) of a sensor_msgs/Image; rules: module docstring."""
    return to_rgb(*raw_image_view(encoding, height, width, step, is_bigendian, data, max_pixels))


def compressed_codec(fmt: str, data: Any) -> str:
    """'jpeg' or 'png' for a CompressedImage, from its data's magic bytes (the format string only
    names the problem when the data is neither)."""
    head = bytes(flat_bytes(data)[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    fmt_lower = fmt.lower()
    named = any(c in fmt_lower for c in COMPRESSED_CODECS) or "jpg" in fmt_lower
    what = f"format {fmt!r}" if fmt else "an empty format"
    if fmt and not named:
        raise ValueError(f"unsupported CompressedImage {what}: supported are jpeg and png")
    raise ValueError(f"CompressedImage with {what} holds data that is neither JPEG nor PNG (starts {head.hex()})")


def compressed_image_to_rgb(fmt: str, data: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """(RGB (H, W, 3) uint8, codec) of a sensor_msgs/CompressedImage (jpeg or png)."""
    flat = flat_bytes(data)
    codec = compressed_codec(fmt, flat)
    # IMREAD_COLOR always gives 3 BGR channels (grey images are expanded).
    bgr = cv2.imdecode(flat, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"CompressedImage ({codec}, {flat.size} bytes) could not be decoded: corrupt data")
    height, width = bgr.shape[:2]
    if width * height > max_pixels:  # checked after decoding: the size is inside the compressed stream
        raise ValueError(f"image size {width}x{height} exceeds the limit of {max_pixels} pixels")
    return np.ascontiguousarray(bgr[:, :, ::-1]), codec


def features_to_payload(features: np.ndarray) -> tuple[int, int, str, int, bool, bytes]:
    """(height, width, encoding, step, is_bigendian, data) of a feature vector as a 1xN 32FC1 image."""
    vector = np.ascontiguousarray(features, dtype="<f4").reshape(-1)
    return 1, int(vector.size), FEATURE_ENCODING, 4 * int(vector.size), False, vector.tobytes()


def features_from_payload(height: int, width: int, encoding: str, step: int, is_bigendian: bool, data: Any,
                          expected_size: int | None = None) -> np.ndarray:
    """float32 (N,) feature vector from a 1xN 32FC1 image's fields; ValueError if it is not one, or holds
    NaN/inf, or (with expected_size) has another length."""
    if encoding != FEATURE_ENCODING:
        raise ValueError(f"features must have encoding {FEATURE_ENCODING}, got {encoding!r}")
    if height != 1 or width < 1:
        raise ValueError(f"features must be a 1xN image, got {height}x{width}")
    if expected_size is not None and width != expected_size:
        raise ValueError(f"features have {width} values, the policy expects {expected_size}")
    if step != 4 * width:
        raise ValueError(f"features step {step} != 4 * width ({4 * width})")
    flat = flat_bytes(data)
    if flat.size != 4 * width:
        raise ValueError(f"features data holds {flat.size} bytes, expected {4 * width}")
    vector = flat.view(">f4" if is_bigendian else "<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ValueError("features contain NaN or inf")
    return vector
