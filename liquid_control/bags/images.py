"""Decode sensor_msgs/Image and sensor_msgs/CompressedImage payloads to RGB uint8 arrays.

ROS-free: works on any object with the message's field names (rosbags'
deserialised dataclasses, rclpy messages, or plain namespaces). Every result is
a C-contiguous (height, width, 3) uint8 array in RGB order; problems raise
`BagError` naming the field that is wrong.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from liquid_control.bags import BagError

# encoding -> (channels, OpenCV conversion to RGB or None when the bytes already are RGB)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}
COMPRESSED_CODECS = ("jpeg", "png")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _as_bytes_view(data: Any) -> np.ndarray:
    """The payload as a flat uint8 array without copying where possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8).reshape(-1)
    return np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data, dtype=np.uint8)


def decode_raw_image(width: int, height: int, encoding: str, step: int, data: Any) -> np.ndarray:
    """RGB (height, width, 3) uint8 from a sensor_msgs/Image payload.

    `step` is the row length in bytes (rows may be padded beyond width * channels).
    Supported encodings: rgb8, bgr8, mono8 (and rgba8/bgra8, alpha dropped).
    """
    if encoding not in RAW_ENCODINGS:
        raise BagError(
            f"unsupported image encoding {encoding!r}: supported are {', '.join(RAW_ENCODINGS)}"
        )
    if width <= 0 or height <= 0:
        raise BagError(f"image has an empty size {width}x{height}")
    channels, conversion = RAW_ENCODINGS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise BagError(f"image step {step} is shorter than a {encoding} row of width {width} ({row_bytes} bytes)")
    flat = _as_bytes_view(data)
    # The last row need not carry its padding.
    needed = step * (height - 1) + row_bytes
    if flat.size < needed:
        raise BagError(
            f"image data holds {flat.size} bytes, a {width}x{height} {encoding} image with step {step} needs {needed}"
        )
    if flat.size < step * height:
        flat = np.concatenate([flat[:needed], np.zeros(step * height - needed, np.uint8)])
    # One copy into an owned, contiguous array (the payload may be a read-only buffer with row padding).
    pixels = np.array(flat[: step * height].reshape(height, step)[:, :row_bytes]).reshape(height, width, channels)
    return pixels if conversion is None else cv2.cvtColor(pixels, conversion)


def compressed_codec(fmt: str, data: bytes | np.ndarray) -> str:
    """'jpeg' or 'png' for a CompressedImage, from its format string and the data's magic bytes."""
    head = bytes(_as_bytes_view(data)[:8])
    if head.startswith(_JPEG_MAGIC):
        codec = "jpeg"
    elif head.startswith(_PNG_MAGIC):
        codec = "png"
    else:
        codec = ""
    fmt_lower = fmt.lower()
    named = [c for c in COMPRESSED_CODECS if c in fmt_lower or (c == "jpeg" and "jpg" in fmt_lower)]
    if not codec:
        what = f"format {fmt!r}" if fmt else "an empty format"
        if fmt and not named:
            raise BagError(f"unsupported CompressedImage {what}: supported are jpeg and png")
        raise BagError(f"CompressedImage with {what} holds data that is neither JPEG nor PNG (starts {head.hex()})")
    return codec


def decode_compressed_image(fmt: str, data: Any) -> tuple[np.ndarray, str]:
    """(RGB (H, W, 3) uint8, codec) from a sensor_msgs/CompressedImage payload (jpeg or png)."""
    flat = _as_bytes_view(data)
    codec = compressed_codec(fmt, flat)
    # IMREAD_COLOR always returns 3 BGR channels (grey images are expanded).
    bgr = cv2.imdecode(flat, cv2.IMREAD_COLOR)
    if bgr is None:
        raise BagError(f"CompressedImage ({codec}, {flat.size} bytes) could not be decoded: corrupt data")
    return np.ascontiguousarray(bgr[:, :, ::-1]), codec


def image_message_to_rgb(msg: Any) -> tuple[np.ndarray, str]:
    """(RGB image, encoding) from an Image (has `encoding`) or a CompressedImage (has `format`).

    The returned encoding is the Image's encoding, or 'jpeg'/'png' for a CompressedImage.
    """
    if hasattr(msg, "encoding") and hasattr(msg, "step"):
        return decode_raw_image(int(msg.width), int(msg.height), str(msg.encoding), int(msg.step), msg.data), str(
            msg.encoding
        )
    if hasattr(msg, "format") and hasattr(msg, "data"):
        return decode_compressed_image(str(msg.format), msg.data)
    raise BagError(f"{type(msg).__name__} is neither a sensor_msgs/Image nor a sensor_msgs/CompressedImage")
