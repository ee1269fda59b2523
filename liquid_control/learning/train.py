"""Imitation training of perception + policy, end to end, over sequences with truncated BPTT.

Recipe (a YAML file, see config/train_cfc.yaml; every key is a field of the dataclasses below):

1. data: shards and/or rosbag2 bags (collected first when `data.collect` is set and the first
   source is missing or incomplete; collection resumes), split by whole episodes into train and
   validation (seeded);
2. model: `FeatureExtractor` (perception config) + `policy_for_budget(kind, budget)`; the command
   scale is the expert's per-axis limits, so the loss weighs every axis alike;
3. training: `batch_size` parallel *streams*, each walking through one episode in consecutive
   chunks of `sequence_length` frames; the recurrent state is carried from chunk to chunk and
   detached between them (truncated BPTT), and reset when a stream starts a new episode. Each
   stream draws its photometric augmentation once (per sequence), drops frames at random and
   jitters capture times, so timespans (capture-time difference / nominal frame period) are as
   irregular as a real camera's. Loss: mean squared error of the scaled command. Adam with a
   cosine learning-rate decay and gradient clipping;
4. validation after every epoch over whole validation episodes from a zero state (as deployed),
   without augmentation; the best epoch is kept and written with `save_model`;
5. optional DAgger rounds: the current best policy flies closed loop, the expert labels, the
   new episodes join the training set, training continues.

Outputs: the model file (with the recipe, data and metrics in its `training` metadata), and in
`output.run_dir` a CSV log (`train_log.csv`) and a loss plot (`loss.png`). Same seed and data ->
same result (up to floating-point non-determinism across thread counts).
"""
from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from liquid_control.config import ConfigError, config_from_dict
from liquid_control.learning.augment import (AugmentConfig, apply_photometric, apply_scene, drop_mask, flip_labels,
                                             jitter_times, sample_photometric, sample_scene, timespans)
from liquid_control.learning.dataset import EpisodeData, load_episodes, split_episodes
from liquid_control.models import FeatureExtractor, PerceptionConfig, PolicyModel, policy_for_budget, save_model
from liquid_control.simulation.expert import ExpertConfig

# Command scale (m/s, m/s, m/s, rad/s): the expert's limits, so a scaled command is within [-1, 1].
DEFAULT_COMMAND_SCALE = tuple(float(v) for v in ExpertConfig().limits())


@dataclass
class CollectSection:
    """Collect data into data.sources[0] before training (skipped episodes that exist already)."""

    suite: str = "train"
    episodes: int | None = None  # per scenario; None: the suite's counts
    workers: int = 2
    seed: int = 0
    perturbed_fraction: float = 0.7
    duration_s: float | None = None


@dataclass
class DataSection:
    sources: list[str] = field(default_factory=lambda: ["runs/data/sim_train"])
    collect: CollectSection | None = None
    validation_fraction: float = 0.1
    image_topic: str | None = None  # for rosbag2 sources (None: auto-detect)
    command_topic: str | None = None
    frame_period_s: float = 1.0 / 30.0  # nominal camera frame period (s); timespans are divided by it


@dataclass
class ModelSection:
    kind: str = "cfc"
    param_budget: int = 20000
    policy: dict[str, Any] = field(default_factory=dict)  # extra PolicyConfig fields for policy_for_budget
    perception: dict[str, Any] = field(default_factory=lambda: {"height": 48, "width": 64})
    command_scale: tuple[float, ...] = DEFAULT_COMMAND_SCALE
    # A model file to start from (fine-tuning, e.g. on real-drone bags); its networks must match the
    # ones this section builds. None: random initialisation.
    init_from: str | None = None


@dataclass
class OptimSection:
    epochs: int = 10
    batch_size: int = 16
    sequence_length: int = 32
    learning_rate: float = 3e-3
    final_learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    random_start_prob: float = 0.5  # a new stream starts mid-episode (zero state) with this probability
    max_minutes: float | None = None  # stop early (keeping the best epoch) after this much training time
    threads: int = 2
    aux_weight: float = 0.0  # weight of the auxiliary target-geometry loss on the features (0 = off)


@dataclass
class DaggerSection:
    rounds: int = 0
    suite: str = "train"
    episodes: int = 5  # per scenario and round
    epochs: int = 2  # training epochs after each round
    workers: int = 2
    seed: int = 100000  # seeds of DAgger episodes start here (disjoint from the expert data)


@dataclass
class OutputSection:
    model: str = "runs/model.safetensors"
    run_dir: str = "runs/train"


@dataclass
class TrainConfig:
    name: str = "cfc"
    seed: int = 0
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dagger: DaggerSection = field(default_factory=DaggerSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe; `overrides` maps dotted keys (``"optim.epochs"``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {path}: not valid YAML ({exc})") from exc
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    config = config_from_dict(TrainConfig, data, str(path))
    _check(config, str(path))
    return config


def _check(config: TrainConfig, where: str) -> None:
    o = config.optim
    problems = []
    if o.epochs < 1 or o.batch_size < 1 or o.sequence_length < 2:
        problems.append("optim: epochs and batch_size must be >= 1 and sequence_length >= 2")
    if not (o.learning_rate > 0 and o.final_learning_rate > 0):
        problems.append("optim: learning rates must be > 0")
    if o.threads < 1:
        problems.append("optim.threads must be >= 1")
    if not 0.0 <= o.aux_weight < 1e3:
        problems.append("optim.aux_weight must be in [0, 1000)")
    if not config.data.sources:
        problems.append("data.sources must list at least one shard directory, shard or bag")
    if len(config.model.command_scale) != 4 or not all(v > 0 for v in config.model.command_scale):
        problems.append("model.command_scale must be 4 positive numbers")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


# --------------------------------------------------------------------------- batching
@dataclass
class _Stream:
    episode: int = -1
    position: int = 0
    last_time_s: float | None = None
    photometric: Any = None
    scene: Any = None
    drop_prob: float = 0.0


@dataclass
class Batch:
    images: np.ndarray  # (B, T, H, W, 3) uint8
    timespans: np.ndarray  # (B, T, 1) float32, nominal frame periods
    labels: np.ndarray  # (B, T, 4) float32
    mask: np.ndarray  # (B, T) float32: 1 for real frames, 0 for padding
    reset: np.ndarray  # (B,) bool: the stream started a new episode (state must be zeroed)
    aux: np.ndarray | None = None  # (B, T, AUX_SIZE) float32 target geometry (NaN: unknown), see aux_targets


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
                 frame_period_s: float, random_start_prob: float, rng: np.random.Generator) -> None:
        self.episodes = episodes
        self.sequence_length = sequence_length
        self.augment = augment
        self.frame_period_s = frame_period_s
        self.random_start_prob = random_start_prob
        self.rng = rng
        self.streams = [_Stream() for _ in range(batch_size)]
        lengths = np.array([len(e) for e in episodes], dtype=float)
        self.weights = lengths / lengths.sum()  # every frame equally likely to be visited

    def _restart(self, stream: _Stream) -> None:
        stream.episode = int(self.rng.choice(len(self.episodes), p=self.weights))
        length = len(self.episodes[stream.episode])
        start = 0
        if self.rng.random() < self.random_start_prob and length > self.sequence_length:
            start = int(self.rng.integers(0, length - self.sequence_length))
        stream.position = start
        stream.last_time_s = None
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
            if stream.scene is not None:
                segmentation = None if episode.segmentation is None else episode.segmentation[kept]
                frames = apply_scene(frames, segmentation, stream.scene, self.augment, self.rng)
                if stream.scene.flip:
                    labels[i, :n] = flip_labels(labels[i, :n])
                    aux[i, :n, 0] *= -1.0  # azimuth
            images[i, :n] = apply_photometric(frames, stream.photometric, self.rng)
            mask[i, :n] = 1.0
        return Batch(images, spans, labels, mask, reset, aux)


def _to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1], exactly what `preprocess` gives."""
    x = torch.from_numpy(images.reshape(-1, *images.shape[-3:])).permute(0, 3, 1, 2).float()
    return x.mul_(1.0 / 255.0)


def masked_loss(commands: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Mean squared error of scaled commands over the real (mask 1) frames."""
    error = ((commands - labels) / scale).pow(2).mean(dim=-1)
    return (error * mask).sum() / mask.sum().clamp_min(1.0)


@torch.no_grad()
def evaluate_loss(perception: FeatureExtractor, policy: PolicyModel, episodes: list[EpisodeData],
                  frame_period_s: float, scale: torch.Tensor, chunk: int = 256) -> float:
    """Validation loss over whole episodes from a zero state, no augmentation (as deployed)."""
    perception.eval()
    policy.eval()
    total, count = 0.0, 0
    for episode in episodes:
        state = policy.initial_state(1)
        spans = timespans(episode.capture_times_s, frame_period_s)
        for start in range(0, len(episode), chunk):
            stop = min(start + chunk, len(episode))
            features = perception(_to_tensor_images(episode.images[start:stop])).unsqueeze(0)
            commands, state = policy(features, torch.from_numpy(spans[start:stop]).view(1, -1, 1), state)
            labels = torch.from_numpy(episode.labels[start:stop]).unsqueeze(0)
            total += float(((commands - labels) / scale).pow(2).mean(dim=-1).sum())
            count += stop - start
    return total / max(count, 1)


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model_path: Path
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    wall_s: float


def build_models(config: TrainConfig) -> tuple[FeatureExtractor, PolicyModel]:
    perception_config = PerceptionConfig(**config.model.perception)
    overrides = dict(config.model.policy)
    overrides.setdefault("frame_period_s", config.data.frame_period_s)
    try:
        policy_config = policy_for_budget(config.model.kind, config.model.param_budget,
                                          feature_size=perception_config.feature_size, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from exc
    policy = PolicyModel(policy_config)
    policy.set_command_scale(config.model.command_scale)
    return FeatureExtractor(perception_config), policy


def initialise_from(perception: FeatureExtractor, policy: PolicyModel, path: str) -> None:
    """Copy a model file's weights into freshly built networks; ConfigError unless they match."""
    from liquid_control.models.model_file import ModelFileError, load_model

    try:
        bundle = load_model(path)
    except ModelFileError as exc:
        raise ConfigError(f"model.init_from: {exc}") from exc
    if bundle.perception is None or bundle.policy is None:
        raise ConfigError(f"model.init_from: {path} must hold both a perception and a policy model")
    if bundle.perception_config != perception.config or bundle.policy_config != policy.config:
        raise ConfigError(f"model.init_from: {path} has other networks than the recipe builds "
                          f"({bundle.perception_config} / {bundle.policy_config})")
    perception.load_state_dict(bundle.perception.state_dict())
    policy.load_state_dict(bundle.policy.state_dict())


def _maybe_collect(config: TrainConfig, progress: bool) -> dict[str, Any] | None:
    section = config.data.collect
    if section is None:
        return None
    from liquid_control.learning.collect import CollectConfig, collect

    perception = PerceptionConfig(**config.model.perception)
    summary = collect(section.suite, config.data.sources[0], episodes=section.episodes, workers=section.workers,
                      base_seed=section.seed,
                      config=CollectConfig(height=perception.height, width=perception.width,
                                           perturbed_fraction=section.perturbed_fraction,
                                           duration_s=section.duration_s),
                      progress=progress)
    return asdict(summary)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Run the recipe (collect if asked, train, validate, DAgger rounds); returns where the model went."""
    from tqdm import tqdm

    start_wall = time.perf_counter()
    torch.set_num_threads(config.optim.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    collection = _maybe_collect(config, progress)
    perception, policy = build_models(config)
    if config.model.init_from is not None:
        initialise_from(perception, policy, config.model.init_from)
    pc = perception.config
    episodes = load_episodes(config.data.sources, pc.height, pc.width, config.data.image_topic,
                             config.data.command_topic)
    train_set, val_set = split_episodes(episodes, config.data.validation_fraction, config.seed)
    _log(f"data: {len(train_set)} training episodes ({sum(map(len, train_set))} frames), "
         f"{len(val_set)} validation episodes ({sum(map(len, val_set))} frames)")
    scale = policy.command_scale.clone()
    # Training-only head: features -> target geometry (not saved; deployment never runs it).
    aux_head = torch.nn.Linear(pc.feature_size, AUX_SIZE) if config.optim.aux_weight > 0 else None
    parameters = list(perception.parameters()) + list(policy.parameters())
    if aux_head is not None:
        parameters += list(aux_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay)
    run_dir = Path(config.output.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best = {"loss": math.inf, "epoch": -1, "perception": None, "policy": None}
    o = config.optim
    frames_per_batch = o.batch_size * o.sequence_length
    total_epochs = o.epochs + config.dagger.rounds * config.dagger.epochs
    train_seconds = 0.0
    epoch = 0
    sampler = None

    def steps_per_epoch() -> int:
        return max(1, int(round(sum(map(len, train_set)) / frames_per_batch)))

    total_steps = [steps_per_epoch() * total_epochs]
    step = 0

    def learning_rate(k: int) -> float:  # cosine from learning_rate to final_learning_rate
        progress_frac = min(1.0, k / max(1, total_steps[0]))
        return o.final_learning_rate + 0.5 * (o.learning_rate - o.final_learning_rate) * (
            1.0 + math.cos(math.pi * progress_frac))

    def run_epochs(count: int) -> bool:
        """Train `count` epochs; False when the time budget ran out."""
        nonlocal epoch, step, train_seconds, sampler
        sampler = StreamSampler(train_set, o.batch_size, o.sequence_length, config.augment,
                                config.data.frame_period_s, o.random_start_prob, rng)
        state = policy.initial_state(o.batch_size)
        for _ in range(count):
            epoch += 1
            perception.train()
            policy.train()
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(range(steps_per_epoch()), desc=f"epoch {epoch}/{total_epochs}", unit="batch",
                       disable=not progress, file=sys.stderr, leave=False)
            for _ in bar:
                batch = sampler.next_batch()
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step)
                reset = torch.from_numpy(batch.reset)
                state = torch.where(reset[:, None], torch.zeros_like(state), state.detach())
                features = perception(_to_tensor_images(batch.images)).view(o.batch_size, o.sequence_length, -1)
                commands, state = policy(features, torch.from_numpy(batch.timespans), state)
                loss = masked_loss(commands, torch.from_numpy(batch.labels), torch.from_numpy(batch.mask), scale)
                if aux_head is not None:
                    loss = loss + o.aux_weight * aux_loss(aux_head(features), torch.from_numpy(batch.aux),
                                                          torch.from_numpy(batch.mask))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, o.grad_clip)
                optimizer.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            bar.close()
            train_seconds += time.perf_counter() - t0
            val_loss = evaluate_loss(perception, policy, val_set, config.data.frame_period_s, scale) \
                if val_set else float(np.mean(losses))
            row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                   "learning_rate": learning_rate(step), "train_episodes": len(train_set),
                   "elapsed_s": time.perf_counter() - start_wall}
            history.append(row)
            improved = val_loss < best["loss"]
            if improved:
                best.update(loss=val_loss, epoch=epoch, perception=copy.deepcopy(perception.state_dict()),
                            policy=copy.deepcopy(policy.state_dict()))
                _save(config, perception, policy, best, history, collection, train_set, val_set, start_wall)
            _log(f"epoch {epoch}: train {row['train_loss']:.4f}  val {val_loss:.4f}"
                 f"{'  (best, saved)' if improved else ''}  lr {row['learning_rate']:.2e}  "
                 f"{row['elapsed_s'] / 60:.1f} min")
            write_log(run_dir / "train_log.csv", history)
            if o.max_minutes is not None and train_seconds > 60.0 * o.max_minutes:
                _log(f"time budget of {o.max_minutes} min reached after epoch {epoch}")
                return False
        return True

    within_budget = run_epochs(o.epochs)
    for round_index in range(config.dagger.rounds if within_budget else 0):
        new = _dagger_round(config, round_index, progress)
        train_set.extend(new)
        total_steps[0] = step + steps_per_epoch() * config.dagger.epochs * (config.dagger.rounds - round_index)
        _log(f"DAgger round {round_index + 1}: +{len(new)} episodes ({sum(map(len, new))} frames)")
        if not run_epochs(config.dagger.epochs):
            break
    plot_history(run_dir / "loss.png", history, title=f"{config.name}: imitation loss")
    model_path = Path(config.output.model)
    if best["policy"] is None:
        raise RuntimeError("training produced no checkpoint")
    return TrainResult(model_path=model_path, best_val_loss=best["loss"], best_epoch=best["epoch"],
                       epochs_run=epoch, history=history, wall_s=time.perf_counter() - start_wall)


def _dagger_round(config: TrainConfig, round_index: int, progress: bool) -> list[EpisodeData]:
    from liquid_control.learning.collect import CollectConfig, collect
    from liquid_control.learning.dataset import list_shards, read_shard

    d = config.dagger
    out = Path(config.output.run_dir) / f"dagger_{round_index + 1}"
    pc = PerceptionConfig(**config.model.perception)
    collect(d.suite, out, episodes=d.episodes, workers=d.workers, base_seed=d.seed + 1000 * round_index,
            config=CollectConfig(height=pc.height, width=pc.width, policy_path=str(config.output.model),
                                 duration_s=config.data.collect.duration_s if config.data.collect else None),
            progress=progress)
    return [e for e in (read_shard(p) for p in list_shards(out)) if len(e) >= 2]


def _save(config: TrainConfig, perception: FeatureExtractor, policy: PolicyModel, best: dict[str, Any],
          history: list[dict[str, float]], collection: dict[str, Any] | None, train_set: list[EpisodeData],
          val_set: list[EpisodeData], start_wall: float) -> None:
    """Write the best weights so far (atomic: save_model renames a finished temp file)."""
    perception_copy = FeatureExtractor(perception.config)
    perception_copy.load_state_dict(best["perception"])
    policy_copy = PolicyModel(policy.config)
    policy_copy.load_state_dict(best["policy"])
    training = {
        "recipe": config.to_dict(), "best_epoch": best["epoch"], "best_val_loss": best["loss"],
        "history": history, "train_episodes": len(train_set), "train_frames": int(sum(map(len, train_set))),
        "validation_episodes": len(val_set), "validation_frames": int(sum(map(len, val_set))),
        "collection": collection, "wall_s_so_far": time.perf_counter() - start_wall,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "loss": "MSE of commands divided by command_scale, mean over axes",
    }
    save_model(config.output.model, policy=policy_copy, perception=perception_copy, training=training)


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def plot_history(path: Path, history: list[dict[str, float]], title: str = "loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (augmented)")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("scaled command MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
