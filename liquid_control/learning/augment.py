"""Training-time augmentation: per-sequence photometric changes, random frame drops, timestamp jitter.

Photometric: brightness, contrast, saturation and Gaussian pixel noise, drawn once per
*sequence* (the MIT drone work, Chahine et al. 2023, augmented the same four factors; drawing
them per sequence keeps a sequence's appearance consistent, as a camera's is during a flight),
plus an optional per-channel gain (a colour cast, as a wrong white balance or a tinted sky gives;
off by default) that moves ground and sky colours while a red target stays the reddest thing.
Timing: frames are dropped at random and capture times jittered, so the CfC sees irregular
timespans (timespan = capture-time difference / nominal frame period) as a real camera gives.

Everything takes a `numpy.random.Generator`, so a seed reproduces the exact augmentation.
Images stay uint8 RGB in [0, 255].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

# ITU-R BT.601 luma weights: the grey that saturation interpolates towards.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges (sampled uniformly per sequence) and timing perturbations.

    brightness: added offset as a fraction of full scale (0.15 -> +-38 grey levels).
    contrast, saturation: multiplicative factors around 1 (contrast about the image mean,
        saturation about each pixel's luma).
    noise_std_max: Gaussian noise std drawn from [0, noise_std_max] grey levels.
    frame_drop_prob: probability that each frame (but the first of a sequence) is dropped.
    time_jitter_s: std of Gaussian noise added to each capture time (s); order is kept.
    channel_gain: range of a multiplicative gain drawn independently for R, G and B
        ((1, 1) = off).
    """

    brightness: float = 0.15
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.6, 1.4)
    noise_std_max: float = 6.0
    frame_drop_prob: float = 0.1
    time_jitter_s: float = 0.004
    channel_gain: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.brightness <= 1.0:
            problems.append(f"brightness must be in [0, 1], got {self.brightness}")
        for name in ("contrast", "saturation", "channel_gain"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                problems.append(f"{name} must be [low, high] with 0 <= low <= high, got {getattr(self, name)}")
        if self.noise_std_max < 0:
            problems.append(f"noise_std_max must be >= 0, got {self.noise_std_max}")
        if not 0.0 <= self.frame_drop_prob < 1.0:
            problems.append(f"frame_drop_prob must be in [0, 1), got {self.frame_drop_prob}")
        if self.time_jitter_s < 0:
            problems.append(f"time_jitter_s must be >= 0, got {self.time_jitter_s}")
        if problems:
            raise ValueError("AugmentConfig: " + "; ".join(problems))

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (validation)."""
        return cls(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), noise_std_max=0.0,
                   frame_drop_prob=0.0, time_jitter_s=0.0)


@dataclass(frozen=True)
class Photometric:
    """One sequence's photometric draw."""

    brightness: float  # grey levels added
    contrast: float
    saturation: float
    noise_std: float  # grey levels
    channel_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # R, G, B


def sample_photometric(config: AugmentConfig, rng: np.random.Generator) -> Photometric:
    photometric = Photometric(brightness=float(rng.uniform(-config.brightness, config.brightness) * 255.0),
                              contrast=float(rng.uniform(*config.contrast)),
                              saturation=float(rng.uniform(*config.saturation)),
                              noise_std=float(rng.uniform(0.0, config.noise_std_max)))
    if config.channel_gain != (1.0, 1.0):  # drawn only when on: older recipes keep their exact random stream
        gains = rng.uniform(*config.channel_gain, size=3)
        photometric = dataclasses.replace(photometric, channel_gain=tuple(float(g) for g in gains))
    return photometric


def apply_photometric(images: np.ndarray, params: Photometric, rng: np.random.Generator) -> np.ndarray:
    """uint8 (..., H, W, 3) RGB -> uint8 of the same shape with one draw applied to every frame."""
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"augment: expected uint8 (..., H, W, 3) RGB images, got {images.dtype} {images.shape}")
    x = images.astype(np.float32)
    if params.channel_gain != (1.0, 1.0, 1.0):
        x = x * np.asarray(params.channel_gain, dtype=np.float32)
    grey = x @ LUMA  # (..., H, W)
    x = grey[..., None] + params.saturation * (x - grey[..., None])
    mean = x.mean(axis=(-3, -2, -1), keepdims=True)  # per-frame mean: contrast keeps each frame's level
    x = mean + params.contrast * (x - mean) + params.brightness
    if params.noise_std > 0:
        x += rng.normal(0.0, params.noise_std, size=x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def drop_mask(count: int, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean keep-mask of length `count`; the first frame is always kept."""
    keep = rng.random(count) >= probability
    if count:
        keep[0] = True
    return keep


def jitter_times(times_s: np.ndarray, std_s: float, rng: np.random.Generator,
                 min_gap_s: float = 1e-3) -> np.ndarray:
    """Capture times plus Gaussian jitter, kept strictly increasing (gaps >= min_gap_s)."""
    times = np.asarray(times_s, dtype=np.float64)
    if std_s <= 0 or times.size == 0:
        return times.copy()
    out = times + rng.normal(0.0, std_s, size=times.shape)
    for k in range(1, out.size):  # sequences are short (tens of frames): a plain loop is fine
        out[k] = max(out[k], out[k - 1] + min_gap_s)
    return out


def timespans(times_s: np.ndarray, frame_period_s: float, first: float = 1.0) -> np.ndarray:
    """Timespans in nominal frame periods between consecutive capture times; `first` for frame 0."""
    from liquid_control.inference.loop import timespan

    times = np.asarray(times_s, dtype=np.float64)
    spans = np.empty(times.shape, dtype=np.float32)
    spans[1:] = timespan(np.diff(times), frame_period_s)  # unclipped (raises for a period <= 0)
    if times.size:
        spans[0] = first
    return spans
