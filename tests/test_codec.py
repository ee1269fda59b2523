"""The wire codec (liquid_control.interfaces.codec): raw and compressed images, and 1xN 32FC1 features."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from liquid_control.interfaces.codec import (MAX_IMAGE_PIXELS, compressed_image_to_rgb, features_from_payload,
                                             features_to_payload, raw_image_to_rgb, raw_image_view)

RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


def padded(image: np.ndarray, step: int) -> np.ndarray:
    """Rows of `image` (H, W, C) in a (H, step) buffer, zero padding at the end of each row."""
    rows = np.zeros((image.shape[0], step), np.uint8)
    rows[:, :image.shape[1] * image.shape[2]] = image.reshape(image.shape[0], -1)
    return rows


@pytest.mark.parametrize("encoding, stored, view_encoding, rgb", [
    ("rgb8", RGB, "rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1], "bgr8", RGB),
    ("mono8", RGB[:, :, :1], "mono8", np.repeat(RGB[:, :, :1], 3, axis=2)),
    ("rgba8", np.dstack([RGB, np.full((4, 5), 7, np.uint8)]), "rgb8", RGB),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full((4, 5), 7, np.uint8)]), "bgr8", RGB),
])
@pytest.mark.parametrize("extra", [0, 3, 7])  # odd paddings too
def test_every_encoding_decodes_with_and_without_row_padding(encoding, stored, view_encoding, rgb, extra):
    step = stored.shape[1] * stored.shape[2] + extra
    data = padded(stored, step).tobytes()
    view, got_encoding = raw_image_view(encoding, 4, 5, step, False, data)
    assert got_encoding == view_encoding
    assert view.shape == (4, 5, 1 if encoding == "mono8" else 3)
    assert not view.flags.writeable  # a view of the message, never written
    np.testing.assert_array_equal(raw_image_to_rgb(encoding, 4, 5, step, False, data), rgb)


def test_the_last_row_may_come_without_its_padding():
    step = 5 * 3 + 4
    data = padded(RGB, step).tobytes()[:-4]
    np.testing.assert_array_equal(raw_image_to_rgb("rgb8", 4, 5, step, False, data), RGB)
    for size in (69, 74):  # short of the last row, or part of its padding: neither layout
        with pytest.raises(ValueError, match=f"holds {size} bytes.* holds 76 \\(or 72 without the last row's padding\\)"):
            raw_image_view("rgb8", 4, 5, step, False, padded(RGB, step).tobytes()[:size])


def test_big_endian_flag_does_not_change_8_bit_pixels():
    data = RGB.tobytes()
    np.testing.assert_array_equal(raw_image_to_rgb("rgb8", 4, 5, 15, True, data),
                                  raw_image_to_rgb("rgb8", 4, 5, 15, False, data))


def test_message_buffer_types_are_read_without_a_copy():
    data = array.array("B", RGB.tobytes())  # rclpy hands uint8[] as array('B')
    view, _ = raw_image_view("rgb8", 4, 5, 15, False, data)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    listed, _ = raw_image_view("rgb8", 4, 5, 15, False, list(RGB.tobytes()))  # hand-built messages
    np.testing.assert_array_equal(listed, RGB)
    np.testing.assert_array_equal(raw_image_view("rgb8", 4, 5, 15, False, RGB)[0], RGB)


def test_rgb_result_is_owned_and_survives_the_message():
    buffer = bytearray(RGB.tobytes())
    image = raw_image_to_rgb("rgb8", 4, 5, 15, False, buffer)
    buffer[:] = bytes(len(buffer))
    np.testing.assert_array_equal(image, RGB)
    assert image.flags.c_contiguous


@pytest.mark.parametrize("encoding, height, width, step, size, match", [
    ("16UC1", 4, 5, 10, 40, "unsupported image encoding '16UC1'"),
    ("yuv422", 4, 5, 10, 40, "unsupported image encoding"),
    ("rgb8", 4, 5, 14, 56, "step 14 is shorter than a rgb8 row of width 5 \\(15 bytes\\)"),
    ("rgb8", 4, 5, -1, 0, "step -1 is shorter"),
    ("rgb8", 4, 5, 15, 59, "holds 59 bytes.* holds 60$"),
    ("rgb8", 4, 5, 15, 61, "holds 61 bytes"),  # longer than the image: a header that lies
    ("rgb8", 4, 5, 16, 65, "holds 65 bytes"),
    ("rgb8", 0, 5, 15, 0, "empty size 5x0"),
    ("mono8", 4, 0, 0, 0, "empty size 0x4"),
    ("mono8", -1, 5, 5, 0, "empty size"),
    ("mono8", 0, 0, 0, 0, "empty size"),
    ("mono8", 100_000, 100_000, 100_000, 0, "100000x100000 exceeds the limit of 16777216 pixels"),
])
def test_bad_raw_images_are_named(encoding, height, width, step, size, match):
    with pytest.raises(ValueError, match=match):
        raw_image_view(encoding, height, width, step, False, bytes(size))


def test_the_size_limit_is_a_parameter():
    data = bytes(64 * 48)
    assert raw_image_view("mono8", 48, 64, 64, False, data)[0].shape == (48, 64, 1)
    with pytest.raises(ValueError, match="64x48 exceeds the limit of 1000 pixels"):
        raw_image_view("mono8", 48, 64, 64, False, data, max_pixels=1000)
    assert MAX_IMAGE_PIXELS >= 3840 * 2160  # a 4K camera fits the default


@pytest.mark.parametrize("codec, fmt", [("jpeg", "rgb8; jpeg compressed bgr8"), ("png", "png")])
def test_compressed_images_decode_to_rgb(codec, fmt):
    ok, encoded = cv2.imencode(f".{codec.replace('jpeg', 'jpg')}", np.ascontiguousarray(RGB[:, :, ::-1]))
    assert ok
    image, got_codec = compressed_image_to_rgb(fmt, encoded.tobytes())
    assert got_codec == codec and image.shape == (4, 5, 3)
    tolerance = 0 if codec == "png" else 40  # jpeg is lossy
    assert np.abs(image.astype(int) - RGB.astype(int)).max() <= tolerance
    with pytest.raises(ValueError, match="5x4 exceeds the limit of 10 pixels"):
        compressed_image_to_rgb(fmt, encoded.tobytes(), max_pixels=10)


@pytest.mark.parametrize("fmt, data, match", [
    ("tiff", b"II*\x00garbage", "unsupported CompressedImage format 'tiff'"),
    ("jpeg", b"not an image at all", "neither JPEG nor PNG"),
    ("", b"", "an empty format holds data that is neither"),
    ("jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 40, "could not be decoded"),
])
def test_bad_compressed_images_are_named(fmt, data, match):
    with pytest.raises(ValueError, match=match):
        compressed_image_to_rgb(fmt, data)


def test_feature_payload_round_trip_and_errors():
    values = np.array([1.5, -2.0, 3.25e-3], np.float32)
    height, width, encoding, step, bigendian, data = features_to_payload(values)
    assert (height, width, encoding, step, bigendian, len(data)) == (1, 3, "32FC1", 12, False, 12)
    np.testing.assert_array_equal(features_from_payload(height, width, encoding, step, bigendian, data), values)
    big = values.astype(">f4").tobytes()
    np.testing.assert_array_equal(features_from_payload(1, 3, "32FC1", 12, True, big), values)
    with pytest.raises(ValueError, match="expects 4"):
        features_from_payload(1, 3, "32FC1", 12, False, data, expected_size=4)
    with pytest.raises(ValueError, match="NaN"):
        features_from_payload(1, 3, "32FC1", 12, False, np.array([0, np.nan, 0], np.float32).tobytes())
    with pytest.raises(ValueError, match="bytes"):
        features_from_payload(1, 3, "32FC1", 12, False, data[:8])
    with pytest.raises(ValueError, match="encoding 32FC1"):
        features_from_payload(1, 3, "rgb8", 12, False, data)
    with pytest.raises(ValueError, match="1xN"):
        features_from_payload(3, 1, "32FC1", 4, False, data)
    with pytest.raises(ValueError, match="step 16"):
        features_from_payload(1, 3, "32FC1", 16, False, data)
