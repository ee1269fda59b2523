"""`liquid-control collect`: fly the expert (with perturbations) on a suite and store training shards.

    liquid-control collect --suite train --episodes N --out DIR [--workers W] [--seed S]
                           [--perturbed-fraction F] [--size HxW] [--policy MODEL] [--duration S]
                           [--set FIELD=VALUE ...] [--ray [ADDRESS]]

One shard per episode (``DIR/<scenario>_<seed>.npz``, see learning/dataset.py); episodes
whose shard exists are skipped, so re-running the same command resumes. With --ray the episodes are
Ray tasks (a local Ray, or the cluster at ADDRESS; docs/SCALE.md) and the shards are the same.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liquid_control.util.executors import add_ray_argument


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 48x64, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="train", help="suite name (sim/suites/<name>.yaml) or path")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per scenario (default: the suite's)")
    parser.add_argument("--out", type=Path, required=True, help="output directory for the shards")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 of each scenario (default 0)")
    parser.add_argument("--perturbed-fraction", type=float, default=0.7,
                        help="share of episodes flown with exploration noise, labelled by the expert (default 0.7)")
    parser.add_argument("--decoy-fraction", type=float, default=0.0,
                        help="share of the perturbed episodes whose expert now and then flies to a distractor as "
                             "if it were the target, labelled by a clean expert (default 0)")
    parser.add_argument("--size", type=_size, default=(48, 64), help="stored image size HxW (default 48x64)")
    parser.add_argument("--policy", type=Path, default=None,
                        help="model file: the policy flies and the expert labels (DAgger)")
    parser.add_argument("--duration", type=float, default=None, help="override episode length (s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="the labelling expert's gain, stand-off or limit (ExpertConfig field), as a recipe's "
                             "`expert` section sets it, e.g. chase_forward_gain=1.6")
    add_ray_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from liquid_control.commands.expert import expert_config
    from liquid_control.learning.collect import CollectConfig, collect
    from liquid_control.simulation.scenario import ScenarioError

    if args.policy is not None and not args.policy.is_file():
        print(f"error: --policy {args.policy} does not exist", file=sys.stderr)
        return 2
    try:
        config = CollectConfig(height=args.size[0], width=args.size[1], perturbed_fraction=args.perturbed_fraction,
                               decoy_fraction=args.decoy_fraction,
                               duration_s=args.duration, policy_path=None if args.policy is None else str(args.policy),
                               expert=expert_config(args.overrides))
        summary = collect(args.suite, args.out, episodes=args.episodes, workers=args.workers, base_seed=args.seed,
                          config=config, progress=not args.no_progress, ray_address=args.ray)
    except (ScenarioError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    modes = ", ".join(f"{k}: {v}" for k, v in sorted(summary.modes.items())) or "none"
    print(f"collected {summary.written} episodes into {summary.out_dir} ({summary.skipped_existing} already there, "
          f"{summary.planned} planned) in {summary.wall_s:.1f} s; controllers: {modes}")
    return 0
