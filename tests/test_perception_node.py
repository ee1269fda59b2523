"""The perception node over DDS (good and bad images); the codec itself: test_codec.py."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from liquid_control.interfaces.codec import features_from_payload


# ------------------------------------------------------------------ the node over DDS
pytest.importorskip("rclpy")


def start_perception(harness, model, compressed=False, **params):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    from liquid_control.interfaces.topics import SENSOR_QOS
    from liquid_control.nodes.common import qos_profile
    from liquid_control.nodes.perception_node import PerceptionNode
    from node_helpers import overrides

    node = harness.add(PerceptionNode(context=harness.context, parameter_overrides=overrides(
        model_path=str(model), backend="torch", diagnostics_rate_hz=10.0,
        input="compressed" if compressed else "raw", **params)))
    probe = harness.node("perception_probe")
    got = {"features": [], "diag": []}
    probe.create_subscription(Image, "features", got["features"].append, qos_profile(SENSOR_QOS, 10))
    probe.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
    topic = "camera/image_raw/compressed" if compressed else "camera/image_raw"
    publisher = probe.create_publisher(CompressedImage if compressed else Image, topic, qos_profile(SENSOR_QOS, 1))
    harness.spin_until(lambda: publisher.get_subscription_count() > 0 and probe.count_publishers("features") > 0,
                       10.0, "perception node discovery")
    return node, publisher, got


def image_message(image: np.ndarray, encoding: str, stamp=(12, 345000000), step=None):
    from sensor_msgs.msg import Image

    channels = 1 if image.ndim == 2 else image.shape[2]
    msg = Image(height=image.shape[0], width=image.shape[1], encoding=encoding,
                step=step or image.shape[1] * channels, data=image.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "camera_optical_frame"
    return msg


def send(harness, publisher, got, msg, expect_output: bool):
    count = len(got["features"])
    publisher.publish(msg)
    if expect_output:
        harness.spin_until(lambda: len(got["features"]) > count, 5.0, "features")
    else:
        harness.spin_for(0.3)
        assert len(got["features"]) == count, "a bad image must not produce features"


def decode(msg) -> np.ndarray:
    return features_from_payload(msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian), msg.data)


def test_features_keep_the_image_stamp_and_match_the_runtime(harness, tiny_node_model):
    from liquid_control.inference.runtime import PerceptionRuntime
    from node_helpers import rgb_image

    node, publisher, got = start_perception(harness, tiny_node_model)
    image = rgb_image(48, 64, seed=3)
    send(harness, publisher, got, image_message(image, "rgb8"), True)
    out = got["features"][-1]
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (12, 345000000)
    assert out.header.frame_id == "camera_optical_frame"
    expected = PerceptionRuntime(tiny_node_model, backend="torch").features(image, "rgb8")
    np.testing.assert_allclose(decode(out), expected, atol=1e-5)
    # The same picture as bgr8 (channels swapped) and with padded rows gives the same features.
    send(harness, publisher, got, image_message(np.ascontiguousarray(image[:, :, ::-1]), "bgr8", (12, 400000000)),
         True)
    np.testing.assert_allclose(decode(got["features"][-1]), expected, atol=1e-5)
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)
    padded[:, :64 * 3] = image.reshape(48, -1)
    msg = image_message(padded, "mono8", (12, 500000000))
    msg.encoding, msg.width, msg.step = "rgb8", 64, 64 * 3 + 8
    send(harness, publisher, got, msg, True)
    np.testing.assert_allclose(decode(got["features"][-1]), expected, atol=1e-5)
    # rgba8 with the last row's padding left off: accepted live, and the bag path reads the same pixels.
    from liquid_control.bags.images import image_message_to_rgb

    rgba = np.zeros((48, 64 * 4 + 8), np.uint8)
    rgba[:, :64 * 4] = np.dstack([image, np.full((48, 64), 255, np.uint8)]).reshape(48, -1)
    msg = image_message(rgba, "mono8", (12, 550000000))
    msg.encoding, msg.width, msg.step, msg.data = "rgba8", 64, 64 * 4 + 8, rgba.tobytes()[:-8]
    send(harness, publisher, got, msg, True)
    np.testing.assert_allclose(decode(got["features"][-1]), expected, atol=1e-5)
    np.testing.assert_array_equal(image_message_to_rgb(msg)[0], image)
    send(harness, publisher, got, image_message(image[:, :, 1].copy(), "mono8", (12, 600000000)), True)
    assert decode(got["features"][-1]).shape == (8,)


def test_bad_images_are_rejected_counted_and_reported_and_the_node_keeps_running(harness, tiny_node_model):
    from node_helpers import diagnostic_values, rgb_image

    node, publisher, got = start_perception(harness, tiny_node_model)
    image = rgb_image(48, 64)
    wrong_encoding = image_message(image, "rgb16")
    truncated = image_message(image, "rgb8", (13, 0))
    truncated.data = image.tobytes()[:-100]
    wrong_size = image_message(image, "rgb8", (14, 0))
    wrong_size.width = 80  # data is for 64 columns
    short_step = image_message(image, "rgb8", (15, 0), step=100)
    for k, msg in enumerate([wrong_encoding, truncated, wrong_size, short_step]):
        send(harness, publisher, got, msg, False)
        assert node.gate.counts["bad_frames"] == k + 1
    got["diag"].clear()
    harness.spin_until(lambda: any(diagnostic_values(a, "perception") for a in got["diag"]), 5.0, "diagnostics")
    level, message, values = [diagnostic_values(a, "perception") for a in got["diag"]][-1]
    assert level == 2 and "rejected" in message and values["bad_frames"] == "4"
    send(harness, publisher, got, image_message(image, "rgb8", (16, 0)), True)  # still alive
    got["diag"].clear()
    harness.spin_until(lambda: any(diagnostic_values(a, "perception") for a in got["diag"]), 5.0, "diagnostics")
    assert [diagnostic_values(a, "perception") for a in got["diag"]][-1][0] == 1  # recent bad frames: WARN


def test_older_frames_are_dropped_but_a_new_timeline_is_followed(harness, tiny_node_model):
    from node_helpers import rgb_image

    node, publisher, got = start_perception(harness, tiny_node_model)
    send(harness, publisher, got, image_message(rgb_image(24, 32), "rgb8", (20, 0)), True)
    send(harness, publisher, got, image_message(rgb_image(24, 32), "rgb8", (19, 500000000)), False)
    assert node.gate.counts["out_of_order_frames"] == 1
    # Far older: a looped bag or restarted sim starts a new timeline, which is processed.
    send(harness, publisher, got, image_message(rgb_image(24, 32), "rgb8", (3, 0)), True)
    send(harness, publisher, got, image_message(rgb_image(24, 32), "rgb8", (3, 40000000)), True)
    assert node.gate.counts["time_jumps_back"] == 1 and node.gate.counts["out_of_order_frames"] == 1


def test_compressed_images_are_decoded(harness, tiny_node_model):
    from sensor_msgs.msg import CompressedImage

    from liquid_control.inference.runtime import PerceptionRuntime
    from node_helpers import rgb_image

    node, publisher, got = start_perception(harness, tiny_node_model, compressed=True)
    image = rgb_image(48, 64, seed=5)
    ok, png = cv2.imencode(".png", image[:, :, ::-1])  # OpenCV writes BGR
    msg = CompressedImage(format="png", data=png.tobytes())
    msg.header.stamp.sec = 30
    send(harness, publisher, got, msg, True)
    expected = PerceptionRuntime(tiny_node_model, backend="torch").features(image, "rgb8")
    np.testing.assert_allclose(decode(got["features"][-1]), expected, atol=1e-5)
    corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8\xff" + bytes(50))
    corrupt.header.stamp.sec = 31
    send(harness, publisher, got, corrupt, False)
    assert node.gate.counts["bad_frames"] == 1 and "corrupt" in node.gate.last_error


def test_diagnostics_name_the_host_and_the_inference_device(harness, tiny_node_model):
    import socket

    node, publisher, got = start_perception(harness, tiny_node_model)
    harness.spin_until(lambda: any(s.name == "perception" for a in got["diag"] for s in a.status), 5.0,
                       "diagnostics")
    hardware = {s.hardware_id for a in got["diag"] for s in a.status if s.name == "perception"}
    assert hardware == {f"{socket.gethostname()}/torch"}  # was empty (issue 14)
