"""Training step time: batches drawn in line vs prepared by the prefetch thread, 1 vs 2 torch threads.

    .venv/bin/python benchmarks/train_step.py [--config config/train_cfc.yaml] [--steps 20]

Runs the recipe's sampler (with its augmentation) and `train.batch_loss` (perception, policy, loss, plus the
auxiliary loss when the recipe has one), then a clipped AdamW step, on synthetic episodes of the recipe's
image size (random pixels and class masks: the cost of augmentation does not depend on what they show). The baseline, measured in
the same run, is the loop as it was before prefetching: batches drawn in line, 2 torch threads.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liquid_control.learning.dataset import EpisodeData  # noqa: E402
from liquid_control.learning.recipe import load_config  # noqa: E402
from liquid_control.learning.sampler import prefetched  # noqa: E402
from liquid_control.learning.train import aux_heads, batch_loss, build_models, recipe_sampler  # noqa: E402


def synthetic_episodes(count: int, frames: int, height: int, width: int) -> list[EpisodeData]:
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(count):
        positions = np.cumsum(rng.normal(0, 0.05, (frames, 3)), axis=0).astype(np.float32)
        episodes.append(EpisodeData(
            images=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
            capture_times_s=np.arange(frames) / 30.0, labels=rng.normal(0, 0.5, (frames, 4)).astype(np.float32),
            segmentation=rng.integers(0, 4, (frames, height, width), dtype=np.uint8), positions=positions,
            targets=positions + np.float32([4.0, 0.5, 0.2]), yaws=np.zeros(frames, np.float32)))
    return episodes


def time_steps(config, episodes, steps: int, threads: int, prefetch: bool) -> float:
    """Mean seconds per optimiser step (after 2 warm-up steps)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    perception, policy = build_models(config)
    o = config.optim
    sampler = recipe_sampler(config, episodes, np.random.default_rng(0))
    head = aux_heads(config, perception, policy)
    parameters = list(perception.parameters()) + list(policy.parameters())
    parameters += list(head.parameters()) if head is not None else []
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    state = policy.initial_state(o.batch_size)
    batches = prefetched(sampler.next_batch, steps + 2) if prefetch else (sampler.next_batch() for _ in range(steps + 2))
    start = 0.0
    for k, batch in enumerate(batches):
        if k == 2:
            start = time.perf_counter()
        loss, state = batch_loss(perception, policy, batch, state, policy.command_scale, head)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, o.grad_clip)
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/train_cfc.yaml", help="training recipe (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    args = parser.parse_args()
    config = load_config(args.config)
    pc = config.model.perception
    episodes = synthetic_episodes(8, 400, int(pc.get("height", 96)), int(pc.get("width", 128)))
    frames = config.optim.batch_size * config.optim.sequence_length
    print(f"recipe {args.config}: batch {config.optim.batch_size} x {config.optim.sequence_length} frames, "
          f"{args.steps} timed steps per variant")
    baseline = None
    print(f"{'variant':<34} {'ms/step':>8} {'us/frame':>9} {'vs baseline':>12}")
    for name, threads, prefetch in (("in line, 2 threads (baseline)", 2, False), ("prefetch thread, 2 threads", 2, True),
                                    ("in line, 1 thread", 1, False), ("prefetch thread, 1 thread", 1, True)):
        seconds = time_steps(config, episodes, args.steps, threads, prefetch)
        baseline = baseline or seconds
        print(f"{name:<34} {1e3 * seconds:8.0f} {1e6 * seconds / frames:9.0f} {baseline / seconds:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
