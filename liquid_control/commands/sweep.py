"""`liquid-control sweep`: train and evaluate models x recipes x seeds as Ray tasks; one comparison table.

    liquid-control sweep --config config/sweep_time.yaml [--ray [ADDRESS]] [--cpus N] [--dry-run]

Without --ray (or with a bare --ray) a local Ray with --cpus CPUs (default: all cores) runs the
trainings, each declaring its recipe's optim.threads CPUs; --ray ADDRESS uses that cluster. Finished
runs (model + report present) are skipped, so re-running resumes. See learning/sweep.py and
docs/SCALE.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from liquid_control.util.executors import add_ray_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="sweep file (YAML), e.g. config/sweep_time.yaml")
    add_ray_argument(parser, "trainings (and the data collection)")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and what is finished; train nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from liquid_control.learning.sweep import load_sweep_config, plan, run_sweep

    # ConfigError / RayError (ValueErrors) and ConnectionError reach cli.main: one `error:` line, exit 2.
    config = load_sweep_config(args.config)
    if args.cpus is not None and args.cpus < 1:
        raise ValueError(f"--cpus must be >= 1, got {args.cpus}")
    if args.dry_run:
        runs = plan(config)
        for run in runs:
            state = "finished" if run.done() else "to run"
            print(f"{run.run_id}: {state}; {run.train.optim.threads} CPU(s); model {run.train.output.model}")
        print(f"{len(runs)} runs, {sum(not r.done() for r in runs)} to run; table in {config.out_dir}/comparison.md")
        return 0
    address = None if args.ray is False else args.ray
    summary = run_sweep(config, ray_address=address, cpus=args.cpus, progress=not args.no_progress)
    print(summary.table_markdown.read_text(), end="")
    print(f"{summary.trained} runs trained, {summary.skipped} finished before, in {summary.wall_s / 60:.1f} min; "
          f"table {summary.table_markdown} and {summary.table_json}")
    return 0
