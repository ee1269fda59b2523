"""See what the policy sees: saliency maps and CfC neuron-state traces (ROS-free).

- `visual_backprop`: VisualBackProp (Bojarski et al. 2017, "VisualBackProp: efficient visualization
  of CNNs", as used to inspect the MIT liquid-network drone policies). The feature maps after each
  ReLU of the perception trunk are averaged over channels; starting from the deepest, the map is
  scaled up to the next shallower layer's size by a transposed convolution with the conv's kernel
  size and stride and all-ones weights (divided by the number of overlapping cells, which removes the
  deconvolution's checkerboard), and multiplied pointwise with that layer's averaged map;
  the last product is scaled up to the input size and normalised to [0, 1]. It shows which pixels
  drive the conv features, whatever the head and the policy do with them.
- `integrated_gradients`: integrated gradients (Sundararajan et al. 2017) of the policy's command
  w.r.t. the input image, through perception and ONE policy step with the carried recurrent state
  and the frame's timespan: attribution = (x - baseline) * mean over the straight path of
  d target / d x, with target the command's norm (default) or one axis. Baseline: black, or the
  image blurred (Gaussian, sigma a quarter of the width). The map is the per-pixel sum over
  channels of |attribution|, normalised to [0, 1]. Unlike VBP it sees the whole network.
- `replay_policy`: runs a frame sequence through perception + policy step by step, as deployed
  (timespans = capture-time difference / nominal frame period, 1.0 for the first frame), and keeps
  the recurrent state (the CfC's neurons) and the command after every frame.
- `mass_stats`: where a saliency map's mass lies (centroid, thirds of the image, a region mask).

Perception here is any module with a `trunk` (nn.Sequential of Conv2d and ReLU, as
`FeatureExtractor`) whose forward maps (B, 3, H, W) images in [0, 1] to features: VBP hooks the
trunk's ReLUs during the module's own forward, so whatever the module does to the image before its
trunk is respected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from liquid_control.inference.loop import timespan

METHODS = ("vbp", "ig")
IG_TARGETS = ("norm", "vx", "vy", "vz", "yaw_rate")
IG_BASELINES = ("black", "blur")


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> each map scaled to [0, 1] (an all-constant map becomes zeros)."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    out = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.view_as(maps)


def _trunk_layers(perception: nn.Module) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, relu) pairs of perception.trunk, in order."""
    trunk = getattr(perception, "trunk", None)
    if not isinstance(trunk, nn.Sequential):
        raise ValueError("visual_backprop: the perception module needs a `trunk` nn.Sequential of Conv2d + ReLU")
    pairs, conv = [], None
    for module in trunk:
        if isinstance(module, nn.Conv2d):
            conv = module
        elif isinstance(module, nn.ReLU) and conv is not None:
            pairs.append((conv, module))
            conv = None
    if not pairs:
        raise ValueError("visual_backprop: no Conv2d followed by ReLU in the perception trunk")
    return pairs


def _scale_up(mask: torch.Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) -> (B, 1, *size): transposed conv with `conv`'s geometry and all-ones weights."""
    kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
    if isinstance(padding, str):
        raise ValueError("visual_backprop: string padding is not supported")
    out_pad = []
    for axis in range(2):
        natural = (mask.shape[2 + axis] - 1) * stride[axis] - 2 * padding[axis] + kernel[axis]
        extra = size[axis] - natural
        if not 0 <= extra < stride[axis]:
            return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)  # odd geometry
        out_pad.append(extra)
    ones = torch.ones(1, 1, *kernel, dtype=mask.dtype, device=mask.device)
    up = F.conv_transpose2d(mask, ones, stride=stride, padding=padding, output_padding=tuple(out_pad))
    # Divide by how many input cells reach each output pixel: the plain all-ones deconvolution of a
    # stride-2, 3x3 conv counts 1, 2 or 4 of them, a checkerboard that says nothing about the image.
    overlap = F.conv_transpose2d(torch.ones_like(mask[:1]), ones, stride=stride, padding=padding,
                                 output_padding=tuple(out_pad))
    return up / overlap.clamp_min(1.0)


@torch.no_grad()
def visual_backprop(perception: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """VisualBackProp masks: images (B, 3, H, W) in [0, 1] -> (B, H, W) in [0, 1]."""
    pairs = _trunk_layers(perception)
    inputs: list[tuple[int, int]] = []
    outputs: list[torch.Tensor] = []
    hooks = []
    for conv, relu in pairs:
        hooks.append(conv.register_forward_hook(lambda m, args, out: inputs.append(tuple(args[0].shape[2:]))))
        hooks.append(relu.register_forward_hook(lambda m, args, out: outputs.append(out.mean(dim=1, keepdim=True))))
    try:
        perception(images)
    finally:
        for hook in hooks:
            hook.remove()
    if len(outputs) != len(pairs):
        raise ValueError("visual_backprop: the perception forward did not run every trunk layer once")
    mask = outputs[-1]
    for level in range(len(pairs) - 1, 0, -1):
        mask = _scale_up(mask, pairs[level][0], outputs[level - 1].shape[2:]) * outputs[level - 1]
    mask = _scale_up(mask, pairs[0][0], inputs[0])
    if tuple(mask.shape[2:]) != tuple(images.shape[2:]):
        mask = F.interpolate(mask, size=images.shape[2:], mode="bilinear", align_corners=False)
    return _normalise(mask[:, 0])


def blurred(images: torch.Tensor, sigma_fraction: float = 0.25) -> torch.Tensor:
    """Gaussian blur with sigma = sigma_fraction * width (the 'blurred image' IG baseline)."""
    import cv2

    out = []
    for image in images.detach().cpu().numpy():
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        sigma = max(sigma_fraction * hwc.shape[1], 0.5)
        out.append(cv2.GaussianBlur(hwc, (0, 0), sigma, borderType=cv2.BORDER_REFLECT).reshape(hwc.shape)
                   .transpose(2, 0, 1))
    return torch.as_tensor(np.stack(out), dtype=images.dtype, device=images.device)


def integrated_gradients(perception: nn.Module, policy: nn.Module, images: torch.Tensor, states: torch.Tensor,
                         timespans: torch.Tensor, target: str = "norm", baseline: str = "black",
                         steps: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients of the command w.r.t. each image.

    Args:
        images: (B, 3, H, W) in [0, 1]; states: (B, S) recurrent state BEFORE each frame;
        timespans: (B, 1) in nominal frame periods; target: "norm" (of the 4-vector command) or an
        axis name; baseline: "black" or "blur"; steps: Riemann steps (midpoint rule) on the path.
    Returns:
        (maps (B, H, W) in [0, 1], attributions (B, 3, H, W) raw, signed).
    """
    if target not in IG_TARGETS:
        raise ValueError(f"integrated_gradients: target {target!r} is not one of {IG_TARGETS}")
    if baseline not in IG_BASELINES:
        raise ValueError(f"integrated_gradients: baseline {baseline!r} is not one of {IG_BASELINES}")
    if steps < 1:
        raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}")
    base = torch.zeros_like(images) if baseline == "black" else blurred(images)
    alphas = (torch.arange(steps, dtype=images.dtype, device=images.device) + 0.5) / steps
    attributions = []
    for k in range(images.shape[0]):
        path = base[k:k + 1] + alphas.view(-1, 1, 1, 1) * (images[k:k + 1] - base[k:k + 1])
        path.requires_grad_(True)
        command, _ = policy.step(perception(path), states[k:k + 1].expand(steps, -1),
                                 timespans[k:k + 1].expand(steps, -1))
        value = command.norm(dim=1) if target == "norm" else command[:, IG_TARGETS.index(target) - 1]
        (grad,) = torch.autograd.grad(value.sum(), path)
        attributions.append((images[k] - base[k]) * grad.mean(dim=0))
    attr = torch.stack(attributions).detach()
    return _normalise(attr.abs().sum(dim=1)), attr


@dataclass
class Replay:
    """Per frame k: the input image, the policy state before and after the step, the command."""

    inputs: torch.Tensor  # (N, 3, H, W) network input in [0, 1]
    timespans: np.ndarray  # (N,) nominal frame periods
    states_before: torch.Tensor  # (N, S)
    states: np.ndarray  # (N, S) after the step (the traces)
    commands: np.ndarray  # (N, 4) [vx, vy, vz, yaw_rate]


@torch.no_grad()
def replay_policy(perception: nn.Module, policy: nn.Module, inputs: torch.Tensor,
                  capture_times_s: Sequence[float]) -> Replay:
    """Step the policy through the frames as deployed (state carried, timespans from capture times)."""
    times = np.asarray(capture_times_s, dtype=float)
    if inputs.shape[0] != times.size or times.size == 0:
        raise ValueError(f"replay_policy: {inputs.shape[0]} images but {times.size} capture times")
    spans = np.ones(times.size)
    spans[1:] = timespan(np.diff(times), float(policy.config.frame_period_s))  # the package's one rule
    features = torch.cat([perception(inputs[i:i + 64]) for i in range(0, inputs.shape[0], 64)])
    state = policy.initial_state(1)
    before, after, commands = [], [], []
    for k in range(times.size):
        before.append(state[0])
        command, state = policy.step(features[k:k + 1], state, torch.tensor([[spans[k]]], dtype=features.dtype))
        after.append(state[0])
        commands.append(command[0])
    return Replay(inputs, spans, torch.stack(before), torch.stack(after).numpy(), torch.stack(commands).numpy())


def red_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of a red object (the targets of the shipped scenarios are red): uint8 RGB -> bool (H, W)."""
    rgb = image.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 0.3) & (r > 1.8 * g) & (r > 1.8 * b)


def mass_stats(saliency: np.ndarray, region: np.ndarray | None = None) -> dict[str, Any]:
    """Where the mass of one map (H, W), >= 0, lies: centroid (x, y in [-1, 1], right/down positive),
    fractions in the top/middle/bottom thirds and left/centre/right thirds, the peak, and with
    `region` (bool (H, W)) the fraction inside it next to the region's area fraction (chance level)."""
    s = np.asarray(saliency, dtype=np.float64)
    h, w = s.shape
    total = float(s.sum())
    out: dict[str, Any] = {"total": total}
    if total <= 0:
        return out
    ys, xs = np.linspace(-1, 1, h), np.linspace(-1, 1, w)
    rows, cols = s.sum(axis=1) / total, s.sum(axis=0) / total
    out["centroid_xy"] = [float(cols @ xs), float(rows @ ys)]
    thirds = lambda v: [float(part.sum()) for part in np.array_split(v, 3)]  # noqa: E731
    out["rows_top_middle_bottom"] = thirds(rows)
    out["cols_left_centre_right"] = thirds(cols)
    peak = np.unravel_index(int(np.argmax(s)), s.shape)
    out["peak_xy"] = [float(xs[peak[1]]), float(ys[peak[0]])]
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != s.shape:
            raise ValueError(f"mass_stats: region {region.shape} and map {s.shape} differ in shape")
        out["region_mass"] = float(s[region].sum() / total)
        out["region_area"] = float(region.mean())
    return out
