"""Training-time augmentation: per-sequence photometric changes, random frame drops, timestamp jitter.

Photometric: brightness, contrast, saturation and Gaussian pixel noise, drawn once per
*sequence* (the MIT drone work, Chahine et al. 2023, augmented the same four factors; drawing
them per sequence keeps a sequence's appearance consistent, as a camera's is during a flight),
plus an optional per-channel gain (a colour cast, as a wrong white balance or a tinted sky gives;
off by default) that moves ground and sky colours while a red target stays the reddest thing.
Scene: with a per-pixel class mask (sky / ground / target / other objects, stored by the
collector), the background and distractors are recoloured at random while the target keeps its
colour, their texture kept as luminance variation, plus an image-fixed random texture on the
ground; this teaches perception that the target, not the scenery, carries the command (domain
randomisation). Horizontal flips mirror the scene and the label (vy and yaw rate change sign:
the airframe and camera are left-right symmetric). Random blur and cutout rectangles (never over
the target) complete the image side.
Timing: frames are dropped at random and capture times jittered, so the CfC sees irregular
timespans (timespan = capture-time difference / nominal frame period) as a real camera gives.

Everything takes a `numpy.random.Generator`, so a seed reproduces the exact augmentation.
Images stay uint8 RGB in [0, 255].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from liquid_control.inference.loop import timespan
from liquid_control.simulation.camera import SEGMENT_GROUND, SEGMENT_OTHER, SEGMENT_SKY, SEGMENT_TARGET

# Classes that `recolour_classes` names (the target is never recoloured: red stays the target's colour).
RECOLOUR_CLASS_NAMES = {"sky": SEGMENT_SKY, "ground": SEGMENT_GROUND, "objects": SEGMENT_OTHER}

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
    frame_drop_prob_max: when above frame_drop_prob, each sequence draws its drop probability from
        [frame_drop_prob, frame_drop_prob_max]: sequences at lower effective frame rates, so the
        timespans the CfC trains on span several nominal periods, not just 1-2.
    time_jitter_s: std of Gaussian noise added to each capture time (s); order is kept.
    channel_gain: range of a multiplicative gain drawn independently for R, G and B
        ((1, 1) = off).
    recolour_prob: probability, per sequence and per class (sky, ground, other objects), that the
        class is recoloured (needs segmentation; 0 = off).
    recolour_classes: which classes may be recoloured: any of "sky", "ground", "objects" (default all).
    recolour_hue_margin_deg: which colours recolouring and cutout may draw. 0: none with R > 0.45 and R
        above 1.6 x G and 1.6 x B (no red, but no orange or pink either, so the policy never learns that
        those are not the target); > 0: none within this hue distance (degrees) of the target's reds
        (hue 352-8 deg) at saturation >= 0.45, so orange, pink and purple objects are drawn as hard negatives.
    shade: range of a factor drawn per sequence that scales every lit surface (ground, objects and the
        target; not the sky, which the simulator does not light): dim or low light as in shadow, dusk or
        an overcast day darkens what the sun lights while the sky stays bright, so the red target and the
        other objects all go dark (needs segmentation; (1, 1) = off).
    ground_texture_max: amplitude (grey levels) of a random image-fixed texture added to the
        ground, drawn from [0, max] per sequence (needs segmentation; 0 = off).
    blur_sigma_max: Gaussian blur sigma (pixels at the stored size) drawn from [0, max] per sequence.
    cutout_prob: probability per frame of one random rectangle of random colour (target pixels stay).
    cutout_max_frac: largest rectangle side as a fraction of the image side.
    flip_prob: probability per sequence of a horizontal mirror (labels: vy, yaw rate negated).
    hide_prob: probability, per training chunk of a stream not already in a gap, that the target is
        hidden from there for a duration drawn from hide_duration_s: black frames, or (with a mask, half
        the time) a random grey box over the target, as a passing occluder. The labels stay the
        expert's, so the policy has to carry the course or the chase through the gap from memory
        (0 = off).
    hide_duration_s: [low, high] duration of one hidden-target gap (s of capture time).
    """

    brightness: float = 0.15
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.6, 1.4)
    noise_std_max: float = 6.0
    frame_drop_prob: float = 0.1
    frame_drop_prob_max: float = 0.0
    time_jitter_s: float = 0.004
    channel_gain: tuple[float, float] = (1.0, 1.0)
    recolour_prob: float = 0.0
    recolour_classes: tuple[str, ...] = ("sky", "ground", "objects")
    recolour_hue_margin_deg: float = 0.0
    shade: tuple[float, float] = (1.0, 1.0)
    ground_texture_max: float = 0.0
    blur_sigma_max: float = 0.0
    cutout_prob: float = 0.0
    cutout_max_frac: float = 0.4
    flip_prob: float = 0.0
    hide_prob: float = 0.0
    hide_duration_s: tuple[float, float] = (0.2, 1.0)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.brightness <= 1.0:
            problems.append(f"brightness must be in [0, 1], got {self.brightness}")
        for name in ("contrast", "saturation", "channel_gain", "shade"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                problems.append(f"{name} must be [low, high] with 0 <= low <= high, got {getattr(self, name)}")
        if self.noise_std_max < 0:
            problems.append(f"noise_std_max must be >= 0, got {self.noise_std_max}")
        if not 0.0 <= self.frame_drop_prob < 1.0:
            problems.append(f"frame_drop_prob must be in [0, 1), got {self.frame_drop_prob}")
        if not self.frame_drop_prob_max < 0.95:
            problems.append(f"frame_drop_prob_max must be < 0.95, got {self.frame_drop_prob_max}")
        if self.time_jitter_s < 0:
            problems.append(f"time_jitter_s must be >= 0, got {self.time_jitter_s}")
        low, high = self.hide_duration_s
        if not 0.0 < low <= high < 60.0:
            problems.append(f"hide_duration_s must be [low, high] with 0 < low <= high < 60, got {self.hide_duration_s}")
        for name in ("recolour_prob", "cutout_prob", "flip_prob", "hide_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.recolour_hue_margin_deg <= 90.0:
            problems.append(f"recolour_hue_margin_deg must be in [0, 90], got {self.recolour_hue_margin_deg}")
        for name in ("ground_texture_max", "blur_sigma_max"):
            if not 0.0 <= getattr(self, name) < 1e3:
                problems.append(f"{name} must be in [0, 1000), got {getattr(self, name)}")
        unknown = sorted(set(self.recolour_classes) - set(RECOLOUR_CLASS_NAMES))
        if unknown or not self.recolour_classes:
            problems.append(f"recolour_classes must be a non-empty list of {list(RECOLOUR_CLASS_NAMES)}, "
                            f"got {list(self.recolour_classes)[:8]}")
        if not 0.0 < self.cutout_max_frac <= 1.0:
            problems.append(f"cutout_max_frac must be in (0, 1], got {self.cutout_max_frac}")
        if problems:
            raise ValueError("AugmentConfig: " + "; ".join(problems))

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (validation)."""
        return cls(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), noise_std_max=0.0,
                   frame_drop_prob=0.0, time_jitter_s=0.0)

    @property
    def scene_changes(self) -> bool:
        """Whether any mask-based, geometric or blur/cutout augmentation is on."""
        return (self.recolour_prob > 0 or self.shade != (1.0, 1.0) or self.ground_texture_max > 0
                or self.blur_sigma_max > 0 or self.cutout_prob > 0 or self.flip_prob > 0)


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


# --------------------------------------------------------------------------- scene
SKY, GROUND, TARGET, OTHER = SEGMENT_SKY, SEGMENT_GROUND, SEGMENT_TARGET, SEGMENT_OTHER


@dataclass(frozen=True)
class SceneDraw:
    """One sequence's scene draw: class -> (mean colour RGB 0-255, texture contrast), ground texture,
    blur sigma, flip."""

    recolour: dict[int, tuple[np.ndarray, float]]
    ground_texture: np.ndarray | None  # (H, W) float32 grey levels, or None
    blur_sigma: float
    flip: bool
    shade: float = 1.0  # factor on every lit (non-sky) pixel


# Hues (degrees) of the target colours in the scenarios: (0.80, 0.05, 0.15) to (0.95, 0.25, 0.10).
TARGET_HUES_DEG = (352.0, 8.0)


def target_like(colour: np.ndarray, hue_margin_deg: float = 0.0) -> bool:
    """Whether a 0-1 RGB colour could pass for the target (see AugmentConfig.recolour_hue_margin_deg)."""
    r, g, b = (float(v) for v in colour)
    if hue_margin_deg <= 0.0:
        return r > 0.45 and r > 1.6 * g and r > 1.6 * b
    high, low = max(r, g, b), min(r, g, b)
    if high <= 0.0 or (high - low) / high < 0.45:
        return False  # greys and pastels
    hue = float(cv2.cvtColor(np.array([[[r, g, b]]], np.float32), cv2.COLOR_RGB2HSV)[0, 0, 0])
    first, last = TARGET_HUES_DEG  # the band wraps through 0
    inside = (hue - first) % 360.0 <= (last - first) % 360.0
    return inside or min((first - hue) % 360.0, (hue - last) % 360.0) <= hue_margin_deg


def _not_target_like(rng: np.random.Generator, hue_margin_deg: float = 0.0) -> np.ndarray:
    """A random colour (0-1 RGB) that could not pass for the target: red stays the target's colour."""
    while True:
        colour = rng.random(3)
        if not target_like(colour, hue_margin_deg):
            return colour


def sample_scene(config: AugmentConfig, rng: np.random.Generator, height: int, width: int) -> SceneDraw:
    recolour = {}
    for cls in (RECOLOUR_CLASS_NAMES[name] for name in config.recolour_classes):
        if config.recolour_prob > 0 and rng.random() < config.recolour_prob:
            colour = _not_target_like(rng, config.recolour_hue_margin_deg).astype(np.float32) * 255.0
            recolour[cls] = (colour, float(rng.uniform(0.3, 1.5)))
    texture = None
    if config.ground_texture_max > 0:
        amplitude = rng.uniform(0.0, config.ground_texture_max)
        cells = int(rng.integers(3, 17))
        grid = rng.normal(0.0, 1.0, size=(max(2, cells * height // width), cells)).astype(np.float32)
        texture = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * np.float32(amplitude)
    blur = float(rng.uniform(0.0, config.blur_sigma_max)) if config.blur_sigma_max > 0 else 0.0
    flip = bool(config.flip_prob > 0 and rng.random() < config.flip_prob)
    # Drawn only when on, so recipes without it keep their exact random stream.
    shade = float(rng.uniform(*config.shade)) if config.shade != (1.0, 1.0) else 1.0
    return SceneDraw(recolour, texture, blur, flip, shade)


def apply_scene(images: np.ndarray, segmentation: np.ndarray | None, draw: SceneDraw, config: AugmentConfig,
                rng: np.random.Generator) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB (+ (T, H, W) classes or None) -> uint8 (T, H, W, 3) with one scene draw.

    Recolouring keeps each class's luminance pattern (texture, shading, the sky gradient) around a
    new mean colour; without a mask only blur, cutout and the flip apply. Flipping the labels is the
    caller's job (`flip_labels`)."""
    x = images.astype(np.float32)
    if segmentation is not None:
        grey = x @ LUMA
        for cls, (colour, texture_contrast) in draw.recolour.items():
            where = segmentation == cls
            if not where.any():
                continue
            mean_grey = grey[where].mean()
            x[where] = colour + texture_contrast * (grey[where] - mean_grey)[:, None]
        if draw.ground_texture is not None:
            x += (draw.ground_texture[None] * (segmentation == GROUND))[..., None]
        if draw.shade != 1.0:
            x[segmentation != SKY] *= np.float32(draw.shade)
    if draw.blur_sigma > 0.3:
        for k in range(x.shape[0]):
            x[k] = cv2.GaussianBlur(x[k], (0, 0), draw.blur_sigma)
    if config.cutout_prob > 0:
        t, h, w = x.shape[:3]
        for k in np.flatnonzero(rng.random(t) < config.cutout_prob):
            rh = int(rng.integers(1, max(2, int(config.cutout_max_frac * h) + 1)))
            rw = int(rng.integers(1, max(2, int(config.cutout_max_frac * w) + 1)))
            top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
            keep = x[k].copy()
            x[k, top:top + rh, left:left + rw] = (_not_target_like(rng, config.recolour_hue_margin_deg)
                                                  .astype(np.float32) * 255.0)
            if segmentation is not None:  # the target stays visible: a cutout is scenery, not an occluder
                target = segmentation[k] == TARGET
                x[k][target] = keep[target]
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out[:, :, ::-1] if draw.flip else out


# --------------------------------------------------------------------------- hidden target
@dataclass(frozen=True)
class HideDraw:
    """One hidden-target gap: capture-time window [start_s, end_s), black frames or a box of `grey`."""

    start_s: float
    end_s: float
    black: bool
    grey: float  # box colour, grey level 0-255


def sample_hide(config: AugmentConfig, rng: np.random.Generator, first_s: float, last_s: float,
                has_mask: bool) -> HideDraw | None:
    """With probability hide_prob, a gap that starts between two capture times of the chunk."""
    if config.hide_prob <= 0 or rng.random() >= config.hide_prob:
        return None
    start = float(rng.uniform(first_s, max(first_s, last_s)))
    black = (not has_mask) or bool(rng.random() < 0.5)
    return HideDraw(start, start + float(rng.uniform(*config.hide_duration_s)), black,
                    float(rng.uniform(40.0, 170.0)))


def hide_target(images: np.ndarray, segmentation: np.ndarray | None, hidden: np.ndarray,
                draw: HideDraw) -> np.ndarray:
    """uint8 (T, H, W, 3) with the frames where `hidden` is true blacked out, or the target covered by a
    grey box (its bounding box grown by half its size on every side, at least 2 pixels)."""
    out = images.copy()
    if draw.black or segmentation is None:
        out[hidden] = 0
        return out
    h, w = images.shape[1:3]
    for k in np.flatnonzero(hidden):
        rows, cols = np.nonzero(segmentation[k] == TARGET)
        if rows.size == 0:
            continue
        grow_r = max(2, (rows.max() - rows.min() + 1) // 2)
        grow_c = max(2, (cols.max() - cols.min() + 1) // 2)
        out[k, max(0, rows.min() - grow_r):min(h, rows.max() + grow_r + 1),
            max(0, cols.min() - grow_c):min(w, cols.max() + grow_c + 1)] = np.uint8(round(draw.grey))
    return out


# Label axes that change sign under a horizontal mirror: vy (left) and yaw rate (CCW).
MIRRORED_AXES = (1, 3)


def flip_labels(labels: np.ndarray) -> np.ndarray:
    """Commands [vx, vy, vz, yaw_rate] of the mirrored scene."""
    out = np.array(labels, dtype=np.float32, copy=True)
    out[..., MIRRORED_AXES] *= -1.0
    return out


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
    times = np.asarray(times_s, dtype=np.float64)
    spans = np.empty(times.shape, dtype=np.float32)
    spans[1:] = timespan(np.diff(times), frame_period_s)  # unclipped (raises for a period <= 0)
    if times.size:
        spans[0] = first
    return spans
