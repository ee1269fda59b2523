"""ROS 2 node: camera image -> stamped feature vector for the policy.

Subscribes `camera/image_raw` (sensor_msgs/Image: rgb8, bgr8, mono8) or, with
`input:=compressed`, `camera/image_raw/compressed` (sensor_msgs/CompressedImage,
jpeg/png); publishes `features` (sensor_msgs/Image 1xN `32FC1`, same header as
the source image, so the policy knows the capture time) and `/diagnostics`.
Both streams use the sensor-data QoS with depth 1: only the newest frame is ever
processed, a slow step drops frames instead of queueing them.

Safety semantics: a bad image (unsupported encoding, size/step that does not match
the data, truncated data, non-finite features) is logged, counted and reported
(ERROR while the newest frame is bad, WARN while bad frames are recent); the node
keeps running and publishes nothing for that frame, so the policy's watchdog sees
the gap. Logic: models.perception.preprocess + runtime.PerceptionRuntime.
"""
import sys
import time
from collections import deque

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from liquid_control.bags import BagError
from liquid_control.bags.images import decode_compressed_image
from liquid_control.feature_codec import features_to_payload, image_view
from liquid_control.inference.model_source import load_runtime, runtime_options
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, configure_scheduling,
                                         declare_parameters_with_ranges, inference_parameters, make_status,
                                         now_seconds, scheduling_parameters, sensor_qos, spin_node,
                                         stamp_to_seconds)
from liquid_control.inference.runtime import PerceptionRuntime
from liquid_control.util.timing import RateMeter

# A stamp this much older than the newest frame is a new timeline (bag loop, sim restart), not a late frame.
TIME_JUMP_BACK_S = 1.0

PARAMETERS = inference_parameters("perception") + scheduling_parameters() + [
    ParamSpec("input", "raw", "which camera stream to subscribe: raw (camera/image_raw) or compressed "
              "(camera/image_raw/compressed)", choices=("raw", "compressed"), read_only=True),
    ParamSpec("diagnostics_rate_hz", 1.0, "/diagnostics rate (Hz)", 0.2, 20.0),
    ParamSpec("bad_frame_window_s", 5.0, "a bad frame within this many seconds keeps the diagnostics at WARN (s)",
              0.1, 600.0),
]


class PerceptionNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("perception", **node_kwargs)
        p = declare_parameters_with_ranges(self, PARAMETERS)
        self.params = p
        self.runtime = load_runtime(PerceptionRuntime, p["model_path"],
                                    runtime_options(p["backend"], p["providers"], p["threads"], p["fp16"]))
        self.rate = RateMeter()
        self.counts = {"frames_in": 0, "features_out": 0, "bad_frames": 0, "out_of_order_frames": 0,
                       "time_jumps_back": 0}
        self.process_ms: deque[float] = deque(maxlen=300)
        self.last_error = ""
        self.last_bad_s = -float("inf")
        self.newest_bad = False
        self.newest_stamp_s = -float("inf")
        self.publisher = self.create_publisher(Image, "features", sensor_qos(1))
        if p["input"] == "raw":
            self.create_subscription(Image, "camera/image_raw", self.on_image, sensor_qos(1))
        else:
            self.create_subscription(CompressedImage, "camera/image_raw/compressed", self.on_image, sensor_qos(1))
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self.publish_diagnostics)
        self.scheduling = configure_scheduling(self, p)
        self.get_logger().info(f"perception: {self.runtime.source} on {self.runtime.backend} "
                               f"{self.runtime.providers or ''}, "
                               f"{self.runtime.feature_size} features from {p['input']} images")

    def decode(self, msg) -> tuple[np.ndarray, str]:
        """(uint8 image, encoding for preprocess); ValueError/BagError for a bad message."""
        if isinstance(msg, CompressedImage):
            image, _ = decode_compressed_image(msg.format, msg.data)
            return image, "rgb8"
        view = image_view(msg.width, msg.height, msg.encoding, msg.step, msg.data)
        return view, msg.encoding

    def on_image(self, msg) -> None:
        started = time.perf_counter()
        now = now_seconds(self)
        self.counts["frames_in"] += 1
        self.rate.tick(now)
        stamp = stamp_to_seconds(msg.header.stamp)
        if stamp < self.newest_stamp_s - TIME_JUMP_BACK_S:  # a looped bag or restarted sim: a new timeline
            self.counts["time_jumps_back"] += 1
        elif stamp < self.newest_stamp_s:  # an older frame overtaken by a newer one: never act on the past
            self.counts["out_of_order_frames"] += 1
            return
        self.newest_stamp_s = stamp
        try:
            image, encoding = self.decode(msg)
            features = self.runtime.features(image, encoding)
        except (ValueError, BagError) as error:
            self.counts["bad_frames"] += 1
            self.newest_bad, self.last_bad_s, self.last_error = True, now, str(error)
            self.get_logger().error(f"bad image rejected: {error}", throttle_duration_sec=1.0)
            return
        self.newest_bad = False
        height, width, encoding, step, bigendian, data = features_to_payload(features)
        out = Image(header=msg.header, height=height, width=width, encoding=encoding, step=step,
                    is_bigendian=bigendian, data=data)
        self.publisher.publish(out)
        self.counts["features_out"] += 1
        self.process_ms.append((time.perf_counter() - started) * 1e3)

    def publish_diagnostics(self) -> None:
        now = now_seconds(self)
        times = sorted(self.process_ms)
        values = {"input_rate_hz": self.rate.rate_hz(now), "backend": self.runtime.backend,
                  "providers": ",".join(self.runtime.providers), "scheduling": self.scheduling,
                  "process_p50_ms": times[len(times) // 2] if times else 0.0,
                  "process_max_ms": times[-1] if times else 0.0, **self.counts, "last_error": self.last_error}
        if self.newest_bad:
            level, message = 2, f"newest image rejected: {self.last_error}"
        elif now - self.last_bad_s < self.params["bad_frame_window_s"]:
            level, message = 1, f"recent bad image: {self.last_error}"
        elif self.counts["frames_in"] == 0:
            level, message = 1, "waiting for images"
        else:
            level, message = 0, "running"
        self.diagnostics.publish(make_status("perception", level, message, values))


def main(args: list[str] | None = None) -> int:
    return spin_node(PerceptionNode, args)


if __name__ == "__main__":
    sys.exit(main())
