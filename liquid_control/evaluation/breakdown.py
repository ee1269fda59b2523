"""Success by scene factor: which sampled factor of an episode goes with failure.

An evaluation report keeps each episode's scenario and seed, and `sample_episode` is deterministic, so
every factor the scenario drew (sky colour, light strength, target size, ...) can be drawn again after the
fact without flying. `breakdown_markdown` groups a report's episodes by one factor and tabulates
successes per group and model: categorical factors (colours, shapes, textures, airframes) and numbers
with few distinct values (counts) by value, other numbers in equal-width bins over each suite's values.

    liquid-control evaluate --compare shipped=docs/results/shipped_round5.json --by sky_colour
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from liquid_control.simulation.sampling import EpisodeSpec, sample_episode
from liquid_control.simulation.scenario import ScenarioError, load_scenario


# A numeric factor with at most this many distinct values (counts, a few sizes) gets a row per value.
MAX_DISTINCT_NUMBERS = 6


def _start_range(spec: EpisodeSpec) -> float:
    return float(np.linalg.norm(np.subtract(spec.targets[0], spec.start_position)))


# Factors that are not one EpisodeSpec field but read off one.
DERIVED: dict[str, Callable[[EpisodeSpec], Any]] = {
    "target_range_m": _start_range,  # start to first target (m)
    "distractor_count": lambda spec: len(spec.distractors),
    "occlusion_count": lambda spec: len(spec.occlusions),
}
# Fields that are a structure, not a factor one can group by.
_NOT_FACTORS = {"scenario", "task", "seed", "targets", "distractors", "chase_path", "camera_rate_schedule",
                "occlusions", "start_position", "light_direction", "wind_velocity_mps", "duration_s",
                "arena_half_size_m", "arena_max_height_m"}
FACTORS = tuple(sorted({f.name for f in dataclasses.fields(EpisodeSpec)} - _NOT_FACTORS | set(DERIVED)))


def factor_value(spec: EpisodeSpec, factor: str) -> Any:
    """The factor's value in one episode: a float, or a hashable category (str, or a tuple of rounded floats)."""
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; one of: {', '.join(FACTORS)}")
    value = DERIVED[factor](spec) if factor in DERIVED else getattr(spec, factor)
    if isinstance(value, (tuple, list)):
        return tuple(round(float(v), 2) for v in value)
    if isinstance(value, str):
        return value
    return float(value)


def _bins(values: Sequence[float], count: int) -> Callable[[float], str]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        return lambda v: f"{low:.3g}"
    width = (high - low) / count

    def label(v: float) -> str:
        k = min(int((v - low) / width), count - 1)
        return f"[{low + k * width:.3g}, {low + (k + 1) * width:.3g}{']' if k == count - 1 else ')'}"
    return label


def breakdown(models: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], factor: str, bins: int = 4,
              suites: Sequence[str] | None = None) -> tuple[list[tuple[str, str]], dict[tuple[str, str, str], list[int]]]:
    """(rows, cells): rows are (suite, group) in order; cells[(label, suite, group)] = [successes, episodes].

    models: (label, reports) as for `comparison_markdown`; each report's "episodes" need scenario, seed,
    suite and success (what `evaluate --json` writes). Raises ValueError naming a bad report or factor.
    """
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; one of: {', '.join(FACTORS)}")
    if not 1 <= bins <= 50:
        raise ValueError(f"bins must be in [1, 50], got {bins}")
    scenarios: dict[str, Any] = {}
    drawn: list[tuple[str, str, Any, bool]] = []  # (label, suite, value, success)
    for label, reports in models:
        for report in reports:
            episodes = report.get("episodes") if isinstance(report, Mapping) else None
            if not isinstance(episodes, list):
                raise ValueError(f"{label}: a report without an episode list (write it with evaluate --json)")
            for episode in episodes:
                try:
                    name, seed, suite = episode["scenario"], int(episode["seed"]), str(episode["suite"])
                    success = bool(episode["success"])
                except (KeyError, TypeError, ValueError) as err:
                    raise ValueError(f"{label}: an episode lacks scenario, seed, suite or success ({err})") from None
                if suites and suite not in suites:
                    continue
                if name not in scenarios:
                    try:
                        scenarios[name] = load_scenario(name)
                    except ScenarioError as err:
                        raise ValueError(f"{label}: cannot draw scenario {name!r} again: {err}") from None
                try:
                    spec = sample_episode(scenarios[name], seed)
                except ValueError as err:
                    raise ValueError(f"{label}: episode of {name!r}: {err}") from None
                drawn.append((label, suite, factor_value(spec, factor), success))
    if not drawn:
        raise ValueError("no episodes to group" + (f" in suites {list(suites)}" if suites else ""))
    groupers: dict[str, Callable[[Any], str]] = {}
    for suite in dict.fromkeys(s for _, s, _, _ in drawn):
        values = [v for _, s, v, _ in drawn if s == suite]
        if not all(isinstance(v, float) for v in values):
            groupers[suite] = lambda v: v if isinstance(v, str) else "(" + ", ".join(f"{x:.2f}" for x in v) + ")"
        elif len(set(values)) <= max(bins, MAX_DISTINCT_NUMBERS):  # e.g. counts: one row per value
            groupers[suite] = lambda v: f"{v:g}"
        else:
            groupers[suite] = _bins(values, bins)
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    rows: dict[tuple[str, str], Any] = {}
    for label, suite, value, success in drawn:
        group = groupers[suite](value)
        rows.setdefault((suite, group), value)
        cell = cells[(label, suite, group)]
        cell[0] += success
        cell[1] += 1
    ordered = sorted(rows, key=lambda r: (list(groupers).index(r[0]), _sort_key(rows[r])))
    return ordered, dict(cells)


def _sort_key(value: Any) -> tuple:
    if isinstance(value, float):
        return (0, value, "")
    return (1, 0.0, str(value))


def breakdown_markdown(models: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], factor: str, bins: int = 4,
                       suites: Sequence[str] | None = None) -> str:
    """The breakdown as a Markdown table: one row per (suite, group), one column per model."""
    rows, cells = breakdown(models, factor, bins, suites)
    labels = list(dict.fromkeys(label for label, _ in models))
    lines = [f"| suite | {factor} | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for suite, group in rows:
        row = []
        for label in labels:
            ok, n = cells.get((label, suite, group), (0, 0))
            row.append(f"{ok}/{n} ({100 * ok / n:.0f}%)" if n else "—")
        lines.append(f"| {suite} | {group} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["DERIVED", "FACTORS", "breakdown", "breakdown_markdown", "factor_value"]
