"""Imitation training of perception + policy, end to end, over sequences with truncated BPTT.

Recipe (a YAML file, see config/train_cfc.yaml; its keys are the dataclasses of learning/recipe.py, and
the batches come from learning/sampler.py; this file is the loop, readable top to bottom):

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liquid_control.config import ConfigError
from liquid_control.learning.augment import timespans
from liquid_control.learning.dataset import EpisodeData, load_episodes, split_episodes
from liquid_control.learning.recipe import TrainConfig
from liquid_control.learning.sampler import AUX_SIZE, Batch, StreamSampler, aux_loss, prefetched
from liquid_control.models import FeatureExtractor, PerceptionConfig, PolicyModel, policy_for_budget, save_model


def _to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1], exactly what `preprocess` gives."""
    x = torch.from_numpy(images.reshape(-1, *images.shape[-3:])).permute(0, 3, 1, 2).float()
    return x.mul_(1.0 / 255.0)


def masked_loss(commands: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Mean squared error of scaled commands over the real (mask 1) frames."""
    error = ((commands - labels) / scale).pow(2).mean(dim=-1)
    return (error * mask).sum() / mask.sum().clamp_min(1.0)


def batch_loss(perception: FeatureExtractor, policy: PolicyModel, batch: Batch, state: torch.Tensor,
               scale: torch.Tensor, aux_head: torch.nn.Module | None = None,
               aux_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Imitation loss of one training batch (plus aux_weight x the auxiliary loss when `aux_head` is given)
    and the policy state to carry into the next chunk. `state` is zeroed for streams that restarted and
    detached otherwise (truncated BPTT)."""
    reset = torch.from_numpy(batch.reset)
    state = torch.where(reset[:, None], torch.zeros_like(state), state.detach())
    streams, steps = batch.labels.shape[:2]
    features = perception(_to_tensor_images(batch.images)).view(streams, steps, -1)
    commands, state = policy(features, torch.from_numpy(batch.timespans), state)
    mask = torch.from_numpy(batch.mask)
    loss = masked_loss(commands, torch.from_numpy(batch.labels), mask, scale)
    if aux_head is not None:
        loss = loss + aux_weight * aux_loss(aux_head(features), torch.from_numpy(batch.aux), mask)
    return loss, state


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
                                config.data.frame_period_s, o.random_start_prob, rng,
                                task_weights=config.data.task_weights, burn_in_frames=o.burn_in_frames,
                                dagger_weight=config.dagger.sample_weight)
        state = policy.initial_state(o.batch_size)
        for _ in range(count):
            epoch += 1
            perception.train()
            policy.train()
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(prefetched(sampler.next_batch, steps_per_epoch()), total=steps_per_epoch(),
                       desc=f"epoch {epoch}/{total_epochs}", unit="batch", disable=not progress, file=sys.stderr,
                       leave=False)
            for batch in bar:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step)
                loss, state = batch_loss(perception, policy, batch, state, scale, aux_head, o.aux_weight)
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
    episodes = [e for e in (read_shard(p) for p in list_shards(out)) if len(e) >= 2]
    for episode in episodes:
        episode.meta["dagger_round"] = round_index + 1  # for dagger.sample_weight
    return episodes


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
