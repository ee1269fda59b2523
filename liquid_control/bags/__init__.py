"""rosbag2 files without ROS: writing (MCAP), reading (MCAP and sqlite3), image decoding.

Modules:
- `writer`: crash-safe rosbag2 MCAP writer (chunks flushed and metadata.yaml
  rewritten at least once per second) and `repair_bag` for an MCAP whose
  writer was killed before it wrote its summary.
- `reader`: `BagReader` over rosbag2 directories, bare .mcap/.db3 files and
  truncated MCAPs (repaired into a temporary copy), with image/command topic
  auto-detection.
- `images`: sensor_msgs/Image and CompressedImage payloads to RGB uint8 arrays.
- `episode`: a simulated episode straight to a bag.

Offline evaluation of a policy on a bag lives in liquid_control.evaluation.bag.

Nothing here imports rclpy; the ROS side lives in `liquid_control.nodes`. See docs/BAGS.md.
"""
from __future__ import annotations


class BagError(ValueError):
    """A bag (or a message in it) cannot be used; the message names the problem and the file.

    A ValueError, so node start-up (nodes.common.spin_node) reports it as bad input without a traceback.
    """


__all__ = ["BagError"]
