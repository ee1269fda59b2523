"""Training batches: parallel streams through the episodes in consecutive chunks (truncated BPTT).

`StreamSampler` gives `batch_size` streams, each walking one episode chunk by chunk with its own
per-sequence augmentation draw (photometric, scene, drop rate), frame drops and jittered capture
times (so timespans are as irregular as a real camera's), plus the auxiliary target-geometry
labels (`aux_targets`) that `aux_loss` scores.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from liquid_control.learning.augment import (AugmentConfig, apply_photometric, apply_scene, drop_mask, flip_labels,
                                             hide_target, jitter_times, sample_hide, sample_photometric,
                                             sample_scene, timespans)
from liquid_control.learning.dataset import EpisodeData


@dataclass
class _Stream:
    episode: int = -1
    position: int = 0
    last_time_s: float | None = None
    photometric: Any = None
    scene: Any = None
    drop_prob: float = 0.0
    hide: Any = None  # the current hidden-target gap (augment.HideDraw), if any
    burn_in: int = 0  # frames still to run without loss


@dataclass
class Batch:
    images: np.ndarray  # (B, T, H, W, 3) uint8
    timespans: np.ndarray  # (B, T, 1) float32, nominal frame periods
    labels: np.ndarray  # (B, T, 4) float32
    mask: np.ndarray  # (B, T) float32: 1 for real frames, 0 for padding
    reset: np.ndarray  # (B,) bool: the stream started a new episode (state must be zeroed)
    aux: np.ndarray | None = None  # (B, T, AUX_SIZE) float32 target geometry (NaN: unknown), see aux_targets
    motion: np.ndarray | None = None  # (B, T, MOTION_SIZE) float32 target velocity (NaN: unknown), see target_motion


# Auxiliary targets: where the target is relative to the drone's heading frame, from the shards'
# ground truth. Perception that must also say where the target is learns to find the target rather
# than to read the command off the scenery. Scaled to about unit range: azimuth / 0.66 rad (the
# camera's half horizontal field of view), elevation / 0.52 rad (half vertical), log(range / 3 m),
# and in-view (1 inside the field of view, else 0).
AUX_SIZE = 4
HALF_FOV_RAD = (0.66, 0.52)


def aux_targets(episode: EpisodeData, rows: np.ndarray) -> np.ndarray:
    """(len(rows), AUX_SIZE) aux targets of the given frames; NaN where ground truth is missing."""
    if episode.positions is None or episode.targets is None or episode.yaws is None:
        return np.full((len(rows), AUX_SIZE), np.nan, np.float32)
    world = (episode.targets[rows] - episode.positions[rows]).astype(np.float64)
    yaw = episode.yaws[rows].astype(np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy, dz = c * world[:, 0] + s * world[:, 1], -s * world[:, 0] + c * world[:, 1], world[:, 2]
    azimuth = np.arctan2(dy, dx)
    elevation = np.arctan2(dz, np.hypot(dx, dy))
    distance = np.sqrt(dx * dx + dy * dy + dz * dz)
    in_view = (dx > 0) & (np.abs(azimuth) < HALF_FOV_RAD[0]) & (np.abs(elevation) < HALF_FOV_RAD[1])
    out = np.stack([azimuth / HALF_FOV_RAD[0], elevation / HALF_FOV_RAD[1],
                    np.log(np.maximum(distance, 0.05) / 3.0), in_view.astype(np.float64)], axis=1)
    return out.astype(np.float32)  # NaN ground truth stays NaN


# The target's own velocity in the drone's heading frame (FLU, m/s), from the ground-truth track: what a
# chasing policy must estimate from successive frames, and keep in memory while the target is hidden.
# A step faster than MAX_TARGET_SPEED_MPS is a jump (the next target of a loop), not motion: unknown.
MOTION_SIZE = 3
MAX_TARGET_SPEED_MPS = 8.0


def target_motion(episode: EpisodeData, rows: np.ndarray) -> np.ndarray:
    """(len(rows), MOTION_SIZE) target velocity (heading frame, m/s) at the given frames, by central
    differences over the episode's frames (one-sided at its ends); NaN where ground truth is missing."""
    rows = np.asarray(rows, dtype=int)
    if episode.targets is None or episode.yaws is None or len(episode) < 2:
        return np.full((len(rows), MOTION_SIZE), np.nan, np.float32)
    before, after = np.maximum(rows - 1, 0), np.minimum(rows + 1, len(episode) - 1)
    dt = episode.capture_times_s[after] - episode.capture_times_s[before]
    with np.errstate(divide="ignore", invalid="ignore"):
        world = (episode.targets[after] - episode.targets[before]).astype(np.float64) / dt[:, None]
    yaw = episode.yaws[rows].astype(np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.stack([c * world[:, 0] + s * world[:, 1], -s * world[:, 0] + c * world[:, 1], world[:, 2]], axis=1)
    jump = ~(np.linalg.norm(out, axis=1) <= MAX_TARGET_SPEED_MPS)  # also NaN and dt <= 0
    out[jump] = np.nan
    return out.astype(np.float32)


def motion_loss(predicted: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Velocity MSE (m/s squared, per axis) over the real frames whose target velocity is known."""
    known = (mask > 0) & torch.isfinite(targets).all(dim=-1)
    if not bool(known.any()):
        return predicted.sum() * 0.0
    return (predicted[known] - targets[known]).pow(2).mean()


def aux_loss(predicted: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Geometry MSE where the target is in view, in-view BCE everywhere it is known (mask 1, finite)."""
    known = (mask > 0) & torch.isfinite(targets).all(dim=-1)
    if not bool(known.any()):
        return predicted.sum() * 0.0
    p, t = predicted[known], targets[known]
    visible = t[:, 3] > 0.5
    geometry = ((p[:, :3] - t[:, :3]).pow(2).mean(dim=-1) * visible).sum() / visible.sum().clamp_min(1)
    return geometry + torch.nn.functional.binary_cross_entropy_with_logits(p[:, 3], t[:, 3])


class StreamSampler:
    """`batch_size` streams through the training episodes (truncated BPTT with augmentation)."""

    def __init__(self, episodes: list[EpisodeData], batch_size: int, sequence_length: int, augment: AugmentConfig,
                 frame_period_s: float, random_start_prob: float, rng: np.random.Generator,
                 task_weights: dict[str, float] | None = None, burn_in_frames: int = 0,
                 dagger_weight: float = 1.0) -> None:
        """task_weights: relative sampling weight of a frame by its episode's task (meta "task"; 1 if
        absent); dagger_weight: the same for episodes flown by the policy in a DAgger round (meta
        "dagger_round"). burn_in_frames: a stream that starts mid-episode (zero state) scores no loss on its
        first frames, while the recurrent state warms up as it would have in flight."""
        self.episodes = episodes
        self.sequence_length = sequence_length
        self.augment = augment
        self.frame_period_s = frame_period_s
        self.random_start_prob = random_start_prob
        self.rng = rng
        self.burn_in_frames = burn_in_frames
        self.streams = [_Stream() for _ in range(batch_size)]
        lengths = np.array([len(e) for e in episodes], dtype=float)
        if task_weights:
            lengths *= [task_weights.get(str(e.meta.get("task")), 1.0) for e in episodes]
        if dagger_weight != 1.0:
            lengths *= [dagger_weight if "dagger_round" in e.meta else 1.0 for e in episodes]
        if not lengths.sum() > 0:
            raise ValueError(f"sampler: task_weights {task_weights} leave no training frame to sample")
        self.weights = lengths / lengths.sum()  # every frame equally likely to be visited (times its task weight)

    def _restart(self, stream: _Stream) -> None:
        stream.episode = int(self.rng.choice(len(self.episodes), p=self.weights))
        length = len(self.episodes[stream.episode])
        start = 0
        if self.rng.random() < self.random_start_prob and length > self.sequence_length:
            start = int(self.rng.integers(0, length - self.sequence_length))
        stream.position = start
        stream.burn_in = self.burn_in_frames if start > 0 else 0
        stream.last_time_s = None
        stream.hide = None
        stream.photometric = sample_photometric(self.augment, self.rng)
        stream.drop_prob = self.augment.frame_drop_prob
        if self.augment.frame_drop_prob_max > stream.drop_prob:  # drawn only when on (as below)
            stream.drop_prob = float(self.rng.uniform(stream.drop_prob, self.augment.frame_drop_prob_max))
        if self.augment.scene_changes:  # drawn only when on: older recipes keep their exact random stream
            h, w = self.episodes[stream.episode].images.shape[1:3]
            stream.scene = sample_scene(self.augment, self.rng, h, w)

    def next_batch(self) -> Batch:
        b, t = len(self.streams), self.sequence_length
        first = self.episodes[0]
        h, w = first.images.shape[1:3]
        images = np.zeros((b, t, h, w, 3), np.uint8)
        spans = np.ones((b, t, 1), np.float32)
        labels = np.zeros((b, t, 4), np.float32)
        mask = np.zeros((b, t), np.float32)
        aux = np.full((b, t, AUX_SIZE), np.nan, np.float32)
        motion = np.full((b, t, MOTION_SIZE), np.nan, np.float32)
        reset = np.zeros(b, bool)
        for i, stream in enumerate(self.streams):
            if stream.episode < 0 or stream.position >= len(self.episodes[stream.episode]):
                self._restart(stream)
                reset[i] = True
            episode = self.episodes[stream.episode]
            # Enough raw frames that, after drops, about `t` remain.
            raw = int(math.ceil(t / (1.0 - stream.drop_prob))) + 4
            index = np.arange(stream.position, min(stream.position + raw, len(episode)))
            keep = drop_mask(len(index), stream.drop_prob, self.rng)
            if stream.last_time_s is None:
                keep[0] = True  # an episode's first frame is what the deployed policy sees first
            kept = index[keep][:t]
            n = len(kept)
            stream.position = int(kept[-1]) + 1 if n == t else int(index[-1]) + 1
            times = jitter_times(episode.capture_times_s[kept], self.augment.time_jitter_s, self.rng)
            if stream.last_time_s is None:
                spans[i, :n, 0] = timespans(times, self.frame_period_s)
            else:
                spans[i, :n, 0] = timespans(np.concatenate([[stream.last_time_s], times]), self.frame_period_s)[1:]
            spans[i, :n, 0] = np.maximum(spans[i, :n, 0], 1e-3)
            stream.last_time_s = float(times[-1])
            frames = episode.images[kept]
            labels[i, :n] = episode.labels[kept]
            aux[i, :n] = aux_targets(episode, kept)
            motion[i, :n] = target_motion(episode, kept)  # known while hidden: the state must remember it
            segmentation = None if episode.segmentation is None else episode.segmentation[kept]
            hidden = None
            if self.augment.hide_prob > 0:
                if stream.hide is None or stream.hide.end_s <= times[0]:
                    stream.hide = sample_hide(self.augment, self.rng, float(times[0]), float(times[-1]),
                                              segmentation is not None)
                if stream.hide is not None:
                    hidden = (times >= stream.hide.start_s) & (times < stream.hide.end_s)
                    aux[i, :n][hidden] = np.nan  # perception cannot know where a hidden target is
                    if not stream.hide.black:  # the box is scenery: recoloured, blurred, flipped with it
                        frames = hide_target(frames, segmentation, hidden, stream.hide)
            if stream.scene is not None:
                frames = apply_scene(frames, segmentation, stream.scene, self.augment, self.rng)
                if stream.scene.flip:
                    labels[i, :n] = flip_labels(labels[i, :n])
                    aux[i, :n, 0] *= -1.0  # azimuth
                    motion[i, :n, 1] *= -1.0  # sideways velocity
            if hidden is not None and stream.hide.black:  # a dark frame stays dark whatever the scenery
                frames = hide_target(frames, None, hidden, stream.hide)
            images[i, :n] = apply_photometric(frames, stream.photometric, self.rng)
            mask[i, :n] = 1.0
            if stream.burn_in:
                mask[i, :min(n, stream.burn_in)] = 0.0
                stream.burn_in = max(0, stream.burn_in - n)
        return Batch(images, spans, labels, mask, reset, aux, motion)


def prefetched(next_batch: Callable[[], Batch], count: int) -> Iterator[Batch]:
    """`count` batches from `next_batch`, each prepared in one background thread while the caller trains
    on the previous one. Augmentation is numpy/OpenCV work that mostly releases the GIL, so it overlaps
    the optimiser step; exactly `count` batches are drawn, in order, so a seed gives the same stream."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch") as pool:
        pending = pool.submit(next_batch)
        for k in range(count):
            batch = pending.result()
            if k + 1 < count:
                pending = pool.submit(next_batch)
            yield batch
