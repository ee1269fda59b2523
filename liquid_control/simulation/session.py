"""A run of simulated episodes on one continuous clock, driven by external commands (no ROS).

The ROS sim node (nodes/sim_node.py) is a thin adapter around `SimSession`: it feeds
in every `cmd_vel` (`set_command`) and calls `step()` from its timer; each step
returns what to publish (clock, camera frame, odometry, episode events).

Clock: the session time starts at 0 and only grows. Each episode's world starts at
its own time 0, so the session keeps an offset; every stamp it hands out (clock,
frame capture time, odometry) is session time. Between episodes the clock runs on
for `pause_between_s` with no camera frames and the drone absent: downstream
watchdogs trip and the policy starts the next episode with a fresh hidden state.

Safety semantics: a command older than `command_timeout_s` (session time) or none
at all -> hover (zero velocity). Non-finite commands are rejected by `set_command`
(ValueError) and the previous command stays in force until it goes stale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from liquid_control.simulation.camera import CameraConfig
from liquid_control.simulation.drone_world import Frame
from liquid_control.simulation.episode import Episode, EpisodeConfig
from liquid_control.simulation.quadrotor import DroneState
from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import Scenario, load_scenario

PHYSICS_HZ = 240


@dataclass(frozen=True)
class SimSessionConfig:
    """scenario: scenario name or YAML path; seed: seed of the first episode (episode k uses seed + k);
    episodes: how many to fly (0 = until stopped); duration_s: episode length override (0 = the
    scenario's); control_hz: command/clock/odometry rate (must divide 240 Hz physics);
    command_timeout_s: older commands -> hover (s); pause_between_s: clock-only gap between episodes (s);
    autostart: start the first episode at the first step (False: only the clock runs until `reset`)."""

    scenario: str = "train_fly_to_target"
    seed: int = 0
    episodes: int = 0
    duration_s: float = 0.0
    control_hz: float = 120.0
    command_timeout_s: float = 0.25
    pause_between_s: float = 1.0
    camera: CameraConfig = field(default_factory=CameraConfig)
    autostart: bool = True

    def __post_init__(self) -> None:
        ratio = PHYSICS_HZ / self.control_hz if self.control_hz > 0 else 0.0
        if self.control_hz <= 0 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"control_hz must divide the {PHYSICS_HZ} Hz physics rate (e.g. 30, 60, 120, 240), "
                             f"got {self.control_hz}")
        if self.episodes < 0 or self.duration_s < 0 or self.command_timeout_s <= 0 or self.pause_between_s < 0:
            raise ValueError("episodes, duration_s and pause_between_s must be >= 0 and command_timeout_s > 0")


@dataclass
class StepOutput:
    """What one session step produced. `frame.capture_time_s` is already session time."""

    time_s: float
    state: Optional[DroneState] = None  # None while no episode runs
    frame: Optional[Frame] = None
    events: list[dict[str, Any]] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy -> lists/floats, NaN/inf -> None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class SimSession:
    def __init__(self, config: SimSessionConfig) -> None:
        self.config = config
        self.dt = 1.0 / config.control_hz
        self.time_s = 0.0
        self.phase = "idle"  # idle -> running <-> pause -> finished
        self.episode_index = -1
        self.results: list[dict[str, Any]] = []
        self.stale_steps = 0
        self._scenario: Optional[Scenario] = None
        self._episode: Optional[Episode] = None
        self._offset = 0.0
        self._pause_until = 0.0
        self._command = np.zeros(4)
        self._command_time: Optional[float] = None
        self._next_seed = config.seed
        self._emit_start = False

    # ---------------------------------------------------------------- control
    def set_command(self, command: Any) -> None:
        """New [vx, vy, vz, yaw_rate] (heading frame FLU, m/s, rad/s), valid from now for command_timeout_s."""
        c = np.asarray(command, dtype=float).reshape(-1)
        if c.shape != (4,) or not np.isfinite(c).all():
            raise ValueError(f"command must be 4 finite numbers [vx, vy, vz, yaw_rate], got {command!r}")
        self._command, self._command_time = c, self.time_s

    def command_in_force(self) -> tuple[np.ndarray, bool]:
        """(command flown now, fresh?) — hover when there is none or it is stale."""
        fresh = self._command_time is not None and self.time_s - self._command_time <= self.config.command_timeout_s
        return (self._command if fresh else np.zeros(4)), fresh

    def reset(self, scenario: Optional[str] = None, seed: Optional[int] = None) -> list[dict[str, Any]]:
        """End any running episode (reason 'reset') and start a new run at `seed` (episode 0).

        Returns the events to publish ('end' of an aborted episode, then 'start')."""
        scenario_obj = load_scenario(scenario or self.config.scenario)  # raises ScenarioError (ValueError)
        events = self._abort("reset")
        self.time_s = max(self.time_s, self._offset)
        self._scenario = scenario_obj
        if scenario is not None:
            self.config = replace(self.config, scenario=scenario)
        self._next_seed = self.config.seed if seed is None else int(seed)
        self.episode_index = -1
        self.results = []
        events.append(self._start_episode())
        self._emit_start = True  # the next step() hands out the episode's first frame and state
        return events

    def _abort(self, reason: str) -> list[dict[str, Any]]:
        if self._episode is None:
            return []
        episode, self._episode = self._episode, None
        metrics = {**episode.task.metrics(), "reason": reason, "success": False,
                   "stale_command_steps": self.stale_steps}
        episode.close()
        self._offset = self.time_s
        return [self._event("end", **metrics)]

    def _event(self, kind: str, **values: Any) -> dict[str, Any]:
        return _jsonable({"event": kind, "episode": self.episode_index, "time_s": self.time_s, **values})

    def _start_episode(self) -> dict[str, Any]:
        cfg = self.config
        spec = sample_episode(self._scenario, self._next_seed)
        self._next_seed += 1
        episode_config = EpisodeConfig(camera=cfg.camera, control_hz=cfg.control_hz, physics_hz=PHYSICS_HZ,
                                       duration_s=cfg.duration_s or None)
        self._episode = Episode(spec, episode_config)
        self._first_observation = self._episode.start()
        self.stale_steps = 0
        self._offset = self.time_s
        self.episode_index += 1
        self.phase = "running"
        self._command_time = None  # commands from before the episode never carry over
        return self._event("start", scenario=spec.scenario, task=spec.task, seed=spec.seed,
                           duration_s=self._episode.spec.duration_s, start_position=spec.start_position,
                           start_yaw_rad=spec.start_yaw_rad, targets=spec.targets)

    # ---------------------------------------------------------------- stepping
    def step(self) -> StepOutput:
        """Advance one control period; the first call starts the first episode (autostart)."""
        if self._emit_start:
            self._emit_start = False
            return self._observe_start()
        if self.phase == "idle" and self.config.autostart:
            self._scenario = load_scenario(self.config.scenario)
            start = self._start_episode()
            out = self._observe_start()
            out.events.insert(0, start)
            return out
        if self.phase != "running":  # idle (waiting for reset), pause or finished: the clock runs on
            self.time_s += self.dt
            out = StepOutput(self.time_s)
            if self.phase == "pause" and self.time_s >= self._pause_until - 1e-9:
                more = self.config.episodes == 0 or self.episode_index + 1 < self.config.episodes
                if more:
                    out.events.append(self._start_episode())
                    started = self._observe_start()
                    started.events[:0] = out.events
                    return started
                self.phase = "finished"
                out.events.append(self._event("finished", episodes=len(self.results),
                                              successes=sum(bool(r.get("success")) for r in self.results)))
            return out
        episode = self._episode
        command, fresh = self.command_in_force()
        self.stale_steps += not fresh
        observation = episode.step(command)
        self.time_s = self._offset + (episode.world.time_s if episode.world is not None else
                                      episode.task.elapsed_s)
        if observation is None:  # the task ended this episode
            metrics = {**episode.metrics, "stale_command_steps": self.stale_steps}
            self.results.append(metrics)
            self._episode = None
            self.phase = "pause"
            self._pause_until = self.time_s + self.config.pause_between_s
            return StepOutput(self.time_s, events=[self._event("end", **metrics)])
        return StepOutput(self.time_s, observation.state, self._session_frame(observation.frame))

    def _observe_start(self) -> StepOutput:
        """Outputs for the reset state: odometry and the frame captured at time 0 of the episode."""
        observation = self._first_observation
        return StepOutput(self.time_s, observation.state, self._session_frame(observation.frame))

    def _session_frame(self, frame: Optional[Frame]) -> Optional[Frame]:
        if frame is None:
            return None
        return replace(frame, capture_time_s=self._offset + frame.capture_time_s)

    @property
    def running_episode(self) -> Optional[Episode]:
        return self._episode

    def progress(self) -> dict[str, Any]:
        """A status event for the running episode (distance to target, elapsed time)."""
        if self._episode is None:
            return self._event(self.phase)
        task = self._episode.task
        return self._event("running", elapsed_s=task.elapsed_s, distance_m=task.final_distance_m,
                           min_distance_m=task.min_distance_m, stale_command_steps=self.stale_steps)

    def close(self) -> None:
        if self._episode is not None:
            self._episode.close()
            self._episode = None
