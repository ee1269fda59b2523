"""`liquid-control expert`: fly the privileged expert on a suite and print a success table.

    liquid-control expert --suite train [--episodes N] [--workers W] [--seed S]
                          [--strip FILE.png] [--video FILE.mp4|.gif] [--plot FILE.png] [--json FILE.json]
                          [--set FIELD=VALUE ...] [--no-feedforward]

`--set` changes one of the expert's gains or limits (simulation/expert.py: ExpertConfig), e.g.
`--set chase_forward_gain=0.8`; `--no-feedforward` flies it without the chased target's velocity, the
best a follower that cannot see the target's motion does (a diagnostic; collected labels always have it).

Episode k of a scenario uses seed S + k, so runs are reproducible and any failed
episode can be re-flown alone. The strip/video/plot show the first episode of the
first scenario (or --show SCENARIO).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="train", help="suite name (sim/suites/<name>.yaml) or path")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes per scenario (default: the suite's counts)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 of each scenario (default 0)")
    parser.add_argument("--duration", type=float, default=None, help="override episode length (s)")
    parser.add_argument("--show", default=None, help="scenario shown by --strip/--video/--plot (default: first)")
    parser.add_argument("--strip", type=Path, help="save a strip of onboard camera frames (PNG)")
    parser.add_argument("--video", type=Path, help="save the onboard camera video (.mp4 or .gif)")
    parser.add_argument("--plot", type=Path, help="save a top-down plot of the trajectory (PNG)")
    parser.add_argument("--json", type=Path, help="save every episode's metrics (JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change an expert gain or limit (ExpertConfig field), e.g. chase_forward_gain=0.8")
    parser.add_argument("--no-feedforward", action="store_true",
                        help="fly without the chased target's velocity (diagnostic)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def expert_config(overrides: list[str]) -> Any:
    """ExpertConfig with `FIELD=VALUE` overrides; ValueError naming the problem (unknown field, not a
    number; the range is ExpertConfig's own check)."""
    import dataclasses

    from liquid_control.simulation.expert import ExpertConfig

    fields = {f.name for f in dataclasses.fields(ExpertConfig)}
    values: dict[str, float] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item[:80]!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        try:
            values[name] = float(text)
        except ValueError:
            raise ValueError(f"--set {name}: the value must be a number, got {text[:40]!r}") from None
    return ExpertConfig(**values)


def _fly(job: tuple) -> dict[str, Any]:
    """Worker: one expert episode -> its metrics (top level so process pools can pickle it)."""
    from liquid_control.simulation.episode import EpisodeConfig, run_expert_episode

    scenario, seed, duration, config, feedforward = job
    return run_expert_episode(scenario, seed, EpisodeConfig(render=False, duration_s=duration), config,
                              feedforward).metrics


def summary_rows(metrics: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """Per-scenario and overall figures: success with Wilson 95% interval, time to goal, distance, failures."""
    from liquid_control.evaluation.stats import finite_mean, proportion

    groups = {name: [m for m in metrics if m["scenario"] == name] for name in order}
    groups["ALL"] = list(metrics)
    rows = []
    for name, ms in groups.items():
        if not ms:
            continue
        rows.append({
            "scenario": name, "episodes": len(ms), "success": proportion(m["success"] for m in ms),
            "time_to_goal_s": finite_mean(m["time_to_goal_s"] for m in ms if m["success"]),
            "final_distance_m": finite_mean(m["final_distance_m"] for m in ms),
            "crashes": sum(bool(m["crashed"]) for m in ms), "left_arena": sum(bool(m["left_arena"]) for m in ms),
            "timeouts": sum(m["reason"] in ("timeout", "lost_target") for m in ms),
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'scenario':34s} {'eps':>4s}  {'success [95% Wilson]':24s} {'t_goal s':>8s} {'final m':>8s} " \
           f"{'crash':>5s} {'arena':>5s} {'t/o':>4s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        tg = "-" if math.isnan(r["time_to_goal_s"]) else f"{r['time_to_goal_s']:.1f}"
        lines.append(f"{r['scenario']:34s} {r['episodes']:4d}  {str(r['success']):24s} {tg:>8s} "
                     f"{r['final_distance_m']:8.2f} {r['crashes']:5d} {r['left_arena']:5d} {r['timeouts']:4d}")
    return "\n".join(lines)


def save_strip(frames: list, path: Path, count: int = 8, scale: int = 2) -> None:
    import cv2

    images = [f.image for f in frames if f is not None]
    if not images:
        raise ValueError("no camera frames to save")
    picks = [images[int(i)] for i in np.linspace(0, len(images) - 1, min(count, len(images)))]
    strip = np.concatenate([np.pad(im, ((2, 2), (2, 2), (0, 0)), constant_values=255) for im in picks], axis=1)
    strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if not cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def save_video(frames: list, path: Path, fps: float, scale: int = 2) -> None:
    import cv2

    images = [cv2.resize(f.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
              for f in frames if f is not None]
    if not images:
        raise ValueError("no camera frames to save")
    if path.suffix.lower() == ".gif":
        from PIL import Image

        step = max(1, int(round(fps / 10)))  # 10 fps at native size keeps GIFs small
        pil = [Image.fromarray(f.image) for f in frames if f is not None][::step]
        pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 * step / fps), loop=0)
        return
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write video {path} (try .gif)")
    for im in images:
        writer.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    writer.release()


def run(args: argparse.Namespace) -> int:
    from liquid_control.simulation.scenario import ScenarioError
    from liquid_control.simulation.suite import load_suite

    if args.episodes is not None and args.episodes < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.video is not None and args.video.suffix.lower() not in (".mp4", ".gif"):
        print(f"error: --video must end in .mp4 or .gif, got {args.video}", file=sys.stderr)
        return 2
    try:
        suite = load_suite(args.suite)
        config = expert_config(args.overrides)
    except (ScenarioError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    feedforward = not args.no_feedforward
    jobs = [(entry.scenario, args.seed + k, args.duration, config, feedforward) for entry in suite.entries
            for k in range(args.episodes or entry.episodes)]
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=f"expert on {suite.name}", unit="ep", disable=args.no_progress, file=sys.stderr)
    metrics: list[dict[str, Any]] = []
    if args.workers == 1:
        for job in jobs:
            metrics.append(_fly(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for m in pool.map(_fly, jobs, chunksize=max(1, len(jobs) // (8 * args.workers))):
                metrics.append(m)
                bar.update()
    bar.close()
    order = [entry.scenario.name for entry in suite.entries]
    print(f"suite {suite.name}: expert, seeds {args.seed}..{args.seed + max(len([j for j in jobs if j[0].name == n]) for n in order) - 1}")
    print(format_table(summary_rows(metrics, order)))
    failed = [f"{m['scenario']}#{m['seed']} ({m['reason']}{': ' + m['crash_reason'] if m['crash_reason'] else ''})"
              for m in metrics if not m["success"]]
    if failed:
        print("failed episodes: " + ", ".join(failed))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1, default=float))
    if args.strip or args.video or args.plot:
        from liquid_control.simulation.episode import EpisodeConfig, run_expert_episode

        names = {e.scenario.name: e.scenario for e in suite.entries}
        show = args.show or order[0]
        if show not in names:
            print(f"error: --show {show!r} is not in suite {suite.name} ({', '.join(order)})", file=sys.stderr)
            return 2
        episode_config = EpisodeConfig(render=True, keep_frames=bool(args.strip or args.video),
                                       duration_s=args.duration)
        result = run_expert_episode(names[show], args.seed, episode_config, config, feedforward)
        if args.strip:
            save_strip(result.frames, args.strip)
            print(f"saved camera strip {args.strip}")
        if args.video:
            save_video(result.frames, args.video, fps=episode_config.control_hz)
            print(f"saved camera video {args.video}")
        if args.plot:
            from liquid_control.evaluation.plots import save_plot

            save_plot(result, args.plot)
            print(f"saved trajectory plot {args.plot}")
    return 0
