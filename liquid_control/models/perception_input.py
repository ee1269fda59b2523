"""The input side of perception, without torch: `PerceptionConfig` (stored in model files and ONNX
exports) and `preprocess` (camera frame -> network input), so that the perception node on the
onnxruntime path never imports torch (the network itself is `models.perception.FeatureExtractor`).

`preprocess` turns a camera frame of any size (rgb8, bgr8 or mono8, as in sensor_msgs/Image) into
float32 (3, H, W) RGB in [0, 1] at the configured size (OpenCV INTER_AREA resize).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liquid_control.config import ConfigBase
from liquid_control.interfaces.codec import MAX_IMAGE_PIXELS

ENCODINGS = ("rgb8", "bgr8", "mono8")
# Sanity bounds on a config read from a file: far above anything useful for a <= 300K-parameter net
# (DESIGN.md budget), far below what would make building the network allocate gigabytes.
MAX_INPUT_SIDE = 2048
MAX_CHANNELS = 1024
MAX_CONV_LAYERS = 10
MAX_KEYPOINTS = 1024
MAX_FEATURES = 4096
INPUT_NORMS = ("none", "image", "channel")


@dataclass
class PerceptionConfig(ConfigBase):
    """Network input size and architecture (stored in model files).

    Attributes:
        height, width: image size the network sees (pixels); the camera default 128x96 (WxH).
        channels: input channels (3: RGB).
        conv_channels: output channels of the stride-2 3x3 convs; each halves H and W.
        keypoints: spatial-softmax keypoint maps (each gives an expected (x, y) in [-1, 1]).
        feature_size: length of the output feature vector.
        input_norm: how the network scales its input image before the first conv (inside the network,
            so ONNX exports and every runtime carry it):
            "none": fixed centring, (x - 0.5) * 4 (the models shipped before round 6);
            "image": subtract the frame's mean over all pixels and channels and divide by its standard
                deviation, so a global change of brightness or exposure (dim light, gain) cancels;
            "channel": subtract each channel's own mean, then divide by the frame's standard deviation,
                so a global colour cast (white balance, coloured light) cancels too.
        keypoint_strength: also give the head each keypoint map's largest logit, how strongly its best
            match is present. A spatial softmax always returns a position, even when nothing in the
            frame matches (the target out of view, only an orange object in it); its peak logit tells a
            strong match from the best of weak ones. Adds `keypoints` inputs to the head (False: the
            models shipped before round 10).
    """

    height: int = 96
    width: int = 128
    channels: int = 3
    conv_channels: tuple[int, ...] = (16, 32, 48, 64)
    keypoints: int = 16
    feature_size: int = 32
    input_norm: str = "none"
    keypoint_strength: bool = False

    def __post_init__(self) -> None:
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        problems = []
        if self.channels != 3:
            problems.append(f"channels must be 3 (RGB), got {self.channels}")
        if not self.conv_channels or any(c < 1 for c in self.conv_channels):
            problems.append("conv_channels must be a non-empty list of positive integers")
        if self.input_norm not in INPUT_NORMS:
            problems.append(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.keypoints < 1 or self.feature_size < 1:
            problems.append("keypoints and feature_size must be positive")
        if len(self.conv_channels) > MAX_CONV_LAYERS or any(c > MAX_CHANNELS for c in self.conv_channels):
            problems.append(f"conv_channels: at most {MAX_CONV_LAYERS} layers of at most {MAX_CHANNELS} channels")
        if self.keypoints > MAX_KEYPOINTS or self.feature_size > MAX_FEATURES:
            problems.append(f"keypoints must be <= {MAX_KEYPOINTS} and feature_size <= {MAX_FEATURES}")
        if self.height > MAX_INPUT_SIDE or self.width > MAX_INPUT_SIDE:
            problems.append(f"image {self.height}x{self.width}: at most {MAX_INPUT_SIDE} pixels per side")
        reduction = 2 ** len(self.conv_channels)
        if self.height < reduction or self.width < reduction:
            problems.append(f"image {self.height}x{self.width} is too small for {len(self.conv_channels)} "
                            f"stride-2 convolutions (needs >= {reduction} pixels per side)")
        if problems:
            raise ValueError("PerceptionConfig: " + "; ".join(problems))

    def head_inputs(self) -> int:
        """Inputs of the final linear layer: keypoint (x, y) [+ peak logits] + pooled trunk channels."""
        per_keypoint = 3 if self.keypoint_strength else 2
        return per_keypoint * self.keypoints + self.conv_channels[-1]

    def feature_map_size(self) -> tuple[int, int]:
        """(H, W) after the stride-2 convolutions (padding 1, kernel 3)."""
        h, w = self.height, self.width
        for _ in self.conv_channels:
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        return h, w


def count_macs(config: PerceptionConfig) -> int:
    """Multiply-accumulates of one FeatureExtractor forward (convs + head), for budgeting."""
    macs, channels, h, w = 0, config.channels, config.height, config.width
    for out_channels in config.conv_channels:
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        macs += h * w * out_channels * channels * 9
        channels = out_channels
    macs += h * w * config.keypoints * channels
    macs += config.head_inputs() * config.feature_size
    return macs


def preprocess(image: np.ndarray, encoding: str, config: PerceptionConfig | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Camera frame -> float32 (3, H, W) RGB in [0, 1] at the config's size.

    Args:
        image: uint8 array (H, W, 3) for rgb8/bgr8, (H, W) or (H, W, 1) for mono8, any size;
            float32/float64 arrays with values in [0, 1] are accepted too.
        encoding: "rgb8", "bgr8" or "mono8" (sensor_msgs/Image encodings).
        max_pixels: largest H * W accepted (default interfaces.codec.MAX_IMAGE_PIXELS, 4096 x 4096):
            converting and resizing is linear in the pixels, so a huge frame would stall the caller
            (a 10000x20000 frame took 16.5 s here).
    Raises:
        ValueError naming the problem: unknown encoding, wrong dtype or shape, empty or too large
        image, NaN/inf or out-of-range float values.
    """
    config = PerceptionConfig() if config is None else config
    if encoding not in ENCODINGS:
        raise ValueError(f"preprocess: unsupported encoding {encoding!r}; expected one of {ENCODINGS}")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"preprocess: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 and image.dtype not in (np.float32, np.float64):
        raise ValueError(f"preprocess: expected dtype uint8 (or float in [0, 1]), got {image.dtype}")
    if encoding == "mono8":
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim != 2:
            raise ValueError(f"preprocess: mono8 image must be (H, W) or (H, W, 1), got shape {image.shape}")
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"preprocess: {encoding} image must be (H, W, 3), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"preprocess: empty image (shape {image.shape})")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ValueError(f"preprocess: image {image.shape[1]}x{image.shape[0]} exceeds the limit of "
                         f"{max_pixels} pixels")
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise ValueError("preprocess: image contains NaN or inf")
        if image.min() < 0.0 or image.max() > 1.0:
            raise ValueError(f"preprocess: float image values must be in [0, 1], got "
                             f"[{image.min():.3g}, {image.max():.3g}]")
        image = image.astype(np.float32)
    image = np.ascontiguousarray(image)
    if encoding == "bgr8":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif encoding == "mono8":
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[:2] != (config.height, config.width):
        image = cv2.resize(image, (config.width, config.height), interpolation=cv2.INTER_AREA)
    out = image.astype(np.float32)
    if image.dtype == np.uint8:
        out *= 1.0 / 255.0
    return np.ascontiguousarray(out.transpose(2, 0, 1))
