"""Perception: camera image -> feature vector for the policy.

`preprocess` turns a camera frame of any size (rgb8, bgr8 or mono8, as in
sensor_msgs/Image) into the network's input: float32 (3, H, W) RGB in [0, 1]
at the configured size (OpenCV INTER_AREA resize). `FeatureExtractor` is a
small strided conv net with a spatial-softmax keypoint head (where things are
in the image, which a velocity policy needs; optionally how strongly each
keypoint's best match is present) plus global average pooling (what is in the
image), followed by one linear layer to ``feature_size``.

Budget (DESIGN.md): <= 300K parameters, and perception + policy <= 1 ms per
frame on one CPU core under onnxruntime, so the default net is ~50K parameters
and ~9M multiply-accumulates at 96x128 (see `count_macs`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Re-exported: the torch-free input side lives in perception_input (the deploy nodes import only that).
from .perception_input import (ENCODINGS, INPUT_NORMS, MAX_CHANNELS, MAX_CONV_LAYERS, MAX_FEATURES, MAX_INPUT_SIDE,
                               MAX_KEYPOINTS, PerceptionConfig, count_macs, preprocess)

__all__ = ["ENCODINGS", "FeatureExtractor", "INPUT_NORMS", "MAX_CHANNELS", "MAX_CONV_LAYERS", "MAX_FEATURES", "MAX_INPUT_SIDE",
           "MAX_KEYPOINTS", "PerceptionConfig", "count_macs", "preprocess"]


# Floor on a frame's standard deviation (pixel units in [0, 1]) for input_norm: a black or uniform frame
# (camera blackout, a wall filling the view) stays near zero instead of amplifying sensor noise.
NORM_STD_FLOOR = 0.02


def normalise_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, 3, H, W) pixels in [0, 1] -> the first conv's input, per `PerceptionConfig.input_norm`."""
    if mode == "none":
        return (images - 0.5) * 4.0  # centre [0, 1] pixels to about unit range
    centred = images - images.mean(dim=(1, 2, 3) if mode == "image" else (2, 3), keepdim=True)
    rms = torch.sqrt((centred ** 2).mean(dim=(1, 2, 3), keepdim=True) + NORM_STD_FLOOR ** 2)
    return centred / rms


class FeatureExtractor(nn.Module):
    """Conv trunk + spatial-softmax keypoints + pooled channels -> (B, feature_size).

    Input: float (B, 3, height, width) RGB in [0, 1] (what `preprocess` returns, batched).
    """

    def __init__(self, config: PerceptionConfig | None = None) -> None:
        super().__init__()
        self.config = PerceptionConfig() if config is None else config
        cfg = self.config
        layers: list[nn.Module] = []
        in_channels = cfg.channels
        for out_channels in cfg.conv_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU()]
            in_channels = out_channels
        self.trunk = nn.Sequential(*layers)
        self.keypoint_maps = nn.Conv2d(in_channels, cfg.keypoints, 1)
        self.head = nn.Linear(cfg.head_inputs(), cfg.feature_size)
        fh, fw = cfg.feature_map_size()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, fh), torch.linspace(-1.0, 1.0, fw), indexing="ij")
        # Derived from the config, so not saved in model files (persistent=False); exports carry them.
        self.register_buffer("grid_x", xs.reshape(1, 1, -1), persistent=False)
        self.register_buffer("grid_y", ys.reshape(1, 1, -1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> features (B, feature_size)."""
        cfg = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.height, cfg.width):
            raise ValueError(f"perception: expected images (batch, {cfg.channels}, {cfg.height}, {cfg.width}), "
                             f"got {tuple(images.shape)}")
        x = self.trunk(normalise_input(images, cfg.input_norm))
        logits = self.keypoint_maps(x).flatten(2)  # (B, K, h*w)
        attention = F.softmax(logits, dim=-1)
        parts = [(attention * self.grid_x).sum(-1), (attention * self.grid_y).sum(-1)]
        if cfg.keypoint_strength:
            parts.append(logits.amax(dim=-1))
        parts.append(x.mean(dim=(2, 3)))
        return self.head(torch.cat(parts, dim=1))
