"""The one episode loop: fly one sampled episode with any controller, optionally labelled by another.

Evaluation, data collection (expert, perturbed expert, DAgger) and the gym env's
scene set-up all go through here, so every consumer sees the same world, the same
task bookkeeping and the same timing.

Per control step (at `control_hz`):
  1. the task says where the target is; the world's target is moved there (and an occlusion
     event's occluder is placed across the line of sight to it);
  2. the world delivers the newest camera frame, or None (dropped / in flight);
  3. the *labeller* (if any, normally the expert) computes its command — the label;
  4. the *controller* computes the command that is actually flown;
  5. the command is checked (finite, 4 values: otherwise hover, counted as a fault),
     clipped to the flight controller's limits, and the world steps;
  6. the task updates success / crash / arena / timeout.
DAgger-style collection runs a learned or perturbed controller while the expert
labels every step; plain expert runs leave the label out (it equals the command).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from liquid_control.simulation.camera import CameraConfig, camera_pose, intrinsics
from liquid_control.simulation.controller import ControlLimits
from liquid_control.simulation.drone_world import DroneWorld, Frame
from liquid_control.simulation.expert import Expert, ExpertConfig, Perturbation, PerturbationConfig
from liquid_control.simulation.image_effects import ImageEffects
from liquid_control.simulation.occlusion import blackout_windows, occluder_centre, parked_centre
from liquid_control.simulation.quadrotor import DroneState, WindConfig
from liquid_control.simulation.sampling import EpisodeSpec, sample_episode
from liquid_control.simulation.scenario import Scenario
from liquid_control.simulation.tasks import SuccessConfig, make_task, world_from_body
from liquid_control.simulation.world import GroundConfig, LightConfig, SceneConfig, SceneObject, SkyConfig


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are flown (not what is randomised: that is the scenario's job).

    render: draw camera frames every step (visual controllers and recordings need them; the
    privileged expert does not, and runs ~5x faster without). keep_frames: return the frames.
    duration_s: override the scenario's episode length (tests, quick looks).
    """

    camera: CameraConfig = field(default_factory=CameraConfig)
    control_hz: float = 30.0
    physics_hz: int = 240
    limits: ControlLimits = field(default_factory=ControlLimits)
    success: SuccessConfig = field(default_factory=SuccessConfig)
    render: bool = True
    keep_frames: bool = False
    duration_s: float | None = None


@dataclass
class Observation:
    """What a controller may use at one step. Visual policies must use only `frame`/`last_frame`
    and `time_s`; `state`, `target_position` and `target_velocity` are ground truth for the expert."""

    time_s: float
    frame: Frame | None  # newest frame delivered at this step, None if none arrived
    last_frame: Frame | None  # newest frame delivered so far (may be stale)
    state: DroneState
    target_position: np.ndarray
    target_velocity: np.ndarray
    task: str


class Controller(Protocol):
    def reset(self, spec: EpisodeSpec) -> None: ...

    def act(self, observation: Observation) -> np.ndarray: ...


class ExpertController:
    """The privileged expert behind the Controller interface."""

    def __init__(self, camera: CameraConfig = CameraConfig(), config: ExpertConfig = ExpertConfig(),
                 feedforward: bool = True) -> None:
        """`feedforward` False: without the target's velocity (a diagnostic: the best a follower that cannot
        see the target's motion does; the labels always have it)."""
        self.expert = Expert(camera, config)
        self.feedforward = feedforward

    def reset(self, spec: EpisodeSpec) -> None:
        # Every distractor collides (scene_from_spec; an occluder is not in spec.distractors and does not).
        # 0.75 x size covers a box's half-diagonal (0.71 x its edge).
        self.expert.reset(spec.task, spec.target_size_m, [(d.position, 0.75 * d.size_m) for d in spec.distractors])

    def act(self, observation: Observation) -> np.ndarray:
        velocity = observation.target_velocity if self.feedforward else None
        return self.expert.act(observation.state, observation.target_position, velocity)


class DecoyController:
    """An expert that now and then flies to a distractor as if it were the target: exploration for data
    collection only. Stored labels come from a clean expert, so the data shows what to do when the drone
    is heading for an object that is not the target (brake, and turn to the target or search for it).

    A detour starts with probability 1 / (mean_interval_s x control_hz) per step while none is on, and lasts
    a duration drawn from `detour_s` (s); the draws are seeded from the episode seed."""

    def __init__(self, base: ExpertController, control_hz: float = 30.0, mean_interval_s: float = 6.0,
                 detour_s: tuple[float, float] = (1.5, 4.0)) -> None:
        self.base = base
        self.start_prob = 1.0 / (mean_interval_s * control_hz)
        self.detour_s = detour_s
        self.decoys: list[np.ndarray] = []
        self.rng = np.random.default_rng(0)
        self.decoy: np.ndarray | None = None
        self.until_s = -math.inf

    def reset(self, spec: EpisodeSpec) -> None:
        self.base.reset(spec)
        self.decoys = [np.asarray(d.position, dtype=float) for d in spec.distractors]
        self.rng = np.random.default_rng([spec.seed, 0xDEC0])
        self.decoy, self.until_s = None, -math.inf

    def act(self, observation: Observation) -> np.ndarray:
        if self.decoy is not None and observation.time_s >= self.until_s:
            self.decoy = None
        if self.decoy is None and self.decoys and self.rng.random() < self.start_prob:
            self.decoy = self.decoys[int(self.rng.integers(len(self.decoys)))]
            self.until_s = observation.time_s + float(self.rng.uniform(*self.detour_s))
        if self.decoy is None:
            return self.base.act(observation)
        return self.base.act(replace(observation, target_position=self.decoy, target_velocity=np.zeros(3)))


class PerturbedController:
    """Another controller plus seeded exploration noise (seeded per episode from the episode seed)."""

    def __init__(self, base: Controller, config: PerturbationConfig = PerturbationConfig(),
                 control_hz: float = 30.0, seed_offset: int = 0) -> None:
        self.base = base
        self.config = config
        self.dt = 1.0 / control_hz
        self.seed_offset = seed_offset
        self.perturbation = Perturbation(config, seed_offset)

    def reset(self, spec: EpisodeSpec) -> None:
        self.base.reset(spec)
        self.perturbation = Perturbation(self.config, seed=spec.seed + 7919 * (self.seed_offset + 1))

    def act(self, observation: Observation) -> np.ndarray:
        return self.perturbation.apply(self.base.act(observation), self.dt)


@dataclass
class EpisodeResult:
    """Metrics plus the per-step record (arrays of length `steps`, row k = step k)."""

    spec: EpisodeSpec
    metrics: dict[str, Any]
    times_s: np.ndarray  # (N,) time at which the command was issued
    positions: np.ndarray  # (N, 3) world, before the command
    yaws: np.ndarray  # (N,) rad
    velocities_body: np.ndarray  # (N, 3) m/s FLU
    commands: np.ndarray  # (N, 4) flown (after clipping)
    labels: np.ndarray | None  # (N, 4) labeller's commands, None without a labeller
    targets: np.ndarray  # (N, 3) target position at each step
    frames: list[Frame | None] | None  # (N,) delivered frame per step when keep_frames


def has_occluder(spec: EpisodeSpec) -> bool:
    return any(event.mode == "occluder" for event in spec.occlusions)


def scene_from_spec(spec: EpisodeSpec) -> SceneConfig:
    """The world's SceneConfig for a sampled episode (target never collides; distractors do).

    An episode with occluder events gets the occluder as the last, non-colliding distractor: a
    cylinder standing on the ground, as tall as the arena, parked below the ground until it is needed.
    """
    target = SceneObject(spec.target_shape, spec.target_colour, spec.target_size_m, spec.targets[0], collides=False)
    distractors = [SceneObject(d.shape, d.colour, d.size_m, d.position, collides=True) for d in spec.distractors]
    if has_occluder(spec):
        distractors.append(SceneObject("cylinder", spec.occluder_colour,
                                       (spec.occluder_size_m, spec.occluder_size_m, spec.arena_max_height_m),
                                       tuple(parked_centre(spec.start_position, (1.0, 0.0, 0.0))), collides=False))
    return SceneConfig(
        ground=GroundConfig(colour=spec.ground_colour, texture=spec.ground_texture,
                            texture_scale_m=spec.ground_texture_scale_m, colour2=spec.ground_second_colour),
        sky=SkyConfig(colour=spec.sky_colour, horizon_colour=spec.horizon_colour),
        # The scenario stores where the light comes from; the world wants where it travels.
        light=LightConfig(direction=tuple(-v for v in spec.light_direction), strength=spec.light_strength,
                          ambient=spec.ambient),
        target=target, distractors=distractors)


def effects_from_spec(spec: EpisodeSpec) -> ImageEffects:
    return ImageEffects(noise_std=spec.image_noise_std, blur_px=spec.blur_px, exposure_gain=spec.exposure_gain,
                        frame_drop_prob=spec.frame_drop_prob, latency_s=spec.latency_mean_s,
                        latency_jitter_s=spec.latency_jitter_s, rate_schedule=spec.camera_rate_schedule,
                        blackouts=blackout_windows(spec.occlusions))


def make_world(spec: EpisodeSpec, config: EpisodeConfig = EpisodeConfig()) -> DroneWorld:
    """A DroneWorld with the episode's airframe, wind and camera effects (not yet reset)."""
    return DroneWorld(airframe=spec.airframe, camera=config.camera, control_hz=config.control_hz,
                      physics_hz=config.physics_hz, wind=WindConfig(steady_mps=spec.wind_velocity_mps,
                                                                     gust_std_mps=spec.wind_gust_std_mps),
                      effects=effects_from_spec(spec), seed=spec.seed, limits=config.limits)


def command_limits(limits: ControlLimits) -> np.ndarray:
    """Per-axis bound [vx, vy, vz, yaw_rate] of a command the flight controller accepts."""
    return np.array([limits.max_speed_xy_mps, limits.max_speed_xy_mps, limits.max_speed_z_mps,
                     limits.max_yaw_rate_radps])


def safe_command(command: Any, bound: np.ndarray) -> tuple[np.ndarray, bool]:
    """(clipped command, ok). A command that is not 4 finite numbers becomes hover (zeros): fail safe."""
    try:
        c = np.asarray(command, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return np.zeros(4), False
    if c.shape != (4,) or not np.all(np.isfinite(c)):
        return np.zeros(4), False
    return np.clip(c, -bound, bound), True


class Episode:
    """One episode as a step API (the gym env uses this; `run_episode` loops over it).

    `start()` resets the world and returns the first observation; each `step(command)`
    flies one control period and returns the next observation. The world is closed
    when the episode is done or on `close()`.
    """

    def __init__(self, spec: EpisodeSpec, config: EpisodeConfig = EpisodeConfig()) -> None:
        if config.duration_s is not None:
            spec = replace(spec, duration_s=float(config.duration_s))
        self.spec = spec
        self.config = config
        self.dt = 1.0 / config.control_hz
        self.bound = command_limits(config.limits)
        self.task = make_task(spec, config.camera, config.success)
        self.world: DroneWorld | None = None
        self.last_frame: Frame | None = None
        self.command_faults = 0
        self.last_command = np.zeros(4)  # the command flown by the latest step (after clipping)
        self.metrics: dict[str, Any] = {}
        self._state: DroneState | None = None
        self._occluder_index: int | None = None  # scene primitive index of the occluder, if any
        self._target_radius_m = 0.0
        self._half_hfov_rad = math.atan((config.camera.width / 2.0) / intrinsics(config.camera)[0, 0])

    @property
    def done(self) -> bool:
        return self.task.status.done

    def start(self) -> Observation:
        spec = self.spec
        self.world = make_world(spec, self.config)
        scene = scene_from_spec(spec)
        self._state = self.world.reset(scene, spec.start_position, spec.start_yaw_rad, seed=spec.seed)
        if has_occluder(spec) and self.config.render:
            self._occluder_index = len(scene.primitives()) - 1
            extent_x, extent_y, _ = scene.target.extents
            self._target_radius_m = 0.5 * math.hypot(extent_x, extent_y)
        self.task.begin(self._state)
        return self._observe()

    def _place_occluder(self, time_s: float, target: np.ndarray) -> None:
        """Put the occluder where its event has it now, or park it (episode time = world time: reset is at 0)."""
        spec = self.spec
        lens, world_from_optical = camera_pose(self.config.camera, self._state.position, world_from_body(self._state))
        centre = occluder_centre(spec.occlusions, time_s, lens, target, self._target_radius_m,
                                 spec.occluder_size_m / 2.0, spec.arena_max_height_m, self._half_hfov_rad)
        if centre is None:
            centre = parked_centre(lens, world_from_optical[:, 2])
        self.world.set_object_position(self._occluder_index, centre)

    def _observe(self) -> Observation:
        world, task = self.world, self.task
        now = world.time_s
        target = task.target_position(now)
        if self.spec.task != "fly_to_target":  # the target moves (chase) or jumps to the next goal (loop)
            world.set_target_position(target)
        if self._occluder_index is not None:
            self._place_occluder(now, target)
        frame = world.render() if self.config.render else None
        if frame is not None:
            self.last_frame = frame
        return Observation(now, frame, self.last_frame, self._state, target, task.target_velocity(now), self.spec.task)

    def step(self, command: Any) -> Observation | None:
        """Fly `command` for one control period (non-finite/misshapen -> hover, counted in command_faults).

        Returns the next observation, or None when the episode has ended.
        """
        if self.world is None:
            raise RuntimeError("Episode.start() must be called before step()")
        if self.done:
            raise RuntimeError("the episode is over; start a new one")
        flown, ok = safe_command(command, self.bound)
        self.command_faults += not ok
        self.last_command = flown
        self._state = self.world.step(flown)
        self.task.update(self._state, self.world.crashed, self.dt)
        if self.done:
            self.metrics = {**self.task.metrics(), "crash_reason": self.world.crash_reason,
                            "command_faults": self.command_faults, "airframe": self.spec.airframe}
            self.close()
            return None
        return self._observe()

    def close(self) -> None:
        if self.world is not None:
            self.world.close()
            self.world = None


def run_episode(episode: EpisodeSpec | tuple[Scenario, int], controller: Controller,
                labeller: Controller | None = None, config: EpisodeConfig = EpisodeConfig()) -> EpisodeResult:
    """Fly one episode; `episode` is a sampled spec or (scenario, seed)."""
    spec = sample_episode(*episode) if isinstance(episode, tuple) else episode
    run = Episode(spec, config)
    rows: dict[str, list] = {k: [] for k in ("t", "p", "yaw", "v", "cmd", "label", "target", "frame")}
    try:
        obs = run.start()
        controller.reset(run.spec)
        if labeller is not None:
            labeller.reset(run.spec)
        while obs is not None:
            if labeller is not None:  # the label is computed before the flown command, from the same observation
                rows["label"].append(safe_command(labeller.act(obs), run.bound)[0])
            command = controller.act(obs)
            rows["t"].append(obs.time_s)
            rows["p"].append(np.asarray(obs.state.position, dtype=float))
            rows["yaw"].append(float(obs.state.rpy[2]))
            rows["v"].append(np.asarray(obs.state.velocity_body, dtype=float))
            rows["target"].append(obs.target_position)
            if config.keep_frames:
                rows["frame"].append(obs.frame)
            obs = run.step(command)
            rows["cmd"].append(run.last_command)
    finally:
        run.close()
    return EpisodeResult(
        spec=run.spec, metrics=run.metrics, times_s=np.asarray(rows["t"]),
        positions=np.asarray(rows["p"]).reshape(-1, 3), yaws=np.asarray(rows["yaw"]),
        velocities_body=np.asarray(rows["v"]).reshape(-1, 3), commands=np.asarray(rows["cmd"]).reshape(-1, 4),
        labels=np.asarray(rows["label"]).reshape(-1, 4) if labeller is not None else None,
        targets=np.asarray(rows["target"]).reshape(-1, 3), frames=rows["frame"] if config.keep_frames else None)


def run_expert_episode(scenario: Scenario, seed: int, config: EpisodeConfig = EpisodeConfig(render=False),
                       expert: ExpertConfig = ExpertConfig(), feedforward: bool = True) -> EpisodeResult:
    """Convenience: the privileged expert flying (scenario, seed)."""
    return run_episode((scenario, seed), ExpertController(config.camera, expert, feedforward), config=config)

