"""ROS 2 node: camera image -> stamped feature vector for the policy.

Subscribes `camera/image_raw` (sensor_msgs/Image: rgb8, bgr8, mono8) or, with
`input:=compressed`, `camera/image_raw/compressed` (sensor_msgs/CompressedImage,
jpeg/png); publishes `features` (sensor_msgs/Image 1xN `32FC1`, same header as
the source image, so the policy knows the capture time) and `/diagnostics`.
Both streams are best effort with depth 1 (the camera subscription per REP-2003, so it
matches reliable and best-effort camera drivers alike): only the newest frame is ever
processed, a slow step drops frames instead of queueing them.

Safety semantics: a bad image (unsupported encoding, size/step that does not match
the data, truncated data, non-finite features) is logged, counted and reported
(ERROR while the newest frame is bad, WARN while bad frames are recent); the node
keeps running and publishes nothing for that frame, so the policy's watchdog sees
the gap; an image older than the newest one is dropped, unless more than TIME_JUMP_BACK_S older
(a new timeline: bag loop, sim restart). Logic: inference.frame_gate.FrameGate (order gate, bad-frame
window, counters) + inference.runtime.PerceptionRuntime (models.perception.preprocess + features).
"""
import sys
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from liquid_control.inference.frame_gate import FrameGate
from liquid_control.inference.model_source import load_runtime, runtime_options
from liquid_control.inference.runtime import PerceptionRuntime
from liquid_control.interfaces.codec import (MAX_IMAGE_PIXELS, compressed_image_to_rgb, features_to_payload,
                                             raw_image_view)
from liquid_control.interfaces.topics import CAMERA_COMPRESSED, CAMERA_IMAGE, FEATURES
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, configure_scheduling,
                                         declare_parameters_with_ranges, inference_parameters, make_status,
                                         now_seconds, qos_profile, runtime_hardware_id, scheduling_parameters,
                                         spin_node, stamp_to_seconds)

PARAMETERS = inference_parameters("perception") + scheduling_parameters() + [
    ParamSpec("input", "raw", "which camera stream to subscribe: raw (camera/image_raw) or compressed "
              "(camera/image_raw/compressed)", choices=("raw", "compressed"), read_only=True),
    ParamSpec("diagnostics_rate_hz", 1.0, "/diagnostics rate (Hz)", 0.2, 20.0),
    ParamSpec("bad_frame_window_s", 5.0, "a bad frame within this many seconds keeps the diagnostics at WARN (s)",
              0.1, 600.0),
    # Converting and resizing a frame is linear in its pixels (a 10000x20000 frame took 16.5 s): larger
    # frames are rejected as bad before any work is done on them.
    ParamSpec("max_image_pixels", MAX_IMAGE_PIXELS, "largest image (width x height pixels) accepted; a larger "
              "one is rejected as a bad frame", 1, 2**31 - 1, read_only=True),
]


class PerceptionNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("perception", **node_kwargs)
        p = declare_parameters_with_ranges(self, PARAMETERS)
        self.runtime = load_runtime(PerceptionRuntime, p["model_path"],
                                    runtime_options(p["backend"], p["providers"], p["threads"], p["fp16"]))
        self.max_image_pixels = int(p["max_image_pixels"])
        self.runtime.max_image_pixels = self.max_image_pixels
        if self.runtime.cache_note:  # exported at start: slow, torch loaded (the ONNX cache was missing or stale)
            self.get_logger().warning(self.runtime.cache_note)
        self.gate = FrameGate(p["bad_frame_window_s"])
        self.publisher = self.create_publisher(Image, FEATURES.name, qos_profile(FEATURES))
        if p["input"] == "raw":
            self.create_subscription(Image, CAMERA_IMAGE.name, self.on_image,
                                     qos_profile(CAMERA_IMAGE, depth=1, subscriber=True))
        else:
            self.create_subscription(CompressedImage, CAMERA_COMPRESSED.name, self.on_image,
                                     qos_profile(CAMERA_COMPRESSED, depth=1, subscriber=True))
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self.publish_diagnostics)
        self.scheduling = configure_scheduling(self, p)
        self.get_logger().info(f"perception: {self.runtime.source} on {self.runtime.backend} "
                               f"{self.runtime.providers or ''}, "
                               f"{self.runtime.feature_size} features from {p['input']} images")

    def decode(self, msg) -> tuple[np.ndarray, str]:
        """(uint8 image, encoding for preprocess); ValueError for a bad message."""
        if isinstance(msg, CompressedImage):
            image, _ = compressed_image_to_rgb(msg.format, msg.data, self.max_image_pixels)
            return image, "rgb8"
        return raw_image_view(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
                              self.max_image_pixels)

    def on_image(self, msg) -> None:
        started = time.perf_counter()
        now = now_seconds(self)
        if not self.gate.admit(stamp_to_seconds(msg.header.stamp), now):
            return
        try:
            image, encoding = self.decode(msg)
            features = self.runtime.features(image, encoding)
        except ValueError as error:
            self.gate.frame_rejected(now, str(error))
            self.get_logger().error(f"bad image rejected: {error}", throttle_duration_sec=1.0)
            return
        height, width, encoding, step, bigendian, data = features_to_payload(features)
        out = Image(header=msg.header, height=height, width=width, encoding=encoding, step=step,
                    is_bigendian=bigendian, data=data)
        self.publisher.publish(out)
        self.gate.features_sent(time.perf_counter() - started)

    def publish_diagnostics(self) -> None:
        now = now_seconds(self)
        values = {**self.gate.values(now), "backend": self.runtime.backend,
                  "providers": ",".join(self.runtime.providers), "scheduling": self.scheduling}
        level, message = self.gate.status(now)
        self.diagnostics.publish(make_status("perception", level, message, values,
                                             hardware_id=runtime_hardware_id(self.runtime)))


def main(args: list[str] | None = None) -> int:
    return spin_node(PerceptionNode, args)


if __name__ == "__main__":
    sys.exit(main())
