"""`liquid-control evaluate`: fly a model file closed loop on scenario suites and report success.

    liquid-control evaluate --model M --suite S [--suite S2 ...] [--episodes N] [--workers W] [--seed S]
                            [--json OUT] [--markdown OUT] [--plots DIR] [--record DIR]
                            [--backend auto|onnxruntime|torch] [--fixed-timespan PERIODS] [--ray [ADDRESS]]
    liquid-control evaluate --compare LABEL=REPORT.json[,REPORT2.json] [--compare ...] [--markdown OUT]
                            [--by FACTOR [--bins N] [--suite S ...]]

Images -> perception -> policy -> flight controller through the policy node's own loop and the
deployed runtimes, recurrent state carried (evaluation/closed_loop.py). Episode k of
a scenario uses seed S + k (default S = 1,000,000, held out from training data). Prints the Markdown table; --json keeps every episode.
With --ray the episodes are Ray tasks (a local Ray, or the cluster at ADDRESS; docs/SCALE.md), same results.
--compare flies nothing: it tabulates earlier --json reports, one row per model, one column per suite;
the same LABEL given again is another training seed of that model (cells: mean and min-max over seeds).
With --by, the compared episodes are grouped by one factor their scenario drew (e.g. sky_colour,
light_strength, target_size_m; evaluation/breakdown.py), to see which factor goes with failure.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from liquid_control.evaluation.closed_loop import HELD_OUT_SEED
from liquid_control.util.executors import add_ray_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="model file (.safetensors) with perception + policy")
    parser.add_argument("--compare", action="append", default=None, metavar="LABEL=REPORT.json[,REPORT2.json]",
                        help="instead of flying: one table row per model from earlier --json reports; "
                             "repeat a LABEL for its other training seeds")
    parser.add_argument("--by", metavar="FACTOR", default=None,
                        help="with --compare: successes per value (or numeric bin) of one drawn scene factor, "
                             "e.g. sky_colour, light_strength, target_size_m, target_range_m")
    parser.add_argument("--bins", type=int, default=4, help="with --by: bins for a numeric factor (default 4)")
    parser.add_argument("--suite", action="append", default=None,
                        help="suite name or path; repeat for several (default: train; with --by: only these)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per scenario (default: the suite's)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                        help=f"seed of episode 0 of each scenario (default {HELD_OUT_SEED}: far from the seeds "
                             "`collect` uses, so evaluation episodes are not training episodes)")
    parser.add_argument("--duration", type=float, default=None, help="override episode length (s)")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch"),
                        help="inference runtime (default auto: onnxruntime when installed)")
    parser.add_argument("--json", type=Path, help="write the report and every episode's metrics (JSON)")
    parser.add_argument("--markdown", type=Path, help="write the summary table (Markdown)")
    parser.add_argument("--plots", type=Path, help="directory for per-episode top-down trajectory plots")
    parser.add_argument("--record", type=Path, help="directory for one rosbag2 MCAP bag per episode "
                        "(camera images, cmd_vel, odom)")
    parser.add_argument("--fixed-timespan", type=float, default=None, metavar="PERIODS",
                        help="ablation: feed this constant timespan (nominal frame periods) instead of the real "
                             "capture-time differences, to measure how much the model uses frame timing")
    add_ray_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_compare(args: argparse.Namespace) -> int:
    from liquid_control.evaluation.breakdown import breakdown_markdown
    from liquid_control.evaluation.results_tables import comparison_markdown

    models = []
    try:
        for item in args.compare:
            label, sep, paths = item.partition("=")
            if not sep or not label or not paths:
                raise ValueError(f"--compare wants LABEL=REPORT.json[,REPORT2.json], got {item!r}")
            reports = []
            for path in paths.split(","):
                try:
                    reports.append(json.loads(Path(path).read_text()))
                except (OSError, json.JSONDecodeError) as err:
                    raise ValueError(f"cannot read evaluation report {path}: {err}") from err
            models.append((label, reports))
        if args.by:
            table = breakdown_markdown(models, args.by, args.bins, args.suite)
        else:
            table = comparison_markdown(models)
    except (ValueError, KeyError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    return 0


def run(args: argparse.Namespace) -> int:
    from liquid_control.evaluation.closed_loop import evaluate_suites, finite_json
    from liquid_control.models.model_file import ModelFileError
    from liquid_control.simulation.scenario import ScenarioError

    if args.compare:
        return run_compare(args)
    if args.by:
        print("error: --by groups --compare reports; fly with --json first, then --compare ... --by", file=sys.stderr)
        return 2
    if args.model is None:
        print("error: evaluate needs --model (or --compare)", file=sys.stderr)
        return 2
    try:
        report = evaluate_suites(args.model, args.suite or ["train"], episodes=args.episodes, workers=args.workers,
                                 base_seed=args.seed, duration_s=args.duration, plots_dir=args.plots,
                                 record_dir=args.record, backend=args.backend, progress=not args.no_progress,
                                 fixed_timespan=args.fixed_timespan, ray_address=args.ray)
    except (ModelFileError, ScenarioError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = report.markdown()
    print(table, end="")
    print(f"({len(report.episodes)} episodes in {report.wall_s:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite_json(report.to_dict()), indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.plots:
        print(f"trajectory plots in {args.plots}")
    if args.record:
        print(f"episode bags in {args.record}")
    return 0
