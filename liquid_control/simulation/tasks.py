"""Tasks: success predicates and metrics for fly-to-target, target loop and chase.

A task follows one episode (an :class:`EpisodeSpec`): it says where the target
is now (it moves in chase, and jumps to the next goal in the loop), updates its
bookkeeping from each new :class:`DroneState`, decides when the episode is over
and whether it succeeded, and reports metrics. It never touches PyBullet: the
episode runner moves the world's target to `target_position()`.

Success predicates (distances are 3-D, drone centre to target centre):
  * fly_to_target: distance in [0.5, 1.5] m, speed <= 0.3 m/s and the target
    centred in the image, all held for 2 s without a break. "Centred": the
    target centre projects within 15% of the image width of the vertical centre
    line (about ±13° at the default 60° vertical / 75° horizontal field of view)
    and inside the image vertically.
  * target_loop: reach each target (distance <= 1.5 m) in order; the next one
    appears when the current one is reached. Success when all are reached.
  * chase: distance in [0.75, 2.25] m with the target in the image for at least
    90% of the control steps of the episode (the episode stops early, failed, as
    soon as more than 10% of its steps are bad).
Any crash (`world.crashed`) or leaving the arena (|x| or |y| beyond the arena
half size, or above its ceiling) ends the episode as a failure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from liquid_control.simulation.camera import NEAR_M, CameraConfig, project
from liquid_control.simulation.sampling import EpisodeSpec


class StateLike(Protocol):
    """The parts of `quadrotor.DroneState` the tasks and the expert read."""

    time_s: float
    position: np.ndarray
    rpy: np.ndarray
    velocity_world: np.ndarray


@dataclass(frozen=True)
class SuccessConfig:
    """Thresholds of the success predicates (see the module docstring)."""

    stop_min_m: float = 0.5
    stop_max_m: float = 1.5
    stop_max_speed_mps: float = 0.3
    hold_s: float = 2.0
    centre_tolerance_frac: float = 0.15  # of image width, horizontal offset of the target centre
    visit_radius_m: float = 1.5
    chase_min_m: float = 0.75
    chase_max_m: float = 2.25
    chase_good_frac: float = 0.90


# ----------------------------------------------------------------------------------------------
# Geometry


def wrap_angle(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """world_from_body rotation, ZYX (yaw, then pitch, then roll), REP-103 angles."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def world_from_body(state: StateLike) -> np.ndarray:
    rotation = getattr(state, "rotation", None)
    if rotation is not None and np.shape(rotation) == (3, 3) and not np.allclose(rotation, np.eye(3)):
        return np.asarray(rotation, dtype=float)
    roll, pitch, yaw = (float(a) for a in state.rpy)
    return rotation_from_rpy(roll, pitch, yaw)


@dataclass(frozen=True)
class Projection:
    """Where a world point lands in the image: pixel (u, v), depth along the optical axis (m)."""

    u: float
    v: float
    depth_m: float
    in_view: bool
    centred: bool


def project_point(state: StateLike, point: np.ndarray, camera: CameraConfig,
                  centre_tolerance_frac: float = SuccessConfig.centre_tolerance_frac) -> Projection:
    """Pinhole projection of `point` (world, m) into the onboard camera of a drone in `state`.

    Uses the renderer's own model (`camera.project`: lens at mount_offset_m, pitch_deg > 0
    tilts down, principal point at ((W-1)/2, (H-1)/2)), so "in view" means "drawn in the image".
    `in_view`: the point's centre falls on the image; `centred`: in view and within
    `centre_tolerance_frac` of the image width of the vertical centre line.
    """
    u, v, depth = project(camera, state.position, world_from_body(state), point)
    width, height = camera.width, camera.height
    if depth <= NEAR_M:
        return Projection(math.nan, math.nan, float(depth), False, False)
    in_view = -0.5 <= u <= width - 0.5 and -0.5 <= v <= height - 0.5
    centred = in_view and abs(u - (width - 1) / 2.0) <= centre_tolerance_frac * width
    return Projection(float(u), float(v), float(depth), bool(in_view), bool(centred))


# ----------------------------------------------------------------------------------------------
# Tasks


@dataclass
class TaskStatus:
    done: bool
    success: bool
    reason: str  # "running", "success", "crash", "left_arena", "timeout", "lost_target"


class Task:
    """Base: arena, crash and timeout bookkeeping and the common metrics."""

    name = "task"

    def __init__(self, spec: EpisodeSpec, camera: CameraConfig, success: SuccessConfig = SuccessConfig()) -> None:
        self.spec = spec
        self.camera = camera
        self.config = success
        self.status = TaskStatus(False, False, "running")
        self.steps = 0
        self.steps_in_view = 0
        self.min_distance_m = math.inf
        self.final_distance_m = math.nan
        self.time_to_goal_s = math.nan
        self.path_length_m = 0.0
        self.crashed = False
        self.left_arena = False
        self.elapsed_s = 0.0
        self._last_position: np.ndarray | None = None
        self._start_time_s: float | None = None

    def begin(self, state: StateLike) -> None:
        """Start the clock at the reset state (the chase path's time 0)."""
        self._start_time_s = float(state.time_s)
        self._last_position = np.asarray(state.position, dtype=float)

    # Target the drone should go to now (world, m) and its velocity (m/s).
    def target_position(self, time_s: float) -> np.ndarray:
        raise NotImplementedError

    def target_velocity(self, time_s: float) -> np.ndarray:
        return np.zeros(3)

    def _check(self, state: StateLike, distance: float, projection: Projection, dt: float) -> None:
        """Task-specific progress; may set self.status."""
        raise NotImplementedError

    def update(self, state: StateLike, crashed: bool, dt: float) -> TaskStatus:
        """Account one control step that ended in `state`; returns the (possibly final) status."""
        if self.status.done:
            return self.status
        if self._start_time_s is None:
            self._start_time_s = float(state.time_s) - dt
        self.elapsed_s = float(state.time_s) - self._start_time_s
        position = np.asarray(state.position, dtype=float)
        if self._last_position is not None:
            self.path_length_m += float(np.linalg.norm(position - self._last_position))
        self._last_position = position
        target = self.target_position(float(state.time_s))
        distance = float(np.linalg.norm(target - position))
        projection = project_point(state, target, self.camera, self.config.centre_tolerance_frac)
        self.steps += 1
        self.steps_in_view += int(projection.in_view)
        self.min_distance_m = min(self.min_distance_m, distance)
        self.final_distance_m = distance
        half, ceiling = self.spec.arena_half_size_m, self.spec.arena_max_height_m
        if crashed:
            self.crashed = True
            self.status = TaskStatus(True, False, "crash")
        elif abs(position[0]) > half or abs(position[1]) > half or position[2] > ceiling:
            self.left_arena = True
            self.status = TaskStatus(True, False, "left_arena")
        else:
            self._check(state, distance, projection, dt)
            if not self.status.done and self.elapsed_s >= self.spec.duration_s - 1e-9:
                self._timeout()
        return self.status

    def _timeout(self) -> None:
        self.status = TaskStatus(True, False, "timeout")

    def metrics(self) -> dict[str, Any]:
        return {
            "scenario": self.spec.scenario, "task": self.spec.task, "seed": self.spec.seed,
            "success": bool(self.status.success), "reason": self.status.reason,
            "crashed": self.crashed, "left_arena": self.left_arena,
            "time_to_goal_s": self.time_to_goal_s, "final_distance_m": self.final_distance_m,
            "min_distance_m": self.min_distance_m, "duration_s": self.elapsed_s,
            "time_in_view_frac": self.steps_in_view / self.steps if self.steps else math.nan,
            "path_length_m": self.path_length_m, "steps": self.steps,
        }


class FlyToTarget(Task):
    """Stop 0.5-1.5 m from a static target with it centred, and hold that for 2 s."""

    name = "fly_to_target"

    def __init__(self, spec: EpisodeSpec, camera: CameraConfig, success: SuccessConfig = SuccessConfig()) -> None:
        super().__init__(spec, camera, success)
        self._target = np.asarray(spec.targets[0], dtype=float)
        self.held_s = 0.0

    def target_position(self, time_s: float) -> np.ndarray:
        return self._target.copy()

    def _check(self, state: StateLike, distance: float, projection: Projection, dt: float) -> None:
        c = self.config
        speed = float(np.linalg.norm(state.velocity_world))
        good = c.stop_min_m <= distance <= c.stop_max_m and speed <= c.stop_max_speed_mps and projection.centred
        self.held_s = self.held_s + dt if good else 0.0
        if self.held_s >= c.hold_s - 1e-9:
            self.time_to_goal_s = self.elapsed_s
            self.status = TaskStatus(True, True, "success")


class TargetLoop(Task):
    """Reach each target in turn (<= 1.5 m); the next appears when the current one is reached."""

    name = "target_loop"

    def __init__(self, spec: EpisodeSpec, camera: CameraConfig, success: SuccessConfig = SuccessConfig()) -> None:
        super().__init__(spec, camera, success)
        self._targets = [np.asarray(t, dtype=float) for t in spec.targets]
        self.visited = 0
        self.visit_times_s: list[float] = []

    def target_position(self, time_s: float) -> np.ndarray:
        return self._targets[min(self.visited, len(self._targets) - 1)].copy()

    def _check(self, state: StateLike, distance: float, projection: Projection, dt: float) -> None:
        if distance <= self.config.visit_radius_m:
            self.visited += 1
            self.visit_times_s.append(self.elapsed_s)
            if self.visited == len(self._targets):
                self.time_to_goal_s = self.elapsed_s
                self.status = TaskStatus(True, True, "success")

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "targets_visited": self.visited, "targets_total": len(self._targets)}


class Chase(Task):
    """Keep 0.75-2.25 m from a moving target with it in view for >= 90% of the steps."""

    name = "chase"

    def __init__(self, spec: EpisodeSpec, camera: CameraConfig, success: SuccessConfig = SuccessConfig()) -> None:
        super().__init__(spec, camera, success)
        if spec.chase_path is None:
            raise ValueError(f"episode {spec.scenario}#{spec.seed} is a chase without a target path")
        self.path = spec.chase_path
        self.good_steps = 0
        self.bad_steps = 0

    def target_position(self, time_s: float) -> np.ndarray:
        return self.path.position(time_s - (self._start_time_s or 0.0))

    def target_velocity(self, time_s: float) -> np.ndarray:
        return self.path.velocity(time_s - (self._start_time_s or 0.0))

    def _episode_steps(self, dt: float) -> int:
        return max(1, int(round(self.spec.duration_s / dt)))

    def _check(self, state: StateLike, distance: float, projection: Projection, dt: float) -> None:
        c = self.config
        if c.chase_min_m <= distance <= c.chase_max_m and projection.in_view:
            self.good_steps += 1
        else:
            self.bad_steps += 1
        if self.bad_steps > (1.0 - c.chase_good_frac) * self._episode_steps(dt):
            self.status = TaskStatus(True, False, "lost_target")

    def _timeout(self) -> None:
        ok = self.good_steps >= self.config.chase_good_frac * self.steps
        self.status = TaskStatus(True, ok, "success" if ok else "timeout")
        if ok:
            self.time_to_goal_s = self.elapsed_s

    def metrics(self) -> dict[str, Any]:
        frac = self.good_steps / self.steps if self.steps else math.nan
        return {**super().metrics(), "time_in_band_frac": frac}


TASK_CLASSES: dict[str, type[Task]] = {"fly_to_target": FlyToTarget, "target_loop": TargetLoop, "chase": Chase}


def make_task(spec: EpisodeSpec, camera: CameraConfig, success: SuccessConfig = SuccessConfig()) -> Task:
    """The task object for an episode, chosen by `spec.task`."""
    try:
        cls = TASK_CLASSES[spec.task]
    except KeyError:
        raise ValueError(f"unknown task {spec.task!r}; known: {sorted(TASK_CLASSES)}") from None
    return cls(spec, camera, success)
