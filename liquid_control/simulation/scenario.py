"""Scenario files: what a task randomises, read and validated (suites: suite.py; sampling: sampling.py).

A *scenario* (``sim/scenarios/<name>.yaml``) names a task and gives a range for
everything that varies between episodes: start pose, target placement and look,
distractors, ground, sky, lighting, wind, image noise, frame drops / latency, a
changing camera frame rate, occlusion events and the airframe.
``sampling.sample_episode(scenario, seed)`` turns it into one concrete ``EpisodeSpec``;
the same (scenario, seed) always gives the same episode.

A scenario may start with ``extends: <other scenario>``: the other file's
sections are taken and this file's keys replace theirs key by key. The ``ood_*``
scenarios use this so that the one factor they shift is all the file says.

A *suite* (``sim/suites/<name>.yaml``, suite.py) lists scenarios with episode counts.

Value syntax in scenario files:
  * a range is ``[low, high]`` (sampled uniformly) or a single number (fixed);
  * a choice is a list of names (one is drawn uniformly) or a single name;
  * a colour list is a list of ``[r, g, b]`` with components in 0..1.

Every problem in a file raises :class:`ScenarioError` naming the file, the key
and what is allowed. No ROS here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liquid_control.util.extends import extends_chain
from liquid_control.util.paths import share_path
from liquid_control.util.safe_input import InputError, load_yaml_file, short_repr

TASKS = ("fly_to_target", "target_loop", "chase")
SHAPES = ("sphere", "box", "cylinder")
TEXTURES = ("plain", "checker", "noise")
AIRFRAMES = ("cf2x", "quad250")
OCCLUSION_MODES = ("occluder", "blackout")


class ScenarioError(ValueError):
    """A scenario or suite file is missing, unreadable or has a bad value.

    The message names the file and the key (``section.key``) and says what is allowed.
    """

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem)


# ----------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True)
class Range:
    """Closed interval sampled uniformly; low == high means a fixed value."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.low) if self.low == self.high else float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class IntRange:
    """Closed integer interval sampled uniformly."""

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(self.low) if self.low == self.high else int(rng.integers(self.low, self.high + 1))


Colour = tuple[float, float, float]


def choose(rng: np.random.Generator, options: tuple) -> Any:
    return options[0] if len(options) == 1 else options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------------
# Schema: section -> key -> (kind, allowed) and defaults. Kinds: "range", "int", "choice", "colours",
# "optional_range" (a range, or null for "off"). Allowed bounds are sanity limits, not the training distribution.

_SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "start": {
        "height_m": ("range", (0.3, 5.0)),
        "yaw_deg": ("range", (-180.0, 180.0)),
        "xy_m": ("range", (-10.0, 10.0)),
    },
    "target": {
        "range_m": ("range", (1.0, 30.0)),       # horizontal distance from the start
        "bearing_deg": ("range", (-180.0, 180.0)),  # relative to the start heading, CCW positive
        "height_m": ("range", (0.2, 5.0)),
        "shapes": ("choice", SHAPES),
        "colours": ("colours", None),
        "size_m": ("range", (0.1, 1.0)),
    },
    "distractors": {
        "count": ("int", (0, 20)),
        "shapes": ("choice", SHAPES),
        "colours": ("colours", None),
        "size_m": ("range", (0.1, 1.5)),
        "range_m": ("range", (1.0, 30.0)),
        "bearing_deg": ("range", (-180.0, 180.0)),
        "height_m": ("range", (0.2, 5.0)),
    },
    "ground": {
        "colours": ("colours", None),
        "second_colours": ("colours", None),
        "textures": ("choice", TEXTURES),
        "texture_scale_m": ("range", (0.05, 20.0)),
    },
    "sky": {
        "colours": ("colours", None),
        "horizon_colours": ("colours", None),
    },
    "lighting": {
        "azimuth_deg": ("range", (-360.0, 360.0)),
        "elevation_deg": ("range", (5.0, 90.0)),
        "strength": ("range", (0.0, 2.0)),
        "ambient": ("range", (0.0, 1.0)),
    },
    "wind": {
        "speed_mps": ("range", (0.0, 10.0)),
        "direction_deg": ("range", (-360.0, 360.0)),
        "gust_std_mps": ("range", (0.0, 5.0)),
    },
    "sensor": {
        "image_noise_std": ("range", (0.0, 50.0)),  # in 0..255 grey levels
        "blur_px": ("range", (0.0, 5.0)),
        "exposure_gain": ("range", (0.2, 3.0)),
    },
    "timing": {
        "frame_drop_prob": ("range", (0.0, 0.9)),
        "latency_mean_s": ("range", (0.0, 0.5)),
        "latency_jitter_s": ("range", (0.0, 0.5)),
        # null: the camera's fixed rate (EpisodeConfig.camera.rate_hz). A range: the rate changes within
        # the episode, piecewise constant, a new rate (log-uniform in the range) every rate_change_s.
        "rate_hz": ("optional_range", (1.0, 240.0)),
        "rate_change_s": ("range", (0.1, 600.0)),
    },
    "loop": {
        "targets": ("int", (2, 10)),
        "leg_m": ("range", (2.0, 20.0)),
        "turn_deg": ("range", (0.0, 180.0)),  # magnitude; the side (left/right) is random
    },
    "chase": {
        "max_speed_mps": ("range", (0.0, 3.0)),
        "start_range_m": ("range", (0.5, 5.0)),
        "turn_rate_deg_s": ("range", (0.0, 90.0)),  # peak heading rate of the target's path
    },
    # Moments when the camera loses the target: `count` events (0 = off), each of a mode drawn from
    # `modes`, starting in start_s (episode time), hiding the target for duration_s. "occluder": an opaque
    # vertical cylinder (diameter occluder_size_m) passes between the camera and the target; "blackout":
    # the frames captured in the window arrive black. See simulation/occlusion.py.
    "occlusion": {
        "count": ("int", (0, 10)),
        "modes": ("choice", OCCLUSION_MODES),
        "start_s": ("range", (0.0, 600.0)),
        "duration_s": ("range", (0.05, 10.0)),
        "occluder_size_m": ("range", (0.2, 3.0)),
        "occluder_colours": ("colours", None),
    },
}

# Top-level scalar keys: key -> (low, high) or None for text keys handled separately.
_SCALARS: dict[str, tuple[float, float]] = {
    "duration_s": (1.0, 600.0),
    "arena_half_size_m": (2.0, 200.0),
    "arena_max_height_m": (1.0, 50.0),
}

_TOP_LEVEL = {"task", "description", "extends", "airframes", *_SCALARS, *_SCHEMA}

_DEFAULTS: dict[str, Any] = {
    "description": "",
    "duration_s": 20.0,
    "arena_half_size_m": 25.0,
    "arena_max_height_m": 8.0,
    "airframes": ["cf2x"],
    "start": {"height_m": 1.0, "yaw_deg": 0.0, "xy_m": 0.0},
    "target": {"range_m": [3.0, 8.0], "bearing_deg": [-15.0, 15.0], "height_m": 1.0,
               "shapes": ["sphere"], "colours": [[0.9, 0.1, 0.1]], "size_m": 0.3},
    "distractors": {"count": 0, "shapes": ["box"], "colours": [[0.1, 0.3, 0.9]], "size_m": 0.3,
                    "range_m": [2.0, 10.0], "bearing_deg": [-60.0, 60.0], "height_m": [0.5, 1.5]},
    "ground": {"colours": [[0.35, 0.55, 0.3]], "second_colours": [[0.3, 0.45, 0.25]],
               "textures": ["plain"], "texture_scale_m": 1.0},
    "sky": {"colours": [[0.55, 0.7, 0.9]], "horizon_colours": [[0.8, 0.85, 0.9]]},
    "lighting": {"azimuth_deg": 45.0, "elevation_deg": 50.0, "strength": 1.0, "ambient": 0.4},
    "wind": {"speed_mps": 0.0, "direction_deg": 0.0, "gust_std_mps": 0.0},
    "sensor": {"image_noise_std": 0.0, "blur_px": 0.0, "exposure_gain": 1.0},
    "timing": {"frame_drop_prob": 0.0, "latency_mean_s": 0.0, "latency_jitter_s": 0.0,
               "rate_hz": None, "rate_change_s": [1.0, 4.0]},
    "loop": {"targets": 3, "leg_m": [3.0, 6.0], "turn_deg": [60.0, 120.0]},
    "chase": {"max_speed_mps": 1.0, "start_range_m": 1.5, "turn_rate_deg_s": 20.0},
    "occlusion": {"count": 0, "modes": ["occluder", "blackout"], "start_s": [2.0, 10.0], "duration_s": [0.3, 1.5],
                  "occluder_size_m": 1.0, "occluder_colours": [[0.35, 0.35, 0.35]]},
}


# ----------------------------------------------------------------------------------------------
# Parsed scenario


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file. Sections map key -> Range | IntRange | tuple of choices/colours."""

    name: str
    path: str
    task: str
    description: str
    duration_s: float
    arena_half_size_m: float
    arena_max_height_m: float
    airframes: tuple[str, ...]
    sections: dict[str, dict[str, Any]] = field(repr=False)
    raw: dict[str, Any] = field(repr=False, compare=False)

    def section(self, name: str) -> dict[str, Any]:
        return self.sections[name]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    # An int is exact and finite whatever its size (math.isfinite would overflow on 10**400).
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _keys(mapping: dict[Any, Any]) -> list[str]:
    """A mapping's keys as text, sorted: YAML keys may be ints, bools or None as well as strings."""
    return sorted(str(key) for key in mapping)


def _parse_range(file: str, key: str, value: Any, bounds: tuple[float, float], integer: bool,
                 off: str = "") -> Range | IntRange:
    kind = "integer" if integer else "number"
    allowed = f"allowed: {off}a {kind} or [low, high] with {bounds[0]} <= low <= high <= {bounds[1]}"
    if _is_number(value):
        low = high = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        low, high = value
    else:
        raise ScenarioError(file, key, f"got {short_repr(value)}; {allowed}")
    if integer and (int(low) != low or int(high) != high):
        raise ScenarioError(file, key, f"got {short_repr(value)}, not whole numbers; {allowed}")
    if low > high:
        raise ScenarioError(file, key, f"low {low} > high {high}; {allowed}")
    if low < bounds[0] or high > bounds[1]:
        raise ScenarioError(file, key, f"got {short_repr(value)}, out of range; {allowed}")
    return IntRange(int(low), int(high)) if integer else Range(float(low), float(high))


def _parse_choice(file: str, key: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, str) for v in values):
        raise ScenarioError(file, key, f"got {short_repr(value)}; allowed: a non-empty list of {list(allowed)}")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ScenarioError(file, key, f"unknown {short_repr(unknown)}; allowed: {list(allowed)}")
    return tuple(values)


def _parse_colours(file: str, key: str, value: Any) -> tuple[Colour, ...]:
    allowed = "allowed: a non-empty list of [r, g, b] colours with components in 0..1"
    if not isinstance(value, (list, tuple)) or not value:
        raise ScenarioError(file, key, f"got {short_repr(value)}; {allowed}")
    colours = []
    for colour in value:
        if (not isinstance(colour, (list, tuple)) or len(colour) != 3
                or not all(_is_number(c) and 0.0 <= c <= 1.0 for c in colour)):
            raise ScenarioError(file, key, f"bad colour {short_repr(colour)}; {allowed}")
        colours.append(tuple(float(c) for c in colour))
    return tuple(colours)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Section-wise merge: a section in `override` replaces only the keys it names."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ScenarioError(path, "", "file not found")
    try:  # bounded: size, UTF-8, nesting depth and alias expansion (util.safe_input)
        data = load_yaml_file(path)
    except InputError as err:
        raise ScenarioError(path, "", str(err).removeprefix(f"{path}: ")) from None
    if not isinstance(data, dict):
        raise ScenarioError(path, "", f"top level must be a mapping of keys, got {type(data).__name__}")
    return data


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario name ('train_fly_to_target') or a path to a .yaml file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return share_path("sim", "scenarios", f"{text}.yaml")


MAX_EXTENDS = 16  # shipped scenarios extend at most one level; a longer chain is a mistake (or an attack)


def _resolve_raw(path: Path) -> dict[str, Any]:
    """The file's mapping with its `extends` chain merged in."""
    def base_path(file: Path, base_name: Any) -> Path:
        if not isinstance(base_name, str) or not base_name:
            raise ScenarioError(file, "extends", f"got {short_repr(base_name)}; allowed: the name of another scenario")
        base = scenario_path(base_name)
        if not base.is_absolute() and not base.is_file():
            base = file.parent / base
        if not base.is_file():
            raise ScenarioError(file, "extends", f"base scenario {short_repr(base_name)} not found at {base}")
        return base

    chain = extends_chain(path, read_yaml, base_path, lambda file, message: ScenarioError(file, "extends", message),
                          MAX_EXTENDS)
    merged = {k: v for k, v in chain[-1][1].items() if k != "extends"}
    for _, data in reversed(chain[:-1]):
        merged = _merge(merged, {k: v for k, v in data.items() if k != "extends"})
    return merged


def _check_arena(file: str, scalars: dict[str, float], sections: dict[str, dict[str, Any]]) -> None:
    """Every target the sampler can place must lie inside the arena (sampling.py places the first target
    at range_m from the start, whose x and y each lie in xy_m; a chase target starts start_range_m away)."""
    half, ceiling = scalars["arena_half_size_m"], scalars["arena_max_height_m"]
    xy = sections["start"]["xy_m"]
    start_reach = max(abs(xy.low), abs(xy.high))
    for dotted, reach in (("target.range_m", sections["target"]["range_m"].high),
                          ("chase.start_range_m", sections["chase"]["start_range_m"].high)):
        if start_reach + reach >= half:
            raise ScenarioError(file, dotted, f"a target up to {reach:g} m from a start up to {start_reach:g} m "
                                              f"off centre can lie outside the arena (arena_half_size_m "
                                              f"{half:g}); allowed: |start.xy_m| + {dotted} < arena_half_size_m")
    for dotted in ("start.height_m", "target.height_m"):
        section, key = dotted.split(".")
        if sections[section][key].high >= ceiling:
            raise ScenarioError(file, dotted, f"up to {sections[section][key].high:g} m is not below "
                                              f"arena_max_height_m {ceiling:g}")


def validate_scenario(data: dict[str, Any], file: str | Path = "<scenario>", name: str = "") -> Scenario:
    """Check a scenario mapping (after `extends` is resolved) and build a Scenario."""
    file = str(file)
    unknown = _keys({k: None for k in data if k not in _TOP_LEVEL})
    if unknown:
        raise ScenarioError(file, unknown[0], f"unknown key; allowed keys: {sorted(_TOP_LEVEL)}")
    if "task" not in data:
        raise ScenarioError(file, "task", f"missing; allowed: one of {list(TASKS)}")
    task = data["task"]
    if task not in TASKS:
        raise ScenarioError(file, "task", f"got {short_repr(task)}; allowed: one of {list(TASKS)}")
    merged = _merge(_DEFAULTS, {k: v for k, v in data.items() if k not in ("task", "extends")})
    scalars = {}
    for key, bounds in _SCALARS.items():
        value = merged[key]
        if not _is_number(value) or not bounds[0] <= value <= bounds[1]:
            raise ScenarioError(file, key, f"got {short_repr(value)}; allowed: a number in [{bounds[0]}, {bounds[1]}]")
        scalars[key] = float(value)
    description = merged["description"]
    if not isinstance(description, str):
        raise ScenarioError(file, "description", f"got {short_repr(description)}; allowed: text")
    airframes = _parse_choice(file, "airframes", merged["airframes"], AIRFRAMES)
    sections: dict[str, dict[str, Any]] = {}
    for section, schema in _SCHEMA.items():
        values = merged[section]
        if not isinstance(values, dict):
            raise ScenarioError(file, section, f"got {short_repr(values)}; allowed: a mapping with keys {sorted(schema)}")
        extra = _keys({k: None for k in values if k not in schema})
        if extra:
            raise ScenarioError(file, f"{section}.{extra[0]}", f"unknown key; allowed keys: {sorted(schema)}")
        parsed = {}
        for key, (kind, allowed) in schema.items():
            dotted, value = f"{section}.{key}", values[key]
            if kind == "range":
                parsed[key] = _parse_range(file, dotted, value, allowed, integer=False)
            elif kind == "int":
                parsed[key] = _parse_range(file, dotted, value, allowed, integer=True)
            elif kind == "optional_range":
                parsed[key] = None if value is None else _parse_range(file, dotted, value, allowed, integer=False,
                                                                      off="null (off), ")
            elif kind == "choice":
                parsed[key] = _parse_choice(file, dotted, value, allowed)
            else:
                parsed[key] = _parse_colours(file, dotted, value)
        sections[section] = parsed
    _check_arena(file, scalars, sections)
    return Scenario(name=name or Path(file).stem, path=file, task=task, description=description,
                    airframes=airframes, sections=sections, raw=merged, **scalars)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario by name (``sim/scenarios/<name>.yaml``) or path."""
    path = scenario_path(name_or_path)
    raw = _resolve_raw(path)
    try:
        return validate_scenario(raw, file=path, name=path.stem)
    except ScenarioError as err:
        base = read_yaml(path).get("extends")
        if base is None:
            raise
        # Point at the chain: the bad value may sit in the base file.
        raise ScenarioError(path, err.key, f"{err.problem} (this file extends {short_repr(base)}; "
                                           "the value may come from there)") from None
