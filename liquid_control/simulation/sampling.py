"""Seeded sampling: a scenario and a seed -> one concrete episode (`EpisodeSpec`).

``sample_episode(scenario, seed)`` draws everything the scenario leaves open (start pose, target
and distractor placement and look, scene, lighting, wind, sensor and timing effects, chase path,
frame-rate schedule, occlusion events) from one generator seeded by `seed`: the same (scenario,
seed) always gives the same episode. No ROS here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from liquid_control.simulation.scenario import Colour, Range, Scenario, choose

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
        mode = choose(rng, occlusion["modes"])
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

    airframe = choose(rng, scenario.airframes)
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

    target_shape = choose(rng, target["shapes"])
    target_colour = choose(rng, target["colours"])
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
                distractors.append(PlacedObject(choose(rng, distract["shapes"]), choose(rng, distract["colours"]),
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
        ground_colour=choose(rng, ground["colours"]), ground_second_colour=choose(rng, ground["second_colours"]),
        ground_texture=choose(rng, ground["textures"]), ground_texture_scale_m=ground["texture_scale_m"].sample(rng),
        sky_colour=choose(rng, sky["colours"]), horizon_colour=choose(rng, sky["horizon_colours"]),
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
        extra["occluder_colour"] = choose(rng, s["occlusion"]["occluder_colours"])
    return replace(spec, **extra) if extra else spec
