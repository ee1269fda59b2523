"""Rigid-body quadrotor in PyBullet (DIRECT mode): rotors, motor lag, drag, ground effect, wind, noise.

Frames: world x forward (at yaw 0), y left, z up (metres); body FLU (REP-103).
PyBullet integrates the rigid body and resolves contacts; this module computes the
rotor forces and torques each physics step and applies their resultant at the
centre of mass (equivalent to applying each rotor force at its rotor position).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pybullet as pb

from liquid_control.simulation.airframe import YAW_TORQUE_SIGN, Airframe

RPM_TO_RADPS = 2.0 * math.pi / 60.0


@dataclass(frozen=True)
class PhysicsOptions:
    """Optional aerodynamic effects (coefficients come from the airframe file)."""

    drag: bool = True  # rotor drag against the air-relative velocity (also what makes wind push)
    ground_effect: bool = True  # Cheeseman-Bennett thrust gain near the ground


@dataclass(frozen=True)
class WindConfig:
    """Wind in the world frame: steady part plus gusts (Ornstein-Uhlenbeck per axis, seeded).

    steady_mps: (3,) m/s the air moves with (e.g. (1, 0, 0) blows towards +x).
    gust_std_mps: stationary standard deviation of the gust per axis; gust_tau_s: correlation time.
    Wind acts through the drag model, so it has no effect with drag disabled.
    """

    steady_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gust_std_mps: float = 0.0
    gust_tau_s: float = 2.0

    def __post_init__(self) -> None:
        if len(self.steady_mps) != 3 or not all(math.isfinite(float(v)) for v in self.steady_mps):
            raise ValueError(f"WindConfig.steady_mps must be 3 finite numbers, got {self.steady_mps!r}")
        if self.gust_std_mps < 0.0 or self.gust_tau_s <= 0.0:
            raise ValueError("WindConfig: gust_std_mps must be >= 0 and gust_tau_s > 0")


@dataclass(frozen=True)
class NoiseConfig:
    """Standard deviations of the odometry/IMU errors the flight controller sees (seeded, Gaussian).

    The true state stays available (world.state) for metrics and the expert.
    """

    position_std_m: float = 0.0
    velocity_std_mps: float = 0.0
    attitude_std_rad: float = 0.0
    gyro_std_radps: float = 0.0

    def __post_init__(self) -> None:
        if min(self.position_std_m, self.velocity_std_mps, self.attitude_std_rad, self.gyro_std_radps) < 0.0:
            raise ValueError("NoiseConfig: standard deviations must be >= 0")

    @property
    def enabled(self) -> bool:
        return max(self.position_std_m, self.velocity_std_mps, self.attitude_std_rad, self.gyro_std_radps) > 0.0


@dataclass
class DroneState:
    """Snapshot of the vehicle. Quaternion is xyzw (world_from_body); rpy in rad (ZYX, REP-103)."""

    time_s: float
    position: np.ndarray  # (3,) m, world
    quaternion: np.ndarray  # (4,) xyzw
    rpy: np.ndarray  # (3,) rad: roll, pitch (positive = nose down), yaw (CCW from +x)
    velocity_world: np.ndarray  # (3,) m/s
    velocity_body: np.ndarray  # (3,) m/s, FLU
    angular_velocity_body: np.ndarray  # (3,) rad/s, FLU
    rpm: np.ndarray  # (4,) current rotor speeds
    rotation: np.ndarray = field(repr=False, default_factory=lambda: np.eye(3))  # (3,3) world_from_body


def rotation_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> tuple[float, ...]:
    """Row-major 3x3 world_from_body matrix of a unit quaternion, as 9 floats."""
    xx, yy, zz = qx * qx, qy * qy, qz * qz
    xy, xz, yz = qx * qy, qx * qz, qy * qz
    wx, wy, wz = qw * qx, qw * qy, qw * qz
    return (1.0 - 2.0 * (yy + zz), 2.0 * (xy - wz), 2.0 * (xz + wy),
            2.0 * (xy + wz), 1.0 - 2.0 * (xx + zz), 2.0 * (yz - wx),
            2.0 * (xz - wy), 2.0 * (yz + wx), 1.0 - 2.0 * (xx + yy))


def rpy_from_rotation(r: tuple[float, ...]) -> tuple[float, float, float]:
    """Roll, pitch, yaw (ZYX) from a row-major world_from_body matrix."""
    pitch = math.asin(max(-1.0, min(1.0, -r[6])))
    return math.atan2(r[7], r[8]), pitch, math.atan2(r[3], r[0])


class QuadrotorSim:
    """One quadrotor in its own PyBullet DIRECT client, stepped at `physics_hz`.

    Call `reset()` before stepping; then `step(rpm_command)` once per physics step.
    Static scene bodies are added by the caller through `client` after `reset()`.
    """

    def __init__(self, airframe: Airframe, physics_hz: int = 240, physics: PhysicsOptions = PhysicsOptions(),
                 wind: WindConfig = WindConfig()) -> None:
        if physics_hz <= 0:
            raise ValueError(f"physics_hz must be positive, got {physics_hz}")
        self.airframe = airframe
        self.physics_hz = int(physics_hz)
        self.dt = 1.0 / self.physics_hz
        self.physics = physics
        self.wind = wind
        self.client = pb.connect(pb.DIRECT)
        self.body_id = -1
        self.ground_id = -1
        self.time_s = 0.0
        self.rpm = [0.0, 0.0, 0.0, 0.0]
        self._rng = np.random.default_rng(0)
        self._gust = [0.0, 0.0, 0.0]
        self._gust_noise = np.zeros((0, 3))
        self._gust_index = 0
        # Kinematics cache in plain floats (fast path for the controller).
        self.position = (0.0, 0.0, 0.0)
        self.quaternion = (0.0, 0.0, 0.0, 1.0)
        self.rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        self.velocity_world = (0.0, 0.0, 0.0)
        self.angular_velocity_body = (0.0, 0.0, 0.0)
        self._motor_alpha = 1.0 - math.exp(-self.dt / airframe.motor_tau_s)
        self._max_rpm_step = airframe.max_rpm_rate * self.dt
        self._max_rpm = airframe.max_rpm

    # ------------------------------------------------------------------ set-up
    def reset(self, position=(0.0, 0.0, 1.0), yaw: float = 0.0, seed: int = 0, rpm: float | None = None) -> None:
        """Rebuild the world: ground plane and the drone at rest at `position` with heading `yaw` (rad).

        rpm: initial rotor speed of all four rotors; None = hover rpm (so a drone
        started in the air does not drop while its motors spin up).
        """
        position = [float(v) for v in np.asarray(position, dtype=float).reshape(-1)]
        if len(position) != 3 or not all(math.isfinite(v) for v in position) or not math.isfinite(yaw):
            raise ValueError(f"start position must be 3 finite numbers and yaw finite, got {position}, {yaw}")
        cid = self.client
        pb.resetSimulation(physicsClientId=cid)
        pb.setPhysicsEngineParameter(fixedTimeStep=self.dt, deterministicOverlappingPairs=1, physicsClientId=cid)
        pb.setGravity(0.0, 0.0, -self.airframe.gravity_mps2, physicsClientId=cid)
        plane = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=cid)
        self.ground_id = pb.createMultiBody(0.0, plane, physicsClientId=cid)
        orientation = pb.getQuaternionFromEuler((0.0, 0.0, float(yaw)))
        self.body_id = pb.loadURDF(str(self.airframe.urdf_path), position, orientation,
                                   flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=cid)
        # PyBullet's default damping (0.04) would act as unmodelled drag: drag is ours to model.
        pb.changeDynamics(self.body_id, -1, linearDamping=0.0, angularDamping=0.0, physicsClientId=cid)
        self.time_s = 0.0
        start_rpm = self.airframe.hover_rpm if rpm is None else float(rpm)
        self.rpm = [start_rpm] * 4
        self._rng = np.random.default_rng(seed)
        std = self.wind.gust_std_mps
        self._gust = [float(v) for v in self._rng.normal(0.0, std, 3)] if std > 0 else [0.0, 0.0, 0.0]
        self._gust_noise = np.zeros((0, 3))
        self._gust_index = 0
        self._read_state()

    def close(self) -> None:
        if self.client >= 0:
            pb.disconnect(self.client)
            self.client = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: pybullet may already be gone
            pass

    # ------------------------------------------------------------------ stepping
    def _read_state(self) -> None:
        cid = self.client
        self.position, self.quaternion = pb.getBasePositionAndOrientation(self.body_id, physicsClientId=cid)
        self.velocity_world, omega_world = pb.getBaseVelocity(self.body_id, physicsClientId=cid)
        r = rotation_from_quaternion(*self.quaternion)
        self.rotation = r
        wx, wy, wz = omega_world
        self.angular_velocity_body = (r[0] * wx + r[3] * wy + r[6] * wz,
                                      r[1] * wx + r[4] * wy + r[7] * wz,
                                      r[2] * wx + r[5] * wy + r[8] * wz)

    def wind_velocity(self) -> tuple[float, float, float]:
        """Current air velocity in the world frame (m/s)."""
        s = self.wind.steady_mps
        g = self._gust
        return (s[0] + g[0], s[1] + g[1], s[2] + g[2])

    def _advance_gust(self) -> None:
        if self.wind.gust_std_mps <= 0.0:
            return
        if self._gust_index >= len(self._gust_noise):  # draw in blocks: one RNG call per second of flight
            self._gust_noise = self._rng.standard_normal((self.physics_hz, 3))
            self._gust_index = 0
        n = self._gust_noise[self._gust_index]
        self._gust_index += 1
        a = math.exp(-self.dt / self.wind.gust_tau_s)
        b = self.wind.gust_std_mps * math.sqrt(1.0 - a * a)
        g = self._gust
        self._gust = [a * g[0] + b * n[0], a * g[1] + b * n[1], a * g[2] + b * n[2]]

    def step(self, rpm_command) -> None:
        """Advance one physics step with the given rotor speed commands (rpm, 4 values).

        Motors follow the command with a first-order lag, rate-limited and clipped to [0, max_rpm].
        """
        af = self.airframe
        alpha, max_step, max_rpm = self._motor_alpha, self._max_rpm_step, self._max_rpm
        rpm = self.rpm
        for i in range(4):
            target = rpm_command[i]
            target = 0.0 if target < 0.0 else (max_rpm if target > max_rpm else target)
            delta = alpha * (target - rpm[i])
            if delta > max_step:
                delta = max_step
            elif delta < -max_step:
                delta = -max_step
            rpm[i] += delta
        r0, r1, r2, r3 = rpm
        kf = af.kf_n_per_rpm2
        f0, f1, f2, f3 = kf * r0 * r0, kf * r1 * r1, kf * r2 * r2, kf * r3 * r3
        r = self.rotation
        px, py, pz = self.position
        if self.physics.ground_effect:
            # Cheeseman-Bennett: T/T_inf = 1 / (1 - (R / 4h)^2); h = rotor height above ground.
            height = max(pz, af.ground_effect_min_height_m)
            ratio = af.prop_radius_m / (4.0 * height)
            gain = 1.0 / (1.0 - ratio * ratio)
            f0, f1, f2, f3 = f0 * gain, f1 * gain, f2 * gain, f3 * gain
        a = af.rotor_offset_m
        thrust = f0 + f1 + f2 + f3
        tx = a * (-f0 - f1 + f2 + f3)
        ty = a * (-f0 + f1 + f2 - f3)
        km = af.km_nm_per_rpm2
        s = YAW_TORQUE_SIGN
        tz = km * (s[0] * r0 * r0 + s[1] * r1 * r1 + s[2] * r2 * r2 + s[3] * r3 * r3)
        fx = fy = 0.0
        fz = thrust
        if self.physics.drag:
            self._advance_gust()
            w = self.wind_velocity()
            vx, vy, vz = self.velocity_world
            ax, ay, az = vx - w[0], vy - w[1], vz - w[2]  # air-relative velocity, world
            bx = r[0] * ax + r[3] * ay + r[6] * az  # ... in the body frame
            by = r[1] * ax + r[4] * ay + r[7] * az
            bz = r[2] * ax + r[5] * ay + r[8] * az
            omega_sum = (r0 + r1 + r2 + r3) * RPM_TO_RADPS
            kxy, kz = af.drag_coeff_xy * omega_sum, af.drag_coeff_z * omega_sum
            fx, fy, fz = -kxy * bx, -kxy * by, fz - kz * bz
        world_force = (r[0] * fx + r[1] * fy + r[2] * fz,
                       r[3] * fx + r[4] * fy + r[5] * fz,
                       r[6] * fx + r[7] * fy + r[8] * fz)
        world_torque = (r[0] * tx + r[1] * ty + r[2] * tz,
                        r[3] * tx + r[4] * ty + r[5] * tz,
                        r[6] * tx + r[7] * ty + r[8] * tz)
        cid, body = self.client, self.body_id
        pb.applyExternalForce(body, -1, world_force, self.position, pb.WORLD_FRAME, physicsClientId=cid)
        pb.applyExternalTorque(body, -1, world_torque, pb.WORLD_FRAME, physicsClientId=cid)
        pb.stepSimulation(physicsClientId=cid)
        self.time_s += self.dt
        self._read_state()

    # ------------------------------------------------------------------ queries
    def state(self) -> DroneState:
        """True state as numpy arrays (allocates; call once per control step, not per physics step)."""
        r = self.rotation
        v = self.velocity_world
        velocity_body = (r[0] * v[0] + r[3] * v[1] + r[6] * v[2],
                         r[1] * v[0] + r[4] * v[1] + r[7] * v[2],
                         r[2] * v[0] + r[5] * v[1] + r[8] * v[2])
        return DroneState(
            time_s=self.time_s,
            position=np.array(self.position),
            quaternion=np.array(self.quaternion),
            rpy=np.array(rpy_from_rotation(r)),
            velocity_world=np.array(v),
            velocity_body=np.array(velocity_body),
            angular_velocity_body=np.array(self.angular_velocity_body),
            rpm=np.array(self.rpm),
            rotation=np.array(r).reshape(3, 3),
        )

    def contacts(self) -> list[tuple[int, float]]:
        """(other body id, normal force N) for each current contact point of the drone."""
        return [(c[2], c[9]) for c in pb.getContactPoints(bodyA=self.body_id, physicsClientId=self.client)]
