"""Gymnasium environments: the tasks with camera images as observations.

Registered ids (registered when this module is imported):
    LiquidControl/FlyToTarget-v0   scenario train_fly_to_target
    LiquidControl/TargetLoop-v0    scenario train_target_loop
    LiquidControl/Chase-v0         scenario train_chase
e.g. ``gymnasium.make("liquid_control.simulation.env:LiquidControl/Chase-v0")`` (the module prefix
imports and registers), or pass ``scenario=`` any scenario name/path.

Observation (Dict):
  image           uint8 (H, W, 3) RGB: the newest delivered camera frame (stale when frames are
                  dropped or late; black before the first one arrives);
  capture_time_s  float32 (1,): sim time that image was captured (-1 before the first frame);
  time_s          float32 (1,): sim time now. The policy's CfC timespan is the difference of
                  consecutive capture times, so drops and latency change the timespan, not the step.
Action: float32 [vx, vy, vz, yaw_rate] heading frame FLU (m/s, rad/s), bounded by the flight controller's
limits. Non-finite actions are flown as hover (fail safe) and counted in info["command_faults"].
Reward: progress towards the task's stand-off distance (m gained per step), +1 per loop target
reached, +10 on success, -10 on a crash or leaving the arena.
terminated: success, crash, arena exit or (chase) too much time out of band; truncated: time up.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from liquid_control.simulation.episode import Episode, EpisodeConfig, ExpertController, Observation, command_limits
from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import Scenario, load_scenario

ENV_SCENARIOS = {
    "LiquidControl/FlyToTarget-v0": "train_fly_to_target",
    "LiquidControl/TargetLoop-v0": "train_target_loop",
    "LiquidControl/Chase-v0": "train_chase",
}

SUCCESS_BONUS = 10.0
FAILURE_PENALTY = 10.0
VISIT_BONUS = 1.0


class LiquidControlEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, scenario: str | Scenario = "train_fly_to_target", config: EpisodeConfig | None = None,
                 render_mode: str | None = None, duration_s: float | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        config = config or EpisodeConfig()
        if not config.render:
            raise ValueError("the env observes camera images: EpisodeConfig.render must be True")
        if duration_s is not None:
            from dataclasses import replace
            config = replace(config, duration_s=float(duration_s))
        self.config = config
        self.render_mode = render_mode
        cam = config.camera
        # Times never exceed the episode length (+ one step of slack for the final observation).
        horizon_s = float(config.duration_s or self.scenario.duration_s) + 1.0
        self.metadata = {**self.metadata, "render_fps": int(round(config.control_hz))}
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8),
            "capture_time_s": spaces.Box(-1.0, horizon_s, (1,), np.float32),
            "time_s": spaces.Box(0.0, horizon_s, (1,), np.float32),
        })
        bound = command_limits(config.limits).astype(np.float32)
        self.action_space = spaces.Box(-bound, bound, dtype=np.float32)
        self._episode: Episode | None = None
        self._expert = ExpertController(cam)
        self._image = np.zeros((cam.height, cam.width, 3), np.uint8)
        self._standoff = 1.0
        self._last_error = 0.0
        self._last_visited = 0

    # ------------------------------------------------------------------ helpers
    def _convert(self, obs: Observation) -> dict[str, np.ndarray]:
        frame = obs.last_frame
        if frame is not None:
            self._image = frame.image
        return {"image": self._image.copy(),
                "capture_time_s": np.array([frame.capture_time_s if frame is not None else -1.0], np.float32),
                "time_s": np.array([obs.time_s], np.float32)}

    def _error(self, obs: Observation) -> float:
        distance = float(np.linalg.norm(obs.target_position - np.asarray(obs.state.position)))
        return abs(distance - self._standoff)

    def _info(self) -> dict[str, Any]:
        task = self._episode.task
        return {"scenario": self.scenario.name, "seed": self._episode.spec.seed, "reason": task.status.reason,
                "success": task.status.success, "command_faults": self._episode.command_faults}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._episode is not None:
            self._episode.close()
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        if options and "episode_seed" in options:  # fly a chosen episode of the scenario
            episode_seed = int(options["episode_seed"])
        self._episode = Episode(sample_episode(self.scenario, episode_seed), self.config)
        s = self.config.success
        self._standoff = (0.5 * (s.chase_min_m + s.chase_max_m) if self.scenario.task == "chase"
                          else 0.5 * (s.stop_min_m + s.stop_max_m))
        self._image = np.zeros_like(self._image)  # nothing seen yet in this episode
        obs = self._episode.start()
        self._expert.reset(self._episode.spec)
        self._last_obs = obs
        self._last_error = self._error(obs)
        self._last_visited = 0
        return self._convert(obs), self._info()

    def step(self, action):
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        obs = self._episode.step(np.asarray(action, dtype=float))
        task = self._episode.task
        if obs is not None:
            self._last_obs = obs
        error = self._error(self._last_obs) if obs is not None else abs(task.final_distance_m - self._standoff)
        visited = getattr(task, "visited", 0)
        if visited != self._last_visited:  # the goal moved on: progress restarts from the new target
            reward = VISIT_BONUS
            self._last_visited = visited
        else:
            reward = self._last_error - error
        self._last_error = error
        status = task.status
        terminated = truncated = False
        if status.done:
            if status.success:
                reward += SUCCESS_BONUS
                terminated = True
            elif status.reason == "timeout":
                truncated = True
            else:
                reward -= FAILURE_PENALTY
                terminated = True
        info = self._info()
        if status.done:
            info["metrics"] = self._episode.metrics
        return self._convert(self._last_obs), float(reward), terminated, truncated, info

    def expert_action(self) -> np.ndarray:
        """The privileged expert's command for the current step (float32, within the action space):
        a label for imitation / DAgger while any other policy flies the env. Call at most once per step
        (the expert remembers where it last saw the target)."""
        if self._episode is None:
            raise RuntimeError("call reset() before expert_action()")
        return np.clip(self._expert.act(self._last_obs), self.action_space.low,
                       self.action_space.high).astype(np.float32)

    def render(self):
        if self.render_mode == "rgb_array":
            return self._image.copy()
        return None

    def close(self) -> None:
        if self._episode is not None:
            self._episode.close()
            self._episode = None


def register_envs() -> None:
    """Register the LiquidControl/* ids with gymnasium (idempotent)."""
    for env_id, scenario in ENV_SCENARIOS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="liquid_control.simulation.env:LiquidControlEnv",
                         kwargs={"scenario": scenario})


register_envs()
