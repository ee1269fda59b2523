"""Scenario and suite files: what a task randomises, validated, and seeded sampling.

A *scenario* (``sim/scenarios/<name>.yaml``) names a task and gives a range for
everything that varies between episodes: start pose, target placement and look,
distractors, ground, sky, lighting, wind, image noise, frame drops / latency, a
changing camera frame rate, occlusion events and the airframe.
``sample_episode(scenario, seed)`` turns it into one concrete :class:`EpisodeSpec`;
the same (scenario, seed) always gives the same episode.

A scenario may start with ``extends: <other scenario>``: the other file's
sections are taken and this file's keys replace theirs key by key. The ``ood_*``
scenarios use this so that the one factor they shift is all the file says.

A *suite* (``sim/suites/<name>.yaml``) lists scenarios with episode counts.

Value syntax in scenario files:
  * a range is ``[low, high]`` (sampled uniformly) or a single number (fixed);
  * a choice is a list of names (one is drawn uniformly) or a single name;
  * a colour list is a list of ``[r, g, b]`` with components in 0..1.

Every problem in a file raises :class:`ScenarioError` naming the file, the key
and what is allowed. No ROS here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from liquid_control.util.paths import share_path

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


def _choose(rng: np.random.Generator, options: tuple) -> Any:
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
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_range(file: str, key: str, value: Any, bounds: tuple[float, float], integer: bool,
                 off: str = "") -> Range | IntRange:
    kind = "integer" if integer else "number"
    allowed = f"allowed: {off}a {kind} or [low, high] with {bounds[0]} <= low <= high <= {bounds[1]}"
    if _is_number(value):
        low = high = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        low, high = value
    else:
        raise ScenarioError(file, key, f"got {value!r}; {allowed}")
    if integer and (int(low) != low or int(high) != high):
        raise ScenarioError(file, key, f"got {value!r}, not whole numbers; {allowed}")
    if low > high:
        raise ScenarioError(file, key, f"low {low} > high {high}; {allowed}")
    if low < bounds[0] or high > bounds[1]:
        raise ScenarioError(file, key, f"got {value!r}, out of range; {allowed}")
    return IntRange(int(low), int(high)) if integer else Range(float(low), float(high))


def _parse_choice(file: str, key: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, str) for v in values):
        raise ScenarioError(file, key, f"got {value!r}; allowed: a non-empty list of {list(allowed)}")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ScenarioError(file, key, f"unknown {unknown}; allowed: {list(allowed)}")
    return tuple(values)


def _parse_colours(file: str, key: str, value: Any) -> tuple[Colour, ...]:
    allowed = "allowed: a non-empty list of [r, g, b] colours with components in 0..1"
    if not isinstance(value, (list, tuple)) or not value:
        raise ScenarioError(file, key, f"got {value!r}; {allowed}")
    colours = []
    for colour in value:
        if (not isinstance(colour, (list, tuple)) or len(colour) != 3
                or not all(_is_number(c) and 0.0 <= c <= 1.0 for c in colour)):
            raise ScenarioError(file, key, f"bad colour {colour!r}; {allowed}")
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


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ScenarioError(path, "", "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ScenarioError(path, "", f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ScenarioError(path, "", f"top level must be a mapping of keys, got {type(data).__name__}")
    return data


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario name ('train_fly_to_target') or a path to a .yaml file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return share_path("sim", "scenarios", f"{text}.yaml")


def _resolve_raw(path: Path, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    data = _read_yaml(path)
    if str(path.resolve()) in chain:
        raise ScenarioError(path, "extends", f"circular extends: {' -> '.join(chain)}")
    base_name = data.get("extends")
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name:
        raise ScenarioError(path, "extends", f"got {base_name!r}; allowed: the name of another scenario")
    base_path = scenario_path(base_name)
    if not base_path.is_absolute() and not base_path.is_file():
        base_path = path.parent / base_path
    if not base_path.is_file():
        raise ScenarioError(path, "extends", f"base scenario {base_name!r} not found at {base_path}")
    base = _resolve_raw(base_path, chain + (str(path.resolve()),))
    base.pop("extends", None)
    return _merge(base, {k: v for k, v in data.items() if k != "extends"})


def validate_scenario(data: dict[str, Any], file: str | Path = "<scenario>", name: str = "") -> Scenario:
    """Check a scenario mapping (after `extends` is resolved) and build a Scenario."""
    file = str(file)
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise ScenarioError(file, unknown[0], f"unknown key; allowed keys: {sorted(_TOP_LEVEL)}")
    if "task" not in data:
        raise ScenarioError(file, "task", f"missing; allowed: one of {list(TASKS)}")
    task = data["task"]
    if task not in TASKS:
        raise ScenarioError(file, "task", f"got {task!r}; allowed: one of {list(TASKS)}")
    merged = _merge(_DEFAULTS, {k: v for k, v in data.items() if k not in ("task", "extends")})
    scalars = {}
    for key, bounds in _SCALARS.items():
        value = merged[key]
        if not _is_number(value) or not bounds[0] <= value <= bounds[1]:
            raise ScenarioError(file, key, f"got {value!r}; allowed: a number in [{bounds[0]}, {bounds[1]}]")
        scalars[key] = float(value)
    description = merged["description"]
    if not isinstance(description, str):
        raise ScenarioError(file, "description", f"got {description!r}; allowed: text")
    airframes = _parse_choice(file, "airframes", merged["airframes"], AIRFRAMES)
    sections: dict[str, dict[str, Any]] = {}
    for section, schema in _SCHEMA.items():
        values = merged[section]
        if not isinstance(values, dict):
            raise ScenarioError(file, section, f"got {values!r}; allowed: a mapping with keys {sorted(schema)}")
        extra = sorted(set(values) - set(schema))
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
    return Scenario(name=name or Path(file).stem, path=file, task=task, description=description,
                    airframes=airframes, sections=sections, raw=merged, **scalars)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario by name (``sim/scenarios/<name>.yaml``) or path."""
    path = scenario_path(name_or_path)
    raw = _resolve_raw(path)
    try:
        return validate_scenario(raw, file=path, name=path.stem)
    except ScenarioError as err:
        base = _read_yaml(path).get("extends")
        if base is None:
            raise
        # Point at the chain: the bad value may sit in the base file.
        raise ScenarioError(path, err.key, f"{err.problem} (this file extends {base!r}; "
                                           "the value may come from there)") from None


# ----------------------------------------------------------------------------------------------
# Suites


@dataclass(frozen=True)
class SuiteEntry:
    scenario: Scenario
    episodes: int


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[SuiteEntry, ...]

    @property
    def total_episodes(self) -> int:
        return sum(e.episodes for e in self.entries)


def suite_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return share_path("sim", "suites", f"{text}.yaml")


def list_suites() -> list[str]:
    return sorted(p.stem for p in share_path("sim", "suites").glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite file: ``scenarios: [{scenario: <name>, episodes: <n>}, ...]``."""
    path = suite_path(name_or_path)
    data = _read_yaml(path)
    unknown = sorted(set(data) - {"description", "scenarios"})
    if unknown:
        raise ScenarioError(path, unknown[0], "unknown key; allowed keys: ['description', 'scenarios']")
    items = data.get("scenarios")
    if not isinstance(items, list) or not items:
        raise ScenarioError(path, "scenarios", f"got {items!r}; allowed: a non-empty list of "
                                               "{scenario: <name>, episodes: <count >= 1>}")
    entries = []
    for i, item in enumerate(items):
        key = f"scenarios[{i}]"
        if not isinstance(item, dict) or set(item) != {"scenario", "episodes"}:
            raise ScenarioError(path, key, f"got {item!r}; allowed: {{scenario: <name>, episodes: <count >= 1>}}")
        episodes = item["episodes"]
        if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
            raise ScenarioError(path, f"{key}.episodes", f"got {episodes!r}; allowed: an integer >= 1")
        if not isinstance(item["scenario"], str):
            raise ScenarioError(path, f"{key}.scenario", f"got {item['scenario']!r}; allowed: a scenario name")
        scenario_file = scenario_path(item["scenario"])
        if not scenario_file.is_file():
            raise ScenarioError(path, f"{key}.scenario", f"scenario {item['scenario']!r} not found ({scenario_file})")
        entries.append(SuiteEntry(load_scenario(scenario_file), episodes))
    description = data.get("description", "")
    return Suite(name=path.stem, description=str(description), entries=tuple(entries))


# ----------------------------------------------------------------------------------------------
# Sampled episode


@dataclass(frozen=True)
class PlacedObject:
    """A coloured primitive in the world (target or distractor). Position in world metres."""

    shape: str
    colour: Colour
    size_m: float
    position: tuple[float, float, float]


@dataclass(frozen=True)
class ChasePath:
    """A smooth random path for the chase target, precomputed at `dt_s`.

    Speed and heading rate are sums of slow sinusoids, so the path is C1-smooth;
    speed never exceeds `max_speed_mps`. Positions between samples are interpolated.
    """

    dt_s: float
    points: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2 or not self.dt_s > 0:
            raise ValueError("ChasePath needs >= 2 points and dt_s > 0")
        object.__setattr__(self, "_array", np.asarray(self.points, dtype=float))  # cached for lookups

    def position(self, time_s: float) -> np.ndarray:
        pts = self._array
        s = min(max(time_s / self.dt_s, 0.0), len(pts) - 1.0)
        i = min(int(s), len(pts) - 2)
        a = s - i
        return (1 - a) * pts[i] + a * pts[i + 1]

    def velocity(self, time_s: float) -> np.ndarray:
        pts = self._array
        i = min(max(int(time_s / self.dt_s), 0), len(pts) - 2)
        return (pts[i + 1] - pts[i]) / self.dt_s


@dataclass(frozen=True)
class OcclusionEvent:
    """One moment the camera loses the target, in episode time (s).

    mode "occluder": an occluder crosses the line of sight and hides the target fully during
    [start_s, end_s]; `side` (+1 / -1) is the direction it crosses in. "blackout": frames captured
    in [start_s, end_s] arrive black.
    """

    mode: str
    start_s: float
    duration_s: float
    side: float = 1.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything concrete about one episode: the sampled scenario at one seed.

    World frame: x forward at yaw 0, y left, z up (m); yaw CCW (rad).
    `targets` are the goal positions in visiting order (one for fly_to_target,
    the initial position for chase).
    """

    scenario: str
    task: str
    seed: int
    duration_s: float
    arena_half_size_m: float
    arena_max_height_m: float
    airframe: str
    start_position: tuple[float, float, float]
    start_yaw_rad: float
    targets: tuple[tuple[float, float, float], ...]
    target_shape: str
    target_colour: Colour
    target_size_m: float
    distractors: tuple[PlacedObject, ...]
    ground_colour: Colour
    ground_second_colour: Colour
    ground_texture: str
    ground_texture_scale_m: float
    sky_colour: Colour
    horizon_colour: Colour
    light_direction: tuple[float, float, float]  # unit vector pointing from the scene to the light
    light_strength: float
    ambient: float
    wind_velocity_mps: tuple[float, float, float]
    wind_gust_std_mps: float
    image_noise_std: float
    blur_px: float
    exposure_gain: float
    frame_drop_prob: float
    latency_mean_s: float
    latency_jitter_s: float
    chase_path: ChasePath | None = None
    # Variable frame rate: (segment start s, rate Hz) in time order; empty: the camera's fixed rate.
    camera_rate_schedule: tuple[tuple[float, float], ...] = ()
    occlusions: tuple[OcclusionEvent, ...] = ()  # in time order, never overlapping
    occluder_size_m: float = 1.0  # diameter of the occluder cylinder (used by "occluder" events)
    occluder_colour: Colour = (0.35, 0.35, 0.35)


def _polar(origin: np.ndarray, heading: float, range_m: float, height: float) -> np.ndarray:
    return np.array([origin[0] + range_m * math.cos(heading), origin[1] + range_m * math.sin(heading), height])


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Horizontal distance of p from segment ab."""
    p, a, b = p[:2], a[:2], b[:2]
    ab = b - a
    t = 0.0 if not ab.any() else float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _tuple3(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


# Keep-out around the flight path for distractors (m): they must not block the way or the view.
DISTRACTOR_CLEARANCE_M = 1.5


def _sample_chase_path(rng: np.random.Generator, start: np.ndarray, heading: float, duration_s: float,
                       max_speed: float, turn_rate_deg_s: float, arena_half: float, dt: float = 0.05) -> ChasePath:
    """Integrate a smooth random walk: speed in [0.4, 1]·max, heading rate a sum of two sinusoids.

    Beyond 60% of the arena the heading is steered back towards the centre so the
    target (and the drone following it) stays inside.
    """
    steps = int(math.ceil(duration_s / dt)) + 2
    w = rng.uniform(0.1, 0.4, size=4)  # rad/s: periods of 15..60 s
    phase = rng.uniform(0, 2 * math.pi, size=4)
    turn_peak = math.radians(turn_rate_deg_s)
    pos = start.astype(float).copy()
    points = [_tuple3(pos)]
    for k in range(1, steps):
        t = k * dt
        speed = max_speed * (0.7 + 0.3 * math.sin(w[0] * t + phase[0]))
        rate = turn_peak * (0.6 * math.sin(w[1] * t + phase[1]) + 0.4 * math.sin(w[2] * t + phase[2]))
        r = math.hypot(pos[0], pos[1])
        if r > 0.6 * arena_half:  # turn back gently towards the centre
            home = math.atan2(-pos[1], -pos[0])
            err = math.atan2(math.sin(home - heading), math.cos(home - heading))
            rate = float(np.clip(err, -turn_peak, turn_peak)) if turn_peak > 0 else 0.0
        heading += rate * dt
        pos[0] += speed * math.cos(heading) * dt
        pos[1] += speed * math.sin(heading) * dt
        pos[2] = start[2] + 0.2 * math.sin(w[3] * t + phase[3]) - 0.2 * math.sin(phase[3])
        points.append(_tuple3(pos))
    return ChasePath(dt_s=dt, points=tuple(points))


# Least time between the end of one occlusion event and the start of the next (s): the target is
# seen again in between, so two events never merge into one longer gap.
OCCLUSION_MIN_GAP_S = 1.0


def _sample_rate_schedule(rng: np.random.Generator, rate_hz: Range, change_s: Range,
                          duration_s: float) -> tuple[tuple[float, float], ...]:
    """Piecewise-constant camera rates covering [0, duration_s]. Rates are log-uniform: the band spans
    a factor of ~8, and uniform in Hz would spend most of the time above the 30 Hz control rate."""
    log_low, log_high = math.log(rate_hz.low), math.log(rate_hz.high)
    segments, start = [], 0.0
    while start < duration_s:
        rate = math.exp(log_low if log_low == log_high else rng.uniform(log_low, log_high))
        segments.append((start, rate))
        start += change_s.sample(rng)
    return tuple(segments)


def _sample_occlusions(rng: np.random.Generator, occlusion: dict[str, Any]) -> tuple[OcclusionEvent, ...]:
    """`count` events in start order; a later event is pushed back to start OCCLUSION_MIN_GAP_S after
    the previous one ends (so it may start after start_s.high)."""
    drawn = []
    for _ in range(occlusion["count"].sample(rng)):
        mode = _choose(rng, occlusion["modes"])
        start, duration = occlusion["start_s"].sample(rng), occlusion["duration_s"].sample(rng)
        drawn.append((start, duration, mode, 1.0 if rng.random() < 0.5 else -1.0))
    events: list[OcclusionEvent] = []
    for start, duration, mode, side in sorted(drawn):
        if events:
            start = max(start, events[-1].end_s + OCCLUSION_MIN_GAP_S)
        events.append(OcclusionEvent(mode, start, duration, side))
    return tuple(events)


def sample_episode(scenario: Scenario, seed: int) -> EpisodeSpec:
    """The episode of `scenario` at `seed` (deterministic: same inputs, same episode)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    # Seed from (scenario name, seed) so that two scenarios at one seed differ.
    name_key = [ord(c) for c in scenario.name]
    rng = np.random.default_rng([int(seed), *name_key])
    s = scenario.sections
    start, target, distract = s["start"], s["target"], s["distractors"]

    airframe = _choose(rng, scenario.airframes)
    start_pos = np.array([start["xy_m"].sample(rng), start["xy_m"].sample(rng), start["height_m"].sample(rng)])
    yaw = math.radians(start["yaw_deg"].sample(rng))

    targets: list[np.ndarray] = []
    chase_path = None
    if scenario.task == "chase":
        range0 = s["chase"]["start_range_m"].sample(rng)
        bearing = yaw + math.radians(target["bearing_deg"].sample(rng))
        first = _polar(start_pos, bearing, range0, target["height_m"].sample(rng))
        targets.append(first)
        chase_path = _sample_chase_path(rng, first, yaw, scenario.duration_s, s["chase"]["max_speed_mps"].sample(rng),
                                        s["chase"]["turn_rate_deg_s"].sample(rng), scenario.arena_half_size_m)
    else:
        bearing = yaw + math.radians(target["bearing_deg"].sample(rng))
        targets.append(_polar(start_pos, bearing, target["range_m"].sample(rng), target["height_m"].sample(rng)))
        if scenario.task == "target_loop":
            loop = s["loop"]
            heading = bearing  # direction of arrival at the current target
            for _ in range(loop["targets"].sample(rng) - 1):
                side = 1.0 if rng.random() < 0.5 else -1.0
                heading = heading + side * math.radians(loop["turn_deg"].sample(rng))
                nxt = _polar(targets[-1], heading, loop["leg_m"].sample(rng), target["height_m"].sample(rng))
                # Keep the loop inside 60% of the arena: turn the other way if needed.
                if max(abs(nxt[0]), abs(nxt[1])) > 0.6 * scenario.arena_half_size_m:
                    heading -= 2 * side * math.radians(loop["turn_deg"].low)
                    nxt = _polar(targets[-1], heading, loop["leg_m"].low, nxt[2])
                targets.append(nxt)

    target_shape = _choose(rng, target["shapes"])
    target_colour = _choose(rng, target["colours"])
    target_size = target["size_m"].sample(rng)

    # Distractors: rejection-sample away from the start→targets path (bounded tries keep it deterministic).
    path_points = [start_pos, *targets]
    distractors = []
    for _ in range(distract["count"].sample(rng)):
        for _attempt in range(30):
            heading = yaw + math.radians(distract["bearing_deg"].sample(rng))
            pos = _polar(start_pos, heading, distract["range_m"].sample(rng), distract["height_m"].sample(rng))
            size = distract["size_m"].sample(rng)
            clear = DISTRACTOR_CLEARANCE_M + size / 2
            if chase_path is not None:
                near = min(float(np.linalg.norm(pos[:2] - np.asarray(p)[:2])) for p in chase_path.points[::10])
            else:
                near = min(_segment_distance(pos, a, b) for a, b in zip(path_points[:-1], path_points[1:]))
            if near >= clear:
                distractors.append(PlacedObject(_choose(rng, distract["shapes"]), _choose(rng, distract["colours"]),
                                               size, _tuple3(pos)))
                break

    ground, sky, light = s["ground"], s["sky"], s["lighting"]
    azimuth = math.radians(light["azimuth_deg"].sample(rng))
    elevation = math.radians(light["elevation_deg"].sample(rng))
    light_dir = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    wind = s["wind"]
    wind_speed = wind["speed_mps"].sample(rng)
    wind_dir = math.radians(wind["direction_deg"].sample(rng))
    sensor, timing = s["sensor"], s["timing"]
    spec = EpisodeSpec(
        scenario=scenario.name, task=scenario.task, seed=int(seed), duration_s=scenario.duration_s,
        arena_half_size_m=scenario.arena_half_size_m, arena_max_height_m=scenario.arena_max_height_m,
        airframe=airframe, start_position=_tuple3(start_pos), start_yaw_rad=yaw,
        targets=tuple(_tuple3(t) for t in targets), target_shape=target_shape, target_colour=target_colour,
        target_size_m=target_size, distractors=tuple(distractors),
        ground_colour=_choose(rng, ground["colours"]), ground_second_colour=_choose(rng, ground["second_colours"]),
        ground_texture=_choose(rng, ground["textures"]), ground_texture_scale_m=ground["texture_scale_m"].sample(rng),
        sky_colour=_choose(rng, sky["colours"]), horizon_colour=_choose(rng, sky["horizon_colours"]),
        light_direction=light_dir, light_strength=light["strength"].sample(rng), ambient=light["ambient"].sample(rng),
        wind_velocity_mps=(wind_speed * math.cos(wind_dir), wind_speed * math.sin(wind_dir), 0.0),
        wind_gust_std_mps=wind["gust_std_mps"].sample(rng),
        image_noise_std=sensor["image_noise_std"].sample(rng), blur_px=sensor["blur_px"].sample(rng),
        exposure_gain=sensor["exposure_gain"].sample(rng),
        frame_drop_prob=timing["frame_drop_prob"].sample(rng), latency_mean_s=timing["latency_mean_s"].sample(rng),
        latency_jitter_s=timing["latency_jitter_s"].sample(rng),
        chase_path=chase_path,
    )
    # Drawn after everything else and only when switched on, so other scenarios sample exactly as before.
    extra: dict[str, Any] = {}
    if timing["rate_hz"] is not None:
        extra["camera_rate_schedule"] = _sample_rate_schedule(rng, timing["rate_hz"], timing["rate_change_s"],
                                                              scenario.duration_s)
    occlusions = _sample_occlusions(rng, s["occlusion"])
    if occlusions:
        extra["occlusions"] = occlusions
    if any(event.mode == "occluder" for event in occlusions):
        extra["occluder_size_m"] = s["occlusion"]["occluder_size_m"].sample(rng)
        extra["occluder_colour"] = _choose(rng, s["occlusion"]["occluder_colours"])
    return replace(spec, **extra) if extra else spec
