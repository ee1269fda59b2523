"""Quadrotor airframe parameters, read from `sim/airframes/<name>.yaml`.

Rotor numbering and spin (X configuration, body frame FLU, seen from above):

    rotor 3 (front-left,  CW)    rotor 0 (front-right, CCW)
                         \\    /
                          body
                         /    \\
    rotor 2 (rear-left,  CCW)    rotor 1 (rear-right,  CW)

Rotor i sits at (±arm/√2, ±arm/√2, 0): r0 (+,-), r1 (-,-), r2 (-,+), r3 (+,+).
A CCW rotor pushes the body clockwise, so the yaw torque is
km·(−r0² + r1² − r2² + r3²) (rpm²), the convention of the reference simulator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from liquid_control.util.paths import share_path

# +1: rotor adds positive (CCW) yaw torque to the body; -1: negative.
YAW_TORQUE_SIGN = (-1.0, 1.0, -1.0, 1.0)
# Rotor positions as multiples of arm/√2 (x forward, y left).
ROTOR_XY_UNIT = ((1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


@dataclass(frozen=True)
class ControllerGains:
    """Gains of the cascaded flight controller (units per loop, independent of mass/inertia).

    vel_p [1/s], vel_i [1/s²]: world-frame acceleration per velocity error (x, y, z).
    att_p [1/s]: body rate per radian of tilt error (roll, pitch); yaw_p [1/s] per radian of yaw error.
    rate_p [1/s], rate_i [1/s²], rate_d [-]: angular acceleration per body-rate error; the
    controller multiplies by the inertia, so the same numbers suit similar-bandwidth airframes.
    """

    vel_p: tuple[float, float, float] = (2.5, 2.5, 4.0)
    vel_i: tuple[float, float, float] = (0.6, 0.6, 1.5)
    att_p: tuple[float, float] = (9.0, 9.0)
    yaw_p: float = 3.0
    rate_p: tuple[float, float, float] = (40.0, 40.0, 15.0)
    rate_i: tuple[float, float, float] = (10.0, 10.0, 5.0)
    rate_d: tuple[float, float, float] = (0.4, 0.4, 0.0)


@dataclass(frozen=True)
class Airframe:
    """Physical parameters of one quadrotor (SI units; rotor speeds in rpm)."""

    name: str
    mass_kg: float
    arm_m: float
    inertia_kgm2: tuple[float, float, float]
    kf_n_per_rpm2: float
    km_nm_per_rpm2: float
    thrust_to_weight: float
    motor_tau_s: float
    max_rpm_rate: float
    urdf_path: Path
    gravity_mps2: float = 9.8
    prop_radius_m: float = 0.0231348
    collision_radius_m: float = 0.06
    drag_coeff_xy: float = 0.0
    drag_coeff_z: float = 0.0
    ground_effect_min_height_m: float = 0.01
    gains: ControllerGains = field(default_factory=ControllerGains)

    @property
    def weight_n(self) -> float:
        return self.mass_kg * self.gravity_mps2

    @property
    def hover_rpm(self) -> float:
        """Rotor speed at which the four rotors together carry the weight."""
        return math.sqrt(self.weight_n / (4.0 * self.kf_n_per_rpm2))

    @property
    def max_rpm(self) -> float:
        """Rotor speed giving thrust_to_weight times the weight with all four rotors."""
        return math.sqrt(self.thrust_to_weight * self.weight_n / (4.0 * self.kf_n_per_rpm2))

    @property
    def max_thrust_per_rotor_n(self) -> float:
        return self.kf_n_per_rpm2 * self.max_rpm**2

    @property
    def rotor_offset_m(self) -> float:
        """|x| = |y| of each rotor in the body frame."""
        return self.arm_m / math.sqrt(2.0)


def _vector(data: dict, key: str, length: int, source: str) -> tuple[float, ...]:
    value = data[key]
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"{source}: '{key}' must be a list of {length} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _resolve(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise FileNotFoundError(f"airframe file not found: {candidate}")
        return candidate
    path = share_path("sim", "airframes", f"{name_or_path}.yaml")
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown airframe {str(name_or_path)!r}; known: {', '.join(known)} (or pass a .yaml path)")
    return path


def load_airframe(name_or_path: str | Path = "cf2x") -> Airframe:
    """Read an airframe by name (`cf2x`, `quad250`) or from a YAML file path."""
    path = _resolve(name_or_path)
    with open(path, encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    source = str(path)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of airframe parameters")
    required = ("mass_kg", "arm_m", "inertia_kgm2", "kf_n_per_rpm2", "km_nm_per_rpm2", "thrust_to_weight",
                "motor_tau_s", "max_rpm_rate", "urdf")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{source}: missing airframe parameters: {', '.join(missing)}")
    scalars = {}
    for key in ("mass_kg", "arm_m", "kf_n_per_rpm2", "km_nm_per_rpm2", "thrust_to_weight", "motor_tau_s",
                "max_rpm_rate", "gravity_mps2", "prop_radius_m", "collision_radius_m", "drag_coeff_xy",
                "drag_coeff_z", "ground_effect_min_height_m"):
        if key in data:
            try:
                scalars[key] = float(data[key])
            except (TypeError, ValueError):
                raise ValueError(f"{source}: '{key}' must be a number, got {data[key]!r}") from None
    for key in ("mass_kg", "arm_m", "kf_n_per_rpm2", "km_nm_per_rpm2", "motor_tau_s", "max_rpm_rate"):
        if scalars[key] <= 0.0:
            raise ValueError(f"{source}: '{key}' must be positive, got {scalars[key]}")
    if scalars["thrust_to_weight"] <= 1.0:
        raise ValueError(f"{source}: 'thrust_to_weight' must exceed 1 to fly, got {scalars['thrust_to_weight']}")
    inertia = _vector(data, "inertia_kgm2", 3, source)
    if min(inertia) <= 0.0:
        raise ValueError(f"{source}: 'inertia_kgm2' entries must be positive, got {inertia}")
    gains_data = data.get("controller") or {}
    gains_kwargs = {}
    lengths = {"vel_p": 3, "vel_i": 3, "att_p": 2, "rate_p": 3, "rate_i": 3, "rate_d": 3}
    for key, value in gains_data.items():
        if key == "yaw_p":
            gains_kwargs[key] = float(value)
        elif key in lengths:
            gains_kwargs[key] = _vector(gains_data, key, lengths[key], f"{source} controller")
        else:
            raise ValueError(f"{source}: unknown controller gain '{key}'")
    urdf_path = path.parent / str(data["urdf"])
    if not urdf_path.is_file():
        raise FileNotFoundError(f"{source}: URDF file not found: {urdf_path}")
    return Airframe(
        name=str(data.get("name", path.stem)),
        inertia_kgm2=inertia,  # type: ignore[arg-type]
        urdf_path=urdf_path,
        gains=ControllerGains(**gains_kwargs),
        **scalars,
    )
