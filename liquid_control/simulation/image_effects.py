"""Camera imperfections: exposure, blur, noise (applied to the image) and frame drops, latency, a changing
frame rate and blackouts (timing).

All randomness comes from the generator passed in, so a seeded world gives identical images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ImageEffects:
    """noise_std: Gaussian pixel noise, in 0..255 units. blur_px: Gaussian blur sigma in pixels (0 = off).
    exposure_gain: multiplies intensities (1 = unchanged); exposure_jitter: per-frame log-normal sigma on it.
    frame_drop_prob: chance a frame never arrives. latency_s: mean delay from capture to delivery,
    latency_jitter_s: uniform +- jitter on it (never below 0).
    rate_schedule: (start time s, rate Hz) segments in time order, the first at 0; the camera runs at a
    segment's rate from its start to the next one's (empty: the camera's own fixed rate_hz).
    blackouts: (start s, end s) windows; frames captured inside one arrive all black."""

    noise_std: float = 0.0
    blur_px: float = 0.0
    exposure_gain: float = 1.0
    exposure_jitter: float = 0.0
    frame_drop_prob: float = 0.0
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    rate_schedule: tuple[tuple[float, float], ...] = ()
    blackouts: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("noise_std", "blur_px", "exposure_jitter", "latency_s", "latency_jitter_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"ImageEffects.{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.exposure_gain) and self.exposure_gain > 0.0):
            raise ValueError(f"ImageEffects.exposure_gain must be positive, got {self.exposure_gain!r}")
        if not 0.0 <= self.frame_drop_prob < 1.0:
            raise ValueError(f"ImageEffects.frame_drop_prob must be in [0, 1), got {self.frame_drop_prob!r}")
        schedule = tuple((float(start), float(rate)) for start, rate in self.rate_schedule)
        starts = [start for start, _ in schedule]
        if schedule and (starts[0] != 0.0 or starts != sorted(starts)
                         or not all(math.isfinite(rate) and rate > 0.0 for _, rate in schedule)):
            raise ValueError("ImageEffects.rate_schedule must be (start s, rate Hz > 0) segments in time order "
                             f"starting at 0, got {self.rate_schedule!r}")
        object.__setattr__(self, "rate_schedule", schedule)
        blackouts = tuple((float(start), float(end)) for start, end in self.blackouts)
        if not all(math.isfinite(start) and start <= end for start, end in blackouts):
            raise ValueError(f"ImageEffects.blackouts must be (start s, end s) windows, got {self.blackouts!r}")
        object.__setattr__(self, "blackouts", blackouts)

    @property
    def changes_pixels(self) -> bool:
        return self.noise_std > 0 or self.blur_px > 0 or self.exposure_gain != 1.0 or self.exposure_jitter > 0


def apply_pixel_effects(image: np.ndarray, effects: ImageEffects, rng: np.random.Generator) -> np.ndarray:
    """Exposure, then blur, then noise, on a uint8 HxWx3 image; returns a new uint8 image."""
    if not effects.changes_pixels:
        return image
    out = image.astype(np.float32)
    gain = effects.exposure_gain
    if effects.exposure_jitter > 0:
        gain *= math.exp(rng.normal(0.0, effects.exposure_jitter))
    if gain != 1.0:
        out *= gain
    if effects.blur_px > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=effects.blur_px, borderType=cv2.BORDER_REFLECT)
    if effects.noise_std > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(effects.noise_std)
    np.clip(out, 0.0, 255.0, out=out)
    return (out + 0.5).astype(np.uint8)


def blacked_out(effects: ImageEffects, capture_time_s: float) -> bool:
    """Whether a frame captured at this time falls in a blackout window (ends included)."""
    return any(start <= capture_time_s <= end for start, end in effects.blackouts)


def sample_latency(effects: ImageEffects, rng: np.random.Generator) -> float:
    """Delay (s) of one frame: mean latency plus uniform jitter, never negative."""
    if effects.latency_jitter_s <= 0:
        return effects.latency_s
    return max(0.0, effects.latency_s + rng.uniform(-effects.latency_jitter_s, effects.latency_jitter_s))
