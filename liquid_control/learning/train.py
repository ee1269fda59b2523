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
   without augmentation; the best epoch is kept and written with `save_model`: the lowest validation
   loss, or with `selection.metric: closed_loop` the best success when flown closed loop
   (learning/selection.py);
5. optional DAgger rounds: the current best policy flies closed loop, the expert labels, the
   new episodes join the training set, training continues.

Outputs: the model file (with the recipe, data and metrics in its `training` metadata), and in
`output.run_dir` a CSV log (`train_log.csv`), a loss plot (`loss.png`) and `checkpoint.pt` (after every
epoch; `train(..., resume=True)` / `--resume` continues from it). Same seed and data -> same result (up to
floating-point non-determinism across thread counts).

Under torchrun (WORLD_SIZE > 1) every rank runs this loop with the networks in DistributedDataParallel:
its own sampler streams, batch_size streams per rank, validation shared out and summed, rank 0 alone
collecting, writing and logging (learning/distributed.py, docs/SCALE.md).
"""
from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liquid_control.config import ConfigError
from liquid_control.learning import distributed, selection
from liquid_control.learning.augment import timespans
from liquid_control.learning.dataset import EpisodeData, load_episodes, split_episodes
from liquid_control.learning.recipe import TrainConfig
from liquid_control.learning.sampler import (AUX_SIZE, MOTION_SIZE, Batch, StreamSampler, aux_loss, motion_loss,
                                             prefetched)
from liquid_control.models import FeatureExtractor, PerceptionConfig, PolicyModel, policy_for_budget, save_model


def _to_tensor_images(images: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1], exactly what `preprocess` gives."""
    x = torch.from_numpy(images.reshape(-1, *images.shape[-3:]))
    if device is not None:  # move the uint8 pixels (a quarter of the float bytes), convert there
        x = x.to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)


def _tensor(array: np.ndarray, device: torch.device | None) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor if device is None else tensor.to(device, non_blocking=True)


def masked_loss(commands: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Mean squared error of scaled commands over the real (mask 1) frames."""
    error = ((commands - labels) / scale).pow(2).mean(dim=-1)
    return (error * mask).sum() / mask.sum().clamp_min(1.0)


class AuxHeads(torch.nn.Module):
    """Training-only linear heads, never saved in the model file: target geometry from the perception
    features (optim.aux_weight) and the target's velocity from the policy state (optim.motion_weight)."""

    def __init__(self, feature_size: int, state_size: int, aux_weight: float, motion_weight: float) -> None:
        super().__init__()
        self.aux_weight, self.motion_weight = aux_weight, motion_weight
        self.geometry = torch.nn.Linear(feature_size, AUX_SIZE) if aux_weight > 0 else None
        self.motion = torch.nn.Linear(state_size, MOTION_SIZE) if motion_weight > 0 else None

    def reset_parameters(self) -> None:
        for head in (self.geometry, self.motion):
            if head is not None:
                head.reset_parameters()


def aux_heads(config: TrainConfig, perception: FeatureExtractor, policy: PolicyModel) -> AuxHeads | None:
    """The recipe's training-only heads (None when both weights are 0)."""
    o = config.optim
    if not (o.aux_weight > 0 or o.motion_weight > 0):
        return None
    return AuxHeads(perception.config.feature_size, policy.state_size, o.aux_weight, o.motion_weight)


def batch_loss(perception: FeatureExtractor, policy: PolicyModel, batch: Batch, state: torch.Tensor,
               scale: torch.Tensor, heads: AuxHeads | None = None,
               device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Imitation loss of one training batch (plus the weighted losses of the training-only `heads`) and
    the policy state to carry into the next chunk. `state` is zeroed for streams that restarted and
    detached otherwise (truncated BPTT). `device`: where the networks are (None: the CPU)."""
    reset = _tensor(batch.reset, device)
    state = torch.where(reset[:, None], torch.zeros_like(state), state.detach())
    streams, steps = batch.labels.shape[:2]
    features = perception(_to_tensor_images(batch.images, device)).view(streams, steps, -1)
    timespans = _tensor(batch.timespans, device)
    if heads is not None and heads.motion is not None:
        commands, states, state = policy.rollout(features, timespans, state)
    else:
        commands, state = policy(features, timespans, state)
    mask = _tensor(batch.mask, device)
    loss = masked_loss(commands, _tensor(batch.labels, device), mask, scale)
    if heads is not None and heads.geometry is not None:
        loss = loss + heads.aux_weight * aux_loss(heads.geometry(features), _tensor(batch.aux, device), mask)
    if heads is not None and heads.motion is not None:
        loss = loss + heads.motion_weight * motion_loss(heads.motion(states), _tensor(batch.motion, device), mask)
    return loss, state


class TrainStep(torch.nn.Module):
    """perception + policy (+ the training-only heads) as one module whose forward is `batch_loss`, so
    DistributedDataParallel averages the gradients of all of them across ranks in one backward pass."""

    def __init__(self, perception: FeatureExtractor, policy: PolicyModel, heads: AuxHeads | None) -> None:
        super().__init__()
        self.perception, self.policy, self.heads = perception, policy, heads

    def forward(self, batch: Batch, state: torch.Tensor, scale: torch.Tensor,
                device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_loss(self.perception, self.policy, batch, state, scale, self.heads, device)


@torch.no_grad()
def validation_sums(perception: FeatureExtractor, policy: PolicyModel, episodes: list[EpisodeData],
                    frame_period_s: float, scale: torch.Tensor, chunk: int = 256,
                    device: torch.device | None = None) -> tuple[float, int]:
    """(sum of per-frame scaled command MSE, frames) over whole episodes from a zero state, no augmentation
    (as deployed). Sums, so ranks that each score a share of the episodes can add theirs up."""
    perception.eval()
    policy.eval()
    total, count = 0.0, 0
    for episode in episodes:
        state = policy.initial_state(1, device)
        spans = timespans(episode.capture_times_s, frame_period_s)
        for start in range(0, len(episode), chunk):
            stop = min(start + chunk, len(episode))
            features = perception(_to_tensor_images(episode.images[start:stop], device)).unsqueeze(0)
            commands, state = policy(features, _tensor(spans[start:stop], device).view(1, -1, 1), state)
            labels = _tensor(episode.labels[start:stop], device).unsqueeze(0)
            total += float(((commands - labels) / scale).pow(2).mean(dim=-1).sum())
            count += stop - start
    return total, count


def evaluate_loss(perception: FeatureExtractor, policy: PolicyModel, episodes: list[EpisodeData],
                  frame_period_s: float, scale: torch.Tensor, chunk: int = 256,
                  device: torch.device | None = None) -> float:
    """Validation loss over whole episodes from a zero state, no augmentation (as deployed)."""
    total, count = validation_sums(perception, policy, episodes, frame_period_s, scale, chunk, device)
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
    rank: int = 0  # this process's rank under torchrun (0: the one that wrote the files)
    world_size: int = 1
    best_closed_loop_success: float | None = None  # selection.metric closed_loop: the kept epoch's success
    restarts: int = 0  # runs started over from new weights because they stalled (optim.stall_check_epoch)


def recipe_sampler(config: TrainConfig, episodes: list[EpisodeData], rng: np.random.Generator) -> StreamSampler:
    """The training batches a recipe asks for (streams, augmentation, task/DAgger weights, burn-in)."""
    o = config.optim
    return StreamSampler(episodes, o.batch_size, o.sequence_length, config.augment, config.data.frame_period_s,
                         o.random_start_prob, rng, task_weights=config.data.task_weights,
                         burn_in_frames=o.burn_in_frames, dagger_weight=config.dagger.sample_weight)


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
                      config=CollectConfig(height=perception.height, width=perception.width, expert=config.expert,
                                           perturbed_fraction=section.perturbed_fraction,
                                           decoy_fraction=section.decoy_fraction, duration_s=section.duration_s),
                      progress=progress)
    return asdict(summary)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(config: TrainConfig, progress: bool = True, resume: bool = False) -> TrainResult:
    """Run the recipe (collect if asked, train, validate, DAgger rounds); returns where the model went.

    Under torchrun (WORLD_SIZE > 1) every rank runs this with DistributedDataParallel (learning/distributed.py);
    `resume` continues from `output.run_dir`/checkpoint.pt when there is one."""
    start_wall = time.perf_counter()
    torch.set_num_threads(config.optim.threads)  # per process: under torchrun, per rank
    found = distributed.environment()  # checked before anything else runs
    device = distributed.training_device(config.optim.device, found[2] if found else 0, found[1] if found else 1)
    dist = distributed.setup(found, config.distributed.backend, device, config.distributed.timeout_minutes)
    try:
        return _train(config, progress, resume, dist, device, start_wall)
    finally:
        dist.close()


def _train(config: TrainConfig, progress: bool, resume: bool, dist: distributed.Distributed, device: torch.device,
           start_wall: float) -> TrainResult:
    from tqdm import tqdm

    # CPU: tensors stay where torch.from_numpy puts them (the single-process CPU path is unchanged)
    on = None if device.type == "cpu" else device
    main = dist.is_main
    log = _log if main else _quiet
    torch.manual_seed(config.seed)  # the same on every rank: the same initial weights
    # Each rank draws its own streams (the sampler's shard): seeded by (seed, rank); one process: by seed.
    rng = np.random.default_rng([config.seed, dist.rank] if dist.active else config.seed)
    selection.check(config)
    # Collection (and DAgger below) runs once, on rank 0, while the other ranks wait; then every rank reads
    # the same files (on several nodes they must see the same filesystem: checked after loading).
    collection = dist.on_main(lambda: _maybe_collect(config, progress), "data collection")
    perception, policy = build_models(config)
    if config.model.init_from is not None:
        initialise_from(perception, policy, config.model.init_from)
    perception.to(device)
    policy.to(device)
    pc = perception.config
    episodes = load_episodes(config.data.sources, pc.height, pc.width, config.data.image_topic,
                             config.data.command_topic)
    train_set, val_set = split_episodes(episodes, config.data.validation_fraction, config.seed)
    _same_data_on_every_rank(dist, train_set, val_set, "data.sources")
    log(f"data: {len(train_set)} training episodes ({sum(map(len, train_set))} frames), "
        f"{len(val_set)} validation episodes ({sum(map(len, val_set))} frames)")
    if dist.active:
        log(f"distributed: {dist.world_size} ranks ({dist.backend}, {device.type}); batch_size "
            f"{config.optim.batch_size} per rank, {config.optim.batch_size * dist.world_size} streams per step")
    scale = policy.command_scale.clone()
    plateau = mean_command_loss(train_set, val_set or train_set, scale.cpu().numpy())
    log(f"validation loss of always sending the mean command: {plateau:.4f} (a run that stays there learnt nothing)")
    # Training-only heads (not saved; deployment never runs them).
    heads = aux_heads(config, perception, policy)
    if heads is not None:
        heads.to(device)
    parameters = list(perception.parameters()) + list(policy.parameters())
    if heads is not None:
        parameters += list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay)
    run_dir = Path(config.output.run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best = {"loss": math.inf, "score": math.nan, "epoch": -1, "perception": None, "policy": None}
    o = config.optim
    frames_per_batch = o.batch_size * o.sequence_length
    total_epochs = o.epochs + config.dagger.rounds * config.dagger.epochs
    train_seconds = 0.0
    epoch = 0
    rounds_done = 0
    restarts = 0
    sampler = None

    def steps_per_epoch() -> int:  # an epoch is as many frames as the training set holds, over all ranks
        return max(1, int(round(sum(map(len, train_set)) / (frames_per_batch * dist.world_size))))

    total_steps = [steps_per_epoch() * total_epochs]
    step = 0
    plan = [o.epochs, config.dagger.rounds, config.dagger.epochs]
    checkpoint_path = run_dir / CHECKPOINT
    if resume:
        saved = dist.on_main(lambda: _read_checkpoint(checkpoint_path), "reading the checkpoint")
        if saved is None:
            log(f"resume: no checkpoint in {run_dir}; starting from the beginning")
        else:
            _restore(saved, dist, perception, policy, heads, optimizer, rng, checkpoint_path)
            history, epoch, step = saved["history"], saved["epoch"], saved["step"]
            train_seconds, rounds_done = saved["train_seconds"], saved["rounds_done"]
            restarts = saved.get("restarts", 0)
            best = {"loss": saved["best_loss"], "score": saved.get("best_score", math.nan),
                    "epoch": saved["best_epoch"], "perception": saved["best_perception"], "policy": saved["best_policy"]}
            for k in range(rounds_done):  # the DAgger episodes the run had added, read back from run_dir
                train_set.extend(_dagger_episodes(config, k))
            _same_data_on_every_rank(dist, train_set, val_set, f"{run_dir}/dagger_*")
            # The same plan continues its own schedule; a changed one (more epochs) stretches over what is left.
            total_steps[0] = saved["total_steps"] if saved["plan"] == plan else \
                step + steps_per_epoch() * max(1, total_epochs - epoch)
            log(f"resume: {checkpoint_path} after epoch {epoch} (step {step}, {rounds_done} DAgger rounds)")
    # One module for DDP, so the gradients of perception, policy and aux heads are all averaged. Every
    # parameter takes part in every step (a head's loss is `predicted.sum() * 0` when nothing is known), so
    # find_unused_parameters stays off. One process: the plain call, as before.
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        # 1x1 conv weights: autograd gives their size-1 dims other strides than DDP's bucket views, which
        # torch reports once per rank; the bytes are laid out alike, so there is nothing to fix.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # No buffer changes in training (wiring masks, command scale, feature normalisation; no batch norm),
        # so they are not re-broadcast every step; the per-epoch digest check covers buffers too.
        step_module = DistributedDataParallel(TrainStep(perception, policy, heads), broadcast_buffers=False,
                                              device_ids=[device] if device.type == "cuda" else None)

        def forward(batch: Batch, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return step_module(batch, state, scale, on)
    else:
        def forward(batch: Batch, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return batch_loss(perception, policy, batch, state, scale, heads, on)

    warmup_steps = o.warmup_epochs * steps_per_epoch()

    def learning_rate(k: int) -> float:  # linear warm-up, then cosine from learning_rate to final_learning_rate
        progress_frac = min(1.0, k / max(1, total_steps[0]))
        cosine = o.final_learning_rate + 0.5 * (o.learning_rate - o.final_learning_rate) * (
            1.0 + math.cos(math.pi * progress_frac))
        return cosine * min(1.0, (k + 1) / warmup_steps) if warmup_steps > 0 else cosine

    def over_budget() -> bool:  # rank 0's clock decides, so all ranks stop after the same epoch
        return dist.from_main(o.max_minutes is not None and train_seconds > 60.0 * o.max_minutes)

    def restart_from_new_weights() -> None:
        """New initial weights (the same on every rank), fresh optimiser moments, the schedule from step 0."""
        nonlocal epoch, step, history, best
        torch.manual_seed(config.seed + 1_000_003 * restarts)
        fresh_perception, fresh_policy = build_models(config)
        perception.load_state_dict(fresh_perception.state_dict())
        policy.load_state_dict(fresh_policy.state_dict())
        if heads is not None:
            heads.reset_parameters()
        optimizer.state.clear()
        epoch, step, history = 0, 0, []
        best = {"loss": math.inf, "score": math.nan, "epoch": -1, "perception": None, "policy": None}

    def run_epochs(count: int) -> bool:
        """Train `count` epochs; False when the time budget ran out."""
        nonlocal epoch, step, train_seconds, sampler, best, restarts
        sampler = recipe_sampler(config, train_set, rng)
        state = policy.initial_state(o.batch_size, on)
        last = epoch + count
        while epoch < last:
            epoch += 1
            perception.train()
            policy.train()
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(prefetched(sampler.next_batch, steps_per_epoch()), total=steps_per_epoch(),
                       desc=f"epoch {epoch}/{total_epochs}", unit="batch", disable=not (progress and main),
                       file=sys.stderr, leave=False)
            for batch in bar:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step)
                loss, state = forward(batch, state)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # under DDP: the gradients are averaged over the ranks here
                torch.nn.utils.clip_grad_norm_(parameters, o.grad_clip)
                optimizer.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            bar.close()
            train_seconds += time.perf_counter() - t0
            train_loss = float(np.mean(losses))
            if dist.active:  # the mean over ranks (each rank's own streams)
                train_loss = dist.sum([train_loss])[0] / dist.world_size
            val_loss = _validation_loss(perception, policy, val_set, config.data.frame_period_s, scale, dist, on) \
                if val_set else train_loss
            score = math.nan  # closed-loop success of this epoch (learning/selection.py); NaN: not flown
            if selection.scores_epoch(config, epoch):
                flown = dist.on_main(lambda: selection.closed_loop_success(config, perception, policy, run_dir),
                                     "closed-loop selection")
                score = flown["success"]
                log(f"epoch {epoch}: closed loop on {config.selection.suite}: {100 * score:.0f}% of "
                    f"{flown['episodes']} episodes {flown['per_scenario']}")
            row = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": val_loss,
                   "closed_loop_success": None if math.isnan(score) else score, "learning_rate": learning_rate(step),
                   "train_episodes": len(train_set), "elapsed_s": time.perf_counter() - start_wall}
            history.append(row)
            # The same on every rank: val_loss and the score are the same numbers everywhere.
            improved = selection.improves(config.selection.metric, val_loss, score, best["loss"], best["score"])
            if improved:
                best = {"loss": val_loss, "score": score, "epoch": epoch,
                        "perception": copy.deepcopy(perception.state_dict()),
                        "policy": copy.deepcopy(policy.state_dict())}
                if main:
                    _save(config, perception, policy, best, history, collection, train_set, val_set, start_wall)
            log(f"epoch {epoch}: train {row['train_loss']:.4f}  val {val_loss:.4f}"
                f"{'  (best, saved)' if improved else ''}  lr {row['learning_rate']:.2e}  "
                f"{row['elapsed_s'] / 60:.1f} min")
            if main:
                write_log(run_dir / "train_log.csv", history)
            out_of_time = over_budget()
            # A seed that has not left the mean-command plateau by the check epoch starts again from new weights.
            if (epoch == o.stall_check_epoch and rounds_done == 0 and restarts < o.max_restarts
                    and config.model.init_from is None and not out_of_time
                    and stalled([row["val_loss"] for row in history], plateau, o.stall_ratio)):
                restarts += 1
                log(f"epoch {epoch}: best validation {min(row['val_loss'] for row in history):.4f} is above "
                    f"{o.stall_ratio} x the mean command's {plateau:.4f}: stalled; restart {restarts} of at most "
                    f"{o.max_restarts} from new weights")
                restart_from_new_weights()
                state = policy.initial_state(o.batch_size, on)
            _checkpoint(checkpoint_path, dist, perception, policy, heads, optimizer, rng, best, history,
                        epoch=epoch, step=step, train_seconds=train_seconds, rounds_done=rounds_done,
                        total_steps=total_steps[0], plan=plan, restarts=restarts)
            if out_of_time:
                log(f"time budget of {o.max_minutes} min reached after epoch {epoch}")
                return False
        return True

    within_budget = not (resume and epoch > 0 and over_budget())
    left = o.epochs + rounds_done * config.dagger.epochs - epoch  # epochs before the next DAgger round
    if within_budget and left > 0:
        within_budget = run_epochs(left)
    for round_index in range(rounds_done, config.dagger.rounds if within_budget else rounds_done):
        dist.on_main(lambda: _dagger_collect(config, round_index, progress), f"DAgger round {round_index + 1}")
        new = _dagger_episodes(config, round_index)
        _same_data_on_every_rank(dist, new, [], f"{run_dir}/dagger_{round_index + 1}")
        train_set.extend(new)
        rounds_done = round_index + 1
        total_steps[0] = step + steps_per_epoch() * config.dagger.epochs * (config.dagger.rounds - round_index)
        log(f"DAgger round {round_index + 1}: +{len(new)} episodes ({sum(map(len, new))} frames)")
        if not run_epochs(config.dagger.epochs):
            break
    if main:
        plot_history(run_dir / "loss.png", history, title=f"{config.name}: imitation loss")
    dist.barrier()  # the model file, log and plot are written before any rank returns
    model_path = Path(config.output.model)
    if best["policy"] is None:
        raise RuntimeError("training produced no checkpoint")
    return TrainResult(model_path=model_path, best_val_loss=best["loss"], best_epoch=best["epoch"],
                       epochs_run=epoch, history=history, wall_s=time.perf_counter() - start_wall,
                       rank=dist.rank, world_size=dist.world_size,
                       best_closed_loop_success=None if math.isnan(best["score"]) else best["score"],
                       restarts=restarts)


def mean_command_loss(train_set: list[EpisodeData], val_set: list[EpisodeData], scale: np.ndarray) -> float:
    """The validation loss (scaled command MSE per frame) of always sending the training set's mean command:
    the plateau a run that has not yet learnt to read the images sits on."""
    mean = np.concatenate([episode.labels for episode in train_set]).mean(axis=0)
    labels = np.concatenate([episode.labels for episode in val_set])
    return float((((labels - mean) / scale) ** 2).mean())


def stalled(val_losses: list[float], plateau: float, ratio: float) -> bool:
    """True when the best validation loss so far is above `ratio` x the mean command's (`plateau`): the run
    has not started to read the images. The best, not the last: one noisy epoch of a run that learns is no
    stall."""
    return min(val_losses) > ratio * plateau


def _brief(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quiet(message: str) -> None:
    """Ranks other than 0 keep quiet: one log per run."""


def _validation_loss(perception: FeatureExtractor, policy: PolicyModel, val_set: list[EpisodeData],
                     frame_period_s: float, scale: torch.Tensor, dist: distributed.Distributed,
                     device: torch.device | None) -> float:
    """The validation loss over all validation episodes. Under DDP each rank scores every world_size-th
    episode and the sums are added up, so every rank gets the loss one process would compute (up to
    floating-point summation order) in 1/world_size of the time."""
    if not dist.active:
        return evaluate_loss(perception, policy, val_set, frame_period_s, scale, device=device)
    total, count = validation_sums(perception, policy, val_set[dist.rank::dist.world_size], frame_period_s, scale,
                                   device=device)
    total, count = dist.sum([total, count])
    return total / max(count, 1.0)


def _same_data_on_every_rank(dist: distributed.Distributed, train_set: list[EpisodeData],
                             val_set: list[EpisodeData], where: str) -> None:
    """ConfigError unless every rank loaded the same episodes (counts and frames): on several nodes, data
    that rank 0 collected must be on a filesystem they all see."""
    sizes = dist.gather((len(train_set), sum(map(len, train_set)), len(val_set), sum(map(len, val_set))))
    if any(size != sizes[0] for size in sizes):
        raise ConfigError(f"{where}: the ranks loaded different data ((episodes, frames) of train and validation "
                          f"per rank: {sizes}); every node must see the same files (a shared filesystem)")


# --------------------------------------------------------------------------- checkpoints (resume)
CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FORMAT = "liquid_control.train_checkpoint/1"


def _checkpoint(path: Path, dist: distributed.Distributed, perception: FeatureExtractor, policy: PolicyModel,
                heads: AuxHeads | None, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
                best: dict[str, Any], history: list[dict[str, float]], **progress: Any) -> None:
    """After every epoch: rank 0 writes what a resumed run needs (atomic: a temp file renamed). Every rank
    contributes its sampler's random state and a digest of its weights; ranks whose weights differ (DDP
    out of sync) stop the run here."""
    digests = dist.gather(distributed.weights_digest(*[m for m in (perception, policy, heads) if m is not None]))
    if len(set(digests)) > 1:
        raise RuntimeError(f"after epoch {progress['epoch']} the ranks' weights differ (digests {digests}): "
                           "the distributed training is out of sync")
    rng_states = dist.gather(rng.bit_generator.state)
    if not dist.is_main:
        return
    payload = {
        "format": _CHECKPOINT_FORMAT, "world_size": dist.world_size, **progress, "history": history,
        "perception": perception.state_dict(), "policy": policy.state_dict(),
        "aux_head": None if heads is None else heads.state_dict(), "optimizer": optimizer.state_dict(),
        "rng_states": rng_states, "torch_rng": torch.get_rng_state(), "weights_digest": digests[0],
        "rank_weight_digests": digests, "best_loss": best["loss"], "best_score": best["score"],
        "best_epoch": best["epoch"],
        "best_perception": best["perception"], "best_policy": best["policy"],
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint (None when there is none); read without unpickling code (weights_only)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the same bad input
        raise ConfigError(f"resume: {path} is not a readable training checkpoint ({_brief(exc)})") from None
    if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
        raise ConfigError(f"resume: {path} is not a liquid_control training checkpoint ({_CHECKPOINT_FORMAT})")
    return saved


def _restore(saved: dict[str, Any], dist: distributed.Distributed, perception: FeatureExtractor,
             policy: PolicyModel, heads: AuxHeads | None, optimizer: torch.optim.Optimizer,
             rng: np.random.Generator, path: Path) -> None:
    """Load a checkpoint into this rank's networks, optimiser and sampler random state."""
    if saved["world_size"] != dist.world_size:
        raise ConfigError(f"resume: {path} was written by {saved['world_size']} process(es) and this run has "
                          f"{dist.world_size}; resume with the same number (each rank's streams are seeded by rank)")
    if (saved["aux_head"] is None) != (heads is None):
        raise ConfigError(f"resume: {path} was {'not ' if saved['aux_head'] is None else ''}trained with the "
                          f"auxiliary heads; keep optim.aux_weight and optim.motion_weight as they were")
    try:
        perception.load_state_dict(saved["perception"])
        policy.load_state_dict(saved["policy"])
        if heads is not None:
            heads.load_state_dict(saved["aux_head"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"resume: {path} holds other networks than the recipe builds ({_brief(exc)})") from None
    rng.bit_generator.state = saved["rng_states"][dist.rank]
    torch.set_rng_state(saved["torch_rng"])


def _dagger_collect(config: TrainConfig, round_index: int, progress: bool) -> None:
    """Fly the current best policy (the model file) with the expert labelling; shards into run_dir/dagger_N."""
    from liquid_control.learning.collect import CollectConfig, collect

    d = config.dagger
    pc = PerceptionConfig(**config.model.perception)
    collect(d.suite, _dagger_dir(config, round_index), episodes=d.episodes, workers=d.workers,
            base_seed=d.seed + 1000 * round_index,
            config=CollectConfig(height=pc.height, width=pc.width, policy_path=str(config.output.model),
                                 expert=config.expert,
                                 duration_s=config.data.collect.duration_s if config.data.collect else None),
            progress=progress)


def _dagger_dir(config: TrainConfig, round_index: int) -> Path:
    return Path(config.output.run_dir) / f"dagger_{round_index + 1}"


def _dagger_episodes(config: TrainConfig, round_index: int) -> list[EpisodeData]:
    from liquid_control.learning.dataset import list_shards, read_shard

    episodes = [e for e in (read_shard(p) for p in list_shards(_dagger_dir(config, round_index))) if len(e) >= 2]
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
        "best_closed_loop_success": None if math.isnan(best["score"]) else best["score"],
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
        # every key of every row (a run resumed from an older checkpoint has rows without the newer columns)
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
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
    handles, labels = ax.get_legend_handles_labels()
    flown = [(h["epoch"], h["closed_loop_success"]) for h in history if h.get("closed_loop_success") is not None]
    if flown:  # selection.metric closed_loop: the success of each flown epoch on its own axis
        right = ax.twinx()
        right.plot(*zip(*flown), "^--", color="tab:green", label="closed-loop success")
        right.set_ylim(-0.02, 1.02)
        right.set_ylabel("closed-loop success (selection suite)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
