"""RGB uint8 arrays from the image messages in a bag (sensor_msgs/Image and CompressedImage).

ROS-free: works on any object with the message's field names (rosbags' deserialised
dataclasses, rclpy messages, or plain namespaces). The decoding rules are the live
perception node's (liquid_control.interfaces.codec); problems raise `BagError`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from liquid_control.bags import BagError
from liquid_control.interfaces.codec import compressed_image_to_rgb, raw_image_to_rgb


def image_message_to_rgb(msg: Any) -> tuple[np.ndarray, str]:
    """(RGB (H, W, 3) uint8 image, encoding) from an Image (has `encoding`) or a CompressedImage (has `format`).

    The returned encoding is the Image's encoding, or 'jpeg'/'png' for a CompressedImage.
    """
    try:
        if hasattr(msg, "encoding") and hasattr(msg, "step"):
            encoding = str(msg.encoding)
            return raw_image_to_rgb(encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian),
                                    msg.data), encoding
        if hasattr(msg, "format") and hasattr(msg, "data"):
            return compressed_image_to_rgb(str(msg.format), msg.data)
    except ValueError as error:
        raise BagError(str(error)) from error
    raise BagError(f"{type(msg).__name__} is neither a sensor_msgs/Image nor a sensor_msgs/CompressedImage")
