"""`liquid-control train`: train perception + policy by imitation from a YAML recipe.

    liquid-control train --config config/train_cfc.yaml [--set optim.epochs=2 ...] [--resume] [--no-progress]
    torchrun --nproc_per_node=2 -m liquid_control.cli train --config ...     # DistributedDataParallel

See liquid_control/learning/train.py for the recipe keys and what is written where, and docs/SCALE.md for
training across processes, GPUs and nodes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="training recipe (YAML), e.g. config/train_cfc.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe entry, e.g. --set optim.epochs=2 (value parsed as YAML)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from output.run_dir/checkpoint.pt (written after every epoch) when it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from liquid_control.learning.recipe import load_config
    from liquid_control.learning.train import train

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            print(f"error: --set {key}: the value is not valid YAML ({err})", file=sys.stderr)
            return 2
    # ConfigError / DatasetError (ValueErrors) reach cli.main: one line on stderr, exit status 2.
    config = load_config(args.config, overrides)
    result = train(config, progress=not args.no_progress, resume=args.resume)
    if result.rank != 0:  # under torchrun: one report, from the rank that wrote the files
        return 0
    flown = result.best_closed_loop_success
    criterion = f"closed-loop success {100 * flown:.0f}% (validation loss {result.best_val_loss:.4f})" \
        if flown is not None else f"best validation loss {result.best_val_loss:.4f}"
    print(f"trained {config.name}: {criterion} at epoch {result.best_epoch} "
          f"of {result.epochs_run}; {result.wall_s / 60:.1f} min; model {result.model_path}; "
          f"log {Path(config.output.run_dir) / 'train_log.csv'}")
    return 0
