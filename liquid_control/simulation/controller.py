"""Cascaded quadrotor flight controller tracking heading-frame velocity + yaw-rate setpoints.

Behaves like PX4 in offboard velocity mode (MAV_FRAME_BODY_NED, here in FLU):
the command [vx, vy, vz, yaw_rate] is in the *heading* frame (body frame with
roll and pitch removed): vx along the nose projected on the ground, vy to the
left, vz up (m/s); yaw_rate CCW (rad/s).

    velocity P/I  -> desired acceleration (world)
    + gravity     -> thrust vector, tilt-limited -> collective thrust (projected on body z)
    tilt error P  -> roll/pitch body rates; yaw-setpoint P + feed-forward -> yaw body rate
    body-rate PID -> angular acceleration x inertia -> torques
    mixer (X)     -> rotor thrusts (attitude priority when saturated) -> rpm

All arithmetic is on Python floats: a call costs a few tens of microseconds,
cheaper than a PyBullet step. Non-finite commands are replaced by zero
(hover in place) — the safe reaction to a broken upstream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from liquid_control.simulation.airframe import Airframe


@dataclass(frozen=True)
class ControlLimits:
    """Setpoint limits: speeds in m/s, tilt in degrees, rates in rad/s."""

    max_speed_xy_mps: float = 3.0
    max_speed_z_mps: float = 1.5
    max_tilt_deg: float = 30.0
    max_yaw_rate_radps: float = 1.5
    max_roll_pitch_rate_radps: float = 8.0

    def __post_init__(self) -> None:
        if min(self.max_speed_xy_mps, self.max_speed_z_mps, self.max_yaw_rate_radps,
               self.max_roll_pitch_rate_radps) <= 0.0:
            raise ValueError("ControlLimits: speed and rate limits must be positive")
        if not 0.0 < self.max_tilt_deg < 80.0:
            raise ValueError(f"ControlLimits.max_tilt_deg must be in (0, 80), got {self.max_tilt_deg}")


def _clamp(value: float, limit: float) -> float:
    return -limit if value < -limit else (limit if value > limit else value)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class VelocityController:
    """Velocity + yaw-rate tracking controller for one airframe. Call `reset` at episode start."""

    # Integrators are clamped so a long saturation cannot wind them up.
    VEL_I_LIMIT_MPS2 = 3.0
    RATE_I_LIMIT_RADPS2 = 30.0
    # Yaw setpoint may lead the heading by at most this much (rad) when the yaw rate saturates.
    YAW_LEAD_LIMIT_RAD = 0.5

    def __init__(self, airframe: Airframe, limits: ControlLimits = ControlLimits()) -> None:
        self.airframe = airframe
        self.limits = limits
        self._tan_tilt = math.tan(math.radians(limits.max_tilt_deg))
        self.reset()

    def reset(self, yaw: float = 0.0) -> None:
        """Clear integrators and hold heading `yaw` (rad)."""
        self._vel_integral = [0.0, 0.0, 0.0]
        self._rate_integral = [0.0, 0.0, 0.0]
        self._previous_rates: tuple[float, float, float] | None = None
        self._yaw_setpoint = float(yaw)

    def compute(self, state, command_flu, dt: float) -> np.ndarray:
        """Rotor speed commands (rpm, shape (4,)) for a DroneState and a [vx, vy, vz, yaw_rate] command."""
        r = tuple(float(v) for v in np.asarray(state.rotation, dtype=float).reshape(9))
        rpm = self.compute_rpm(tuple(state.velocity_world), r, tuple(state.angular_velocity_body),
                               command_flu, dt)
        return np.array(rpm)

    def compute_rpm(self, velocity_world, rotation, body_rates, command, dt: float) -> list[float]:
        """Fast path on plain floats. rotation: row-major world_from_body (9 floats)."""
        if dt <= 0.0:
            raise ValueError(f"controller dt must be positive, got {dt}")
        af, lim, gains = self.airframe, self.limits, self.airframe.gains
        cvx, cvy, cvz, cyaw = command[0], command[1], command[2], command[3]
        if not (math.isfinite(cvx) and math.isfinite(cvy) and math.isfinite(cvz) and math.isfinite(cyaw)):
            cvx = cvy = cvz = cyaw = 0.0  # fail safe: hover
        r = rotation
        # --- velocity loop (world frame) -------------------------------------------------
        yaw = math.atan2(r[3], r[0])
        cy, sy = math.cos(yaw), math.sin(yaw)
        sx = cy * cvx - sy * cvy
        sy_ = sy * cvx + cy * cvy
        horizontal = math.hypot(sx, sy_)
        if horizontal > lim.max_speed_xy_mps:
            scale = lim.max_speed_xy_mps / horizontal
            sx, sy_ = sx * scale, sy_ * scale
        sz = _clamp(cvz, lim.max_speed_z_mps)
        ex, ey, ez = sx - velocity_world[0], sy_ - velocity_world[1], sz - velocity_world[2]
        vi = self._vel_integral
        ilim = self.VEL_I_LIMIT_MPS2
        vi[0] = _clamp(vi[0] + gains.vel_i[0] * ex * dt, ilim)
        vi[1] = _clamp(vi[1] + gains.vel_i[1] * ey * dt, ilim)
        vi[2] = _clamp(vi[2] + gains.vel_i[2] * ez * dt, ilim)
        ax = gains.vel_p[0] * ex + vi[0]
        ay = gains.vel_p[1] * ey + vi[1]
        g = af.gravity_mps2
        tz = gains.vel_p[2] * ez + vi[2] + g
        tz = max(tz, 0.3 * g)  # never ask to fall faster than ~0.7 g: keeps control authority
        # Tilt limit: the horizontal part of the thrust vector may be at most tan(tilt) of the vertical.
        horizontal = math.hypot(ax, ay)
        max_horizontal = tz * self._tan_tilt
        if horizontal > max_horizontal:
            scale = max_horizontal / horizontal
            ax, ay = ax * scale, ay * scale
        norm = math.sqrt(ax * ax + ay * ay + tz * tz)
        # Collective thrust: the part of the desired thrust vector along the current body z axis.
        collective = af.mass_kg * (ax * r[2] + ay * r[5] + tz * r[8])
        if collective < 0.0:
            collective = 0.0
        # --- attitude loop ------------------------------------------------------------------
        zx, zy, zz = ax / norm, ay / norm, tz / norm  # desired body z, world
        bzx = r[0] * zx + r[3] * zy + r[6] * zz  # ... in the body frame
        bzy = r[1] * zx + r[4] * zy + r[7] * zz
        rate_limit = lim.max_roll_pitch_rate_radps
        p_sp = _clamp(-gains.att_p[0] * bzy, rate_limit)
        q_sp = _clamp(gains.att_p[1] * bzx, rate_limit)
        yaw_rate_cmd = _clamp(cyaw, lim.max_yaw_rate_radps)
        self._yaw_setpoint = yaw + _clamp(_wrap(self._yaw_setpoint + yaw_rate_cmd * dt - yaw), self.YAW_LEAD_LIMIT_RAD)
        yaw_rate_sp = yaw_rate_cmd + gains.yaw_p * _wrap(self._yaw_setpoint - yaw)
        r_sp = _clamp(yaw_rate_sp * r[8], 2.0 * lim.max_yaw_rate_radps)
        # --- body-rate loop -------------------------------------------------------------------
        p, q, w = body_rates[0], body_rates[1], body_rates[2]
        ep, eq, er = p_sp - p, q_sp - q, r_sp - w
        ri = self._rate_integral
        rlim = self.RATE_I_LIMIT_RADPS2
        ri[0] = _clamp(ri[0] + gains.rate_i[0] * ep * dt, rlim)
        ri[1] = _clamp(ri[1] + gains.rate_i[1] * eq * dt, rlim)
        ri[2] = _clamp(ri[2] + gains.rate_i[2] * er * dt, rlim)
        prev = self._previous_rates
        if prev is None:
            dp = dq = dr = 0.0
        else:  # derivative on measurement: no kick when the setpoint jumps
            dp, dq, dr = (p - prev[0]) / dt, (q - prev[1]) / dt, (w - prev[2]) / dt
        self._previous_rates = (p, q, w)
        ixx, iyy, izz = af.inertia_kgm2
        tau_x = ixx * (gains.rate_p[0] * ep + ri[0] - gains.rate_d[0] * dp)
        tau_y = iyy * (gains.rate_p[1] * eq + ri[1] - gains.rate_d[1] * dq)
        tau_z = izz * (gains.rate_p[2] * er + ri[2] - gains.rate_d[2] * dr)
        return self._mix(collective, tau_x, tau_y, tau_z)

    def _mix(self, collective: float, tau_x: float, tau_y: float, tau_z: float) -> list[float]:
        """Rotor rpm for collective thrust (N) and body torques (N·m); see airframe.py for rotor layout.

        Saturation: yaw authority is given up first, then roll/pitch are scaled, and the
        collective is shifted so that the differences fit in [0, max thrust] (attitude priority).
        """
        af = self.airframe
        a4 = 4.0 * af.rotor_offset_m
        c4 = 4.0 * af.km_nm_per_rpm2 / af.kf_n_per_rpm2
        x, y, z = tau_x / a4, tau_y / a4, tau_z / c4
        # Rotor thrust offsets from the mean, roll/pitch part and yaw part.
        rp = (-x - y, -x + y, x + y, x - y)
        yw = (-z, z, -z, z)
        f_max = af.max_thrust_per_rotor_n
        rp_span = max(rp) - min(rp)
        if rp_span > f_max:
            scale = f_max / rp_span
            rp = tuple(v * scale for v in rp)
            yw = (0.0, 0.0, 0.0, 0.0)
        else:
            offsets = [rp[i] + yw[i] for i in range(4)]
            span = max(offsets) - min(offsets)
            if span > f_max:
                # Largest yaw fraction k with span(rp + k yw) <= f_max; the span is convex in k.
                low, high = 0.0, 1.0
                for _ in range(12):
                    mid = 0.5 * (low + high)
                    trial = [rp[i] + mid * yw[i] for i in range(4)]
                    if max(trial) - min(trial) <= f_max:
                        low = mid
                    else:
                        high = mid
                yw = tuple(v * low for v in yw)
        offsets = [rp[i] + yw[i] for i in range(4)]
        mean = collective / 4.0
        top, bottom = max(offsets), min(offsets)
        if mean + top > f_max:
            mean = f_max - top
        if mean + bottom < 0.0:
            mean = -bottom
        kf = af.kf_n_per_rpm2
        return [math.sqrt(max(mean + o, 0.0) / kf) for o in offsets]
