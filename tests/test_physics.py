"""Known answers for the quadrotor physics: hover, free fall, motor lag, rotor layout, wind, determinism."""
import math

import numpy as np
import pytest

from liquid_control.simulation import (DroneWorld, NoiseConfig, PhysicsOptions, QuadrotorSim, SceneConfig,
                                       VelocityController, WindConfig, load_airframe)

G = 9.8


@pytest.fixture(scope="module")
def cf2x():
    return load_airframe("cf2x")


def test_cf2x_parameters_match_the_reference(cf2x):
    assert cf2x.mass_kg == 0.027 and cf2x.arm_m == 0.0397
    assert cf2x.inertia_kgm2 == (1.4e-5, 1.4e-5, 2.17e-5)
    assert cf2x.hover_rpm == pytest.approx(14468, rel=0.01)
    assert cf2x.max_rpm == pytest.approx(21703, rel=0.01)
    assert cf2x.motor_tau_s == pytest.approx(0.07)


def test_controlled_hover_settles_at_the_known_rpm(cf2x):
    sim = QuadrotorSim(cf2x)
    controller = VelocityController(cf2x)
    sim.reset((0.0, 0.0, 1.0), 0.0, rpm=0.0)  # motors start stopped: the controller must find hover itself
    rpms, climb = [], []
    for _ in range(4 * sim.physics_hz):
        sim.step(controller.compute_rpm(sim.velocity_world, sim.rotation, sim.angular_velocity_body,
                                        (0.0, 0.0, 0.0, 0.0), sim.dt))
        rpms.append(list(sim.rpm))
        climb.append(sim.velocity_world[2])
    last_second = np.array(rpms[-sim.physics_hz:])
    assert last_second.mean() == pytest.approx(14468, rel=0.01)
    assert np.abs(climb[-sim.physics_hz:]).max() < 0.05  # recovered from the initial drop
    sim.close()


def test_free_fall_at_g_with_motors_off(cf2x):
    sim = QuadrotorSim(cf2x)
    sim.reset((0.0, 0.0, 20.0), 0.3, rpm=0.0)
    for _ in range(sim.physics_hz):  # 1 s
        sim.step((0.0, 0.0, 0.0, 0.0))
    t = sim.time_s
    assert t == pytest.approx(1.0)
    assert sim.velocity_world[2] == pytest.approx(-G * t, abs=1e-6)
    assert sim.velocity_world[0] == pytest.approx(0.0, abs=1e-9)
    # Semi-implicit Euler lags the exact parabola by g*dt*t/2 ~ 2 cm after 1 s.
    assert sim.position[2] == pytest.approx(20.0 - 0.5 * G * t * t, abs=0.03)
    sim.close()


def test_motor_lag_reaches_63_percent_at_tau(cf2x):
    sim = QuadrotorSim(cf2x, physics=PhysicsOptions(drag=False, ground_effect=False))
    start, target = cf2x.hover_rpm, cf2x.hover_rpm + 3000.0  # small step: the slew limit stays inactive
    sim.reset((0.0, 0.0, 5.0), 0.0, rpm=start)
    steps_to_tau = round(cf2x.motor_tau_s * sim.physics_hz)
    trace = []
    for _ in range(4 * steps_to_tau):
        sim.step([target] * 4)
        trace.append(sim.rpm[0])
    fraction = (np.array(trace) - start) / (target - start)
    t = np.arange(1, len(trace) + 1) / sim.physics_hz
    # Time at which 63.2% is first reached equals tau within one physics step.
    crossing = t[np.argmax(fraction >= 1.0 - math.exp(-1.0))]
    assert abs(crossing - cf2x.motor_tau_s) <= 1.0 / sim.physics_hz
    assert fraction[-1] == pytest.approx(1.0 - math.exp(-4.0 * steps_to_tau / sim.physics_hz / cf2x.motor_tau_s),
                                         abs=0.01)
    sim.close()


def test_rpm_slew_and_range_limits(cf2x):
    sim = QuadrotorSim(cf2x)
    sim.reset((0.0, 0.0, 5.0), 0.0, rpm=0.0)
    previous = 0.0
    for _ in range(120):
        sim.step([1e6] * 4)  # beyond max: clipped
        assert sim.rpm[0] - previous <= cf2x.max_rpm_rate / sim.physics_hz + 1e-6
        assert sim.rpm[0] <= cf2x.max_rpm + 1e-6
        previous = sim.rpm[0]
    assert previous == pytest.approx(cf2x.max_rpm, rel=0.02)
    sim.close()


@pytest.mark.parametrize("faster, axis, sign", [
    ((1, 3), 2, +1),   # CW rotors 1, 3 faster -> body turns CCW (positive yaw rate)
    ((2, 3), 0, +1),   # left rotors faster -> left side up: positive roll rate (about +x)
    ((0, 3), 1, -1),   # front rotors faster -> nose up: negative pitch rate (about +y, FLU)
])
def test_rotor_layout_and_spin_directions(cf2x, faster, axis, sign):
    sim = QuadrotorSim(cf2x, physics=PhysicsOptions(drag=False, ground_effect=False))
    sim.reset((0.0, 0.0, 5.0), 0.0)
    command = [cf2x.hover_rpm * (1.1 if i in faster else 1.0) for i in range(4)]
    for _ in range(12):
        sim.step(command)
    rates = sim.angular_velocity_body
    assert sign * rates[axis] > 0.05
    others = [abs(rates[i]) for i in range(3) if i != axis]
    assert max(others) < 0.05 * abs(rates[axis])
    sim.close()


def test_ground_effect_lifts_near_the_ground(cf2x):
    def climb_rate(ground_effect: bool, height: float) -> float:
        sim = QuadrotorSim(cf2x, physics=PhysicsOptions(drag=False, ground_effect=ground_effect))
        sim.reset((0.0, 0.0, height), 0.0)  # hover rpm, held constant
        for _ in range(24):
            sim.step([cf2x.hover_rpm] * 4)
        vz = sim.velocity_world[2]
        sim.close()
        return vz

    assert climb_rate(True, 0.03) > 0.02  # Cheeseman-Bennett gain pushes up near the ground
    assert abs(climb_rate(True, 2.0)) < 1e-3  # negligible well above the ground
    assert abs(climb_rate(False, 0.03)) < 1e-3


def test_wind_pushes_downwind_without_control_and_is_rejected_with_control(cf2x):
    wind = WindConfig(steady_mps=(0.0, 3.0, 0.0))
    sim = QuadrotorSim(cf2x, wind=wind)
    sim.reset((0.0, 0.0, 3.0), 0.0)
    for _ in range(2 * sim.physics_hz):  # 2 s with motors held at hover, no controller
        sim.step([cf2x.hover_rpm] * 4)
    drift_uncontrolled = sim.position[1]
    assert drift_uncontrolled > 0.1 and sim.velocity_world[1] > 0.1
    sim.close()

    world = DroneWorld(cf2x, wind=wind, control_hz=30.0)
    world.reset(SceneConfig(target=None), (0.0, 0.0, 3.0), 0.0, seed=0)
    for _ in range(5 * 30):
        state = world.step([0.0, 0.0, 0.0, 0.0])
    assert abs(state.velocity_world[1]) < 0.05  # the velocity integrator cancels the wind
    assert state.position[1] < 0.5 * drift_uncontrolled
    assert abs(state.rpy[0]) > math.radians(0.5)  # it leans into the wind to do so
    world.close()


def test_gusts_vary_and_are_seeded(cf2x):
    wind = WindConfig(steady_mps=(1.0, 0.0, 0.0), gust_std_mps=0.8, gust_tau_s=0.5)

    def trace(seed):
        sim = QuadrotorSim(cf2x, wind=wind)
        sim.reset((0.0, 0.0, 3.0), 0.0, seed=seed)
        samples = []
        for _ in range(4 * sim.physics_hz):
            sim.step([cf2x.hover_rpm] * 4)
            samples.append(sim.wind_velocity())
        sim.close()
        return np.array(samples)

    a, b, c = trace(1), trace(1), trace(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.2 < a[:, 0].std() < 2.0 and a[:, 0].mean() == pytest.approx(1.0, abs=0.8)


def test_same_seed_gives_bit_identical_trajectory(cf2x):
    def fly(seed):
        world = DroneWorld(cf2x, wind=WindConfig((0.5, -0.3, 0.0), gust_std_mps=0.5),
                           noise=NoiseConfig(velocity_std_mps=0.05, attitude_std_rad=0.01, gyro_std_radps=0.02))
        world.reset(SceneConfig(), (0.0, 0.0, 1.0), 0.2, seed=seed)
        states = []
        for k in range(45):
            s = world.step([0.8, 0.2 * math.sin(k / 5.0), 0.1, 0.3])
            states.append(np.concatenate([s.position, s.quaternion, s.velocity_world, s.angular_velocity_body, s.rpm]))
        world.close()
        return np.array(states)

    first, second, other = fly(7), fly(7), fly(8)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_heavy_airframe_comes_from_its_file(tmp_path):
    heavy = load_airframe("quad250")
    assert 0.5 <= heavy.mass_kg <= 0.6 and heavy.arm_m > 0.1
    assert heavy.hover_rpm == pytest.approx(math.sqrt(heavy.mass_kg * G / (4 * heavy.kf_n_per_rpm2)))
    sim = QuadrotorSim(heavy)
    sim.reset((0.0, 0.0, 5.0), 0.0)  # well above ground effect
    for _ in range(sim.physics_hz // 2):
        sim.step([heavy.hover_rpm] * 4)
    assert abs(sim.velocity_world[2]) < 1e-3  # its own hover rpm carries its own weight
    sim.close()


def test_bad_airframe_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown airframe 'nope'.*cf2x"):
        load_airframe("nope")
    text = (load_airframe("cf2x").urdf_path.with_suffix(".yaml")).read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("mass_kg: 0.027", "mass_kg: -1"))
    with pytest.raises(ValueError, match="mass_kg"):
        load_airframe(broken)
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace("kf_n_per_rpm2: 3.16e-10", ""))
    with pytest.raises(ValueError, match="missing airframe parameters: kf_n_per_rpm2"):
        load_airframe(missing)


def test_resultant_at_centre_equals_four_rotor_forces(cf2x):
    """Our one-force-one-torque application matches PyBullet applying each rotor's force at its rotor."""
    import dataclasses

    import pybullet as pb

    instant = dataclasses.replace(cf2x, motor_tau_s=1e-9, max_rpm_rate=1e12)  # no motor dynamics here
    rpm = [cf2x.hover_rpm * f for f in (1.03, 0.98, 1.01, 0.99)]
    sim = QuadrotorSim(instant, physics=PhysicsOptions(drag=False, ground_effect=False))
    sim.reset((0.0, 0.0, 5.0), 0.2)
    for _ in range(60):
        sim.step(rpm)
    ours = np.concatenate([sim.position, sim.quaternion])
    sim.close()

    cid = pb.connect(pb.DIRECT)
    try:
        pb.setTimeStep(1 / 240, physicsClientId=cid)
        pb.setGravity(0, 0, -cf2x.gravity_mps2, physicsClientId=cid)
        body = pb.loadURDF(str(cf2x.urdf_path), (0, 0, 5.0), pb.getQuaternionFromEuler((0, 0, 0.2)),
                           flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=cid)
        pb.changeDynamics(body, -1, linearDamping=0.0, angularDamping=0.0, physicsClientId=cid)
        a = cf2x.rotor_offset_m
        rotors = [(a, -a, 0.0), (-a, -a, 0.0), (-a, a, 0.0), (a, a, 0.0)]
        yaw = cf2x.km_nm_per_rpm2 * (-rpm[0] ** 2 + rpm[1] ** 2 - rpm[2] ** 2 + rpm[3] ** 2)
        for _ in range(60):
            position, orientation = pb.getBasePositionAndOrientation(body, physicsClientId=cid)
            rotation = np.array(pb.getMatrixFromQuaternion(orientation)).reshape(3, 3)
            for r, offset in zip(rpm, rotors):
                world_point = np.array(position) + rotation @ offset
                pb.applyExternalForce(body, -1, rotation @ (0, 0, cf2x.kf_n_per_rpm2 * r * r), world_point,
                                      pb.WORLD_FRAME, physicsClientId=cid)
            pb.applyExternalTorque(body, -1, rotation @ (0, 0, yaw), pb.WORLD_FRAME, physicsClientId=cid)
            pb.stepSimulation(physicsClientId=cid)
        position, orientation = pb.getBasePositionAndOrientation(body, physicsClientId=cid)
    finally:
        pb.disconnect(cid)
    reference = np.concatenate([position, orientation])
    assert np.abs(ours - reference).max() < 1e-6
    assert np.abs(ours[3:] - (0, 0, math.sin(0.1), math.cos(0.1))).max() > 1e-3  # it did rotate


def test_rotor_drag_matches_the_foerster_model(cf2x):
    """F = -k_xy * sum(rotor speeds, rad/s) * v_air in the body plane (Förster 2015)."""
    sim = QuadrotorSim(cf2x, wind=WindConfig(steady_mps=(2.0, 0.0, 0.0)),
                       physics=PhysicsOptions(drag=True, ground_effect=False))
    sim.reset((0.0, 0.0, 5.0), 0.0)
    for _ in range(24):  # 0.1 s at hover rpm: the drone barely moves, so v_air stays ~2 m/s
        sim.step([cf2x.hover_rpm] * 4)
    omega_sum = 4 * cf2x.hover_rpm * 2 * math.pi / 60
    expected_acceleration = cf2x.drag_coeff_xy * omega_sum * 2.0 / cf2x.mass_kg  # ~0.41 m/s^2
    assert sim.velocity_world[0] == pytest.approx(expected_acceleration * 0.1, rel=0.02)
    assert abs(sim.velocity_world[1]) < 1e-9
