"""`DroneWorld`: the simulated drone, its flight controller, camera and scene behind one facade.

Used by tasks, the expert, the gymnasium env, the ROS sim node and data collection.

    world = DroneWorld(airframe="cf2x", camera=CameraConfig(), control_hz=30.0)
    state = world.reset(SceneConfig(), start_position=(0, 0, 1), start_yaw=0.0, seed=0)
    state = world.step([vx, vy, vz, yaw_rate])   # heading frame FLU, m/s and rad/s
    frame = world.render()                        # Frame or None (dropped / not yet arrived)

Each `step` runs physics_hz / control_hz physics steps, the flight controller
running at physics rate on (optionally noisy) state estimates. Same seed ->
bit-identical trajectory and images.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liquid_control.simulation.airframe import Airframe, load_airframe
from liquid_control.simulation.camera import SEGMENT_NONE, CameraConfig, RayCastRenderer, intrinsics
from liquid_control.simulation.controller import ControlLimits, VelocityController
from liquid_control.simulation.image_effects import ImageEffects, apply_pixel_effects, blacked_out, sample_latency
from liquid_control.simulation.quadrotor import DroneState, NoiseConfig, PhysicsOptions, QuadrotorSim, WindConfig
from liquid_control.simulation.world import SceneConfig, build_collision_bodies

# Crash rules (why: a Crazyflie survives a gentle touchdown, not a fall or a flip).
CRASH_GROUND_SPEED_MPS = 1.0  # touching the ground faster than this is a crash
CRASH_TILT_COS = math.cos(math.radians(60.0))  # touching the ground tilted more than 60 deg is a crash


@dataclass
class Frame:
    """A camera image: uint8 HxWx3 RGB, the sim time it was captured at (s), a per-episode capture
    number (dropped captures use up numbers too, so gaps reveal drops), and the float32 optical
    z-depth (m, inf for sky) when the camera has depth enabled, and the per-pixel class image
    (camera.SEGMENT_CLASSES) when it has segmentation enabled."""

    image: np.ndarray
    capture_time_s: float
    seq: int
    depth: np.ndarray | None = None
    segmentation: np.ndarray | None = None


@dataclass
class _PendingFrame:
    frame: Frame
    delivery_time_s: float


class DroneWorld:
    """One simulated drone in one scene. Not thread-safe; one PyBullet client per instance."""

    def __init__(self, airframe: str | Path | Airframe = "cf2x", camera: CameraConfig = CameraConfig(),
                 control_hz: float = 30.0, physics_hz: int = 240, wind: WindConfig = WindConfig(),
                 noise: NoiseConfig = NoiseConfig(), effects: ImageEffects = ImageEffects(), seed: int = 0,
                 physics: PhysicsOptions = PhysicsOptions(), limits: ControlLimits = ControlLimits()) -> None:
        self.airframe = airframe if isinstance(airframe, Airframe) else load_airframe(airframe)
        ratio = physics_hz / control_hz if control_hz > 0 else 0.0
        if control_hz <= 0 or abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(f"physics_hz ({physics_hz}) must be a positive integer multiple of control_hz ({control_hz})")
        self.control_hz = float(control_hz)
        self.substeps = int(round(ratio))
        self.camera = camera
        self.noise = noise
        self.effects = effects
        self.seed = int(seed)
        self._sim = QuadrotorSim(self.airframe, physics_hz, physics, wind)
        self._controller = VelocityController(self.airframe, limits)
        self._renderer: RayCastRenderer | None = None
        self.scene: SceneConfig | None = None
        self._body_items: dict = {}
        self._state: DroneState | None = None
        self.crashed = False
        self.crash_reason = ""
        self._resets = 0

    # ------------------------------------------------------------------ episode
    def reset(self, scene: SceneConfig | None = None, start_position=(0.0, 0.0, 1.0), start_yaw: float = 0.0,
              seed: int | None = None) -> DroneState:
        """Start an episode: build the scene, put the drone hovering at start_position with heading start_yaw.

        seed None: the constructor seed for the first episode, then seed + episode index.
        """
        if self._sim.client < 0:
            raise RuntimeError("this DroneWorld is closed; make a new one")
        if scene is not None and not isinstance(scene, SceneConfig):
            raise TypeError(f"scene must be a SceneConfig, got {type(scene).__name__}")
        self.scene = scene or SceneConfig()
        seed = self.seed + self._resets if seed is None else int(seed)
        self._resets += 1
        wind_seed, noise_seed, effects_seed, texture_seed = np.random.SeedSequence(seed).generate_state(4)
        start = np.asarray(start_position, dtype=float).reshape(-1)
        if start.shape != (3,) or not np.isfinite(start).all():
            raise ValueError(f"start_position must be 3 finite numbers, got {start_position!r}")
        airborne = start[2] > self.airframe.collision_radius_m
        self._sim.reset(start, float(start_yaw), seed=int(wind_seed), rpm=None if airborne else 0.0)
        self._body_items = build_collision_bodies(self._sim.client, self.scene)
        self._controller.reset(float(start_yaw))
        self._noise_rng = np.random.default_rng(noise_seed)
        self._effects_rng = np.random.default_rng(effects_seed)
        self._renderer = RayCastRenderer(self.camera, self.scene, texture_seed=int(texture_seed))
        self._pending: deque[_PendingFrame] = deque()
        self._next_capture_s = 0.0
        self._seq = 0
        self.crashed = False
        self.crash_reason = ""
        self._state = self._sim.state()
        return self._state

    def _require_reset(self) -> None:
        if self._sim.client < 0:
            raise RuntimeError("this DroneWorld is closed; make a new one")
        if self._renderer is None:
            raise RuntimeError("DroneWorld.reset() must be called before step()/render()")

    # ------------------------------------------------------------------ stepping
    def step(self, command_flu) -> DroneState:
        """Fly one control period with command [vx, vy, vz, yaw_rate] (heading frame FLU, m/s, rad/s).

        Non-finite or wrongly shaped commands raise ValueError; after a crash the motors stay off.
        """
        self._require_reset()
        command = np.asarray(command_flu, dtype=float).reshape(-1)
        if command.shape != (4,):
            raise ValueError(f"command must be [vx, vy, vz, yaw_rate], got shape {command.shape}")
        if not np.isfinite(command).all():
            raise ValueError(f"command must be finite, got {command.tolist()}")
        cmd = tuple(float(c) for c in command)
        sim, controller = self._sim, self._controller
        dt = sim.dt
        noisy = self.noise.enabled
        off = [0.0, 0.0, 0.0, 0.0]
        for _ in range(self.substeps):
            if self.crashed:
                sim.step(off)
                continue
            if noisy:
                velocity, rotation, rates = self._noisy_estimate()
            else:
                velocity, rotation, rates = sim.velocity_world, sim.rotation, sim.angular_velocity_body
            speed_before = sim.velocity_world
            sim.step(controller.compute_rpm(velocity, rotation, rates, cmd, dt))
            self._check_crash(speed_before)
        self._state = sim.state()
        return self._state

    def _noisy_estimate(self):
        """Velocity, attitude and gyro as a flight controller's estimator would report them (seeded noise)."""
        sim, n = self._sim, self.noise
        draw = self._noise_rng.standard_normal(9)
        v = sim.velocity_world
        velocity = (v[0] + n.velocity_std_mps * draw[0], v[1] + n.velocity_std_mps * draw[1],
                    v[2] + n.velocity_std_mps * draw[2])
        w = sim.angular_velocity_body
        rates = (w[0] + n.gyro_std_radps * draw[3], w[1] + n.gyro_std_radps * draw[4],
                 w[2] + n.gyro_std_radps * draw[5])
        rotation = sim.rotation
        if n.attitude_std_rad > 0:  # R (I + [d]x): small attitude error about body axes
            dx, dy, dz = (n.attitude_std_rad * draw[6], n.attitude_std_rad * draw[7], n.attitude_std_rad * draw[8])
            r = rotation
            rotation = tuple(r[3 * i] + r[3 * i + 1] * dz - r[3 * i + 2] * dy if j == 0 else
                             (r[3 * i + 1] - r[3 * i] * dz + r[3 * i + 2] * dx if j == 1 else
                              r[3 * i + 2] + r[3 * i] * dy - r[3 * i + 1] * dx)
                             for i in range(3) for j in range(3))
        return velocity, rotation, rates

    def _check_crash(self, velocity_before) -> None:
        sim = self._sim
        if sim.rotation[8] < 0.0:
            self.crashed, self.crash_reason = True, "flipped"
            return
        contacts = sim.contacts()
        for body, _force in contacts:
            if body in self._body_items:
                self.crashed, self.crash_reason = True, f"hit {self._body_items[body].shape}"
                return
        if contacts:
            speed = math.sqrt(sum(v * v for v in velocity_before))
            if speed > CRASH_GROUND_SPEED_MPS:
                self.crashed, self.crash_reason = True, f"hit the ground at {speed:.2f} m/s"
            elif sim.rotation[8] < CRASH_TILT_COS:
                self.crashed, self.crash_reason = True, "touched the ground tilted"

    # ------------------------------------------------------------------ camera
    def render(self) -> Frame | None:
        """The newest camera frame that has arrived by now, or None.

        A frame is captured when a camera period (1/rate_hz, or the effects' rate_schedule) has
        elapsed; it is lost with probability frame_drop_prob and arrives latency later. None
        means no new frame arrived at this call (dropped, still in flight, or between camera
        periods). Captures happen at render calls, so at most one per control step: a camera
        faster than the control rate delivers a frame every step. Frames captured in a
        blackout window arrive black (and with an all-inf depth).
        """
        self._require_reset()
        now = self._sim.time_s
        eps = 1e-9
        if now + eps >= self._next_capture_s:
            while self._next_capture_s <= now + eps:
                self._next_capture_s += self._camera_period_s(self._next_capture_s)
            self._seq += 1
            fx = self.effects
            dropped = fx.frame_drop_prob > 0 and self._effects_rng.random() < fx.frame_drop_prob
            if not dropped:  # dropped frames are never rendered (saves time, same random stream)
                image, depth = self._renderer.render(self._sim.position, np.asarray(self._sim.rotation).reshape(3, 3))
                image = apply_pixel_effects(image, fx, self._effects_rng)
                segmentation = self._renderer.last_segmentation
                if fx.blackouts and blacked_out(fx, now):  # rendered anyway: the random stream stays the same
                    image = np.zeros_like(image)
                    depth = None if depth is None else np.full_like(depth, np.inf)
                    segmentation = None if segmentation is None else np.full_like(segmentation, SEGMENT_NONE)
                frame = Frame(image=image, capture_time_s=now, seq=self._seq, depth=depth, segmentation=segmentation)
                self._pending.append(_PendingFrame(frame, now + sample_latency(fx, self._effects_rng)))
        newest = None
        while self._pending and self._pending[0].delivery_time_s <= now + eps:
            candidate = self._pending.popleft().frame
            if newest is None or candidate.capture_time_s >= newest.capture_time_s:
                newest = candidate
        # Frames overtaken by a newer delivered one (latency jitter) are stale: discard them.
        if newest is not None:
            self._pending = deque(p for p in self._pending if p.frame.capture_time_s > newest.capture_time_s)
        return newest

    def _camera_period_s(self, time_s: float) -> float:
        """Time from a capture slot at `time_s` to the next one."""
        schedule = self.effects.rate_schedule
        if not schedule:
            return 1.0 / self.camera.rate_hz
        segment = bisect.bisect_right(schedule, (time_s, math.inf)) - 1
        return 1.0 / schedule[max(segment, 0)][1]

    # ------------------------------------------------------------------ queries
    @property
    def state(self) -> DroneState:
        """True state (ground truth) after the last reset/step."""
        self._require_reset()
        return self._state  # type: ignore[return-value]

    @property
    def time_s(self) -> float:
        return self._sim.time_s

    @property
    def camera_matrix(self) -> np.ndarray:
        """Intrinsics K (3x3) of the images render() returns."""
        return intrinsics(self.camera)

    @property
    def wind_velocity(self) -> np.ndarray:
        """Current wind (m/s, world)."""
        return np.array(self._sim.wind_velocity())

    def set_target_position(self, position) -> None:
        """Move the target (visual only; it never collides), e.g. for chase tasks."""
        self._require_reset()
        p = np.asarray(position, dtype=float).reshape(-1)
        if p.shape != (3,) or not np.isfinite(p).all():
            raise ValueError(f"target position must be 3 finite numbers, got {position!r}")
        if self.scene is None or self.scene.target is None:
            raise ValueError("the scene has no target to move")
        self._renderer.set_object_position(0, p)

    def set_object_position(self, index: int, position) -> None:
        """Move primitive `index` of the scene (target first, then distractors and obstacle parts) for
        the camera only: collision bodies stay where the scene put them (moving objects must not collide)."""
        self._require_reset()
        p = np.asarray(position, dtype=float).reshape(-1)
        if p.shape != (3,) or not np.isfinite(p).all():
            raise ValueError(f"object position must be 3 finite numbers, got {position!r}")
        if not 0 <= index < len(self._renderer.objects):
            raise ValueError(f"object index {index} out of range: the scene has {len(self._renderer.objects)}")
        if self._renderer.objects[index].collides:
            raise ValueError(f"object {index} collides; only non-colliding objects can be moved")
        self._renderer.set_object_position(index, p)

    @property
    def target_position(self) -> np.ndarray | None:
        if self._renderer is None or self.scene is None or self.scene.target is None:
            return None
        return np.array(self._renderer.objects[0].position)

    def close(self) -> None:
        self._sim.close()

    def __enter__(self) -> "DroneWorld":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
