"""DroneWorld facade: hover, determinism of states and images, crashes, frames (rate, drops, latency), targets."""
import math

import numpy as np
import pytest

from liquid_control.simulation import (CameraConfig, DroneWorld, ImageEffects, NoiseConfig, Obstacle, SceneConfig,
                                       SceneObject, WindConfig)

SMALL = CameraConfig(width=64, height=48)


def test_reset_and_hover_hold_the_start_pose():
    with DroneWorld("cf2x", camera=SMALL) as world:
        state = world.reset(SceneConfig(), start_position=(1.0, 2.0, 1.5), start_yaw=0.7, seed=0)
        np.testing.assert_allclose(state.position, (1.0, 2.0, 1.5))
        assert state.rpy[2] == pytest.approx(0.7)
        assert world.time_s == 0.0 and world.substeps == 8
        for _ in range(60):  # 2 s
            state = world.step([0.0, 0.0, 0.0, 0.0])
        assert world.time_s == pytest.approx(2.0)
        np.testing.assert_allclose(state.position, (1.0, 2.0, 1.5), atol=0.02)
        assert state.rpy[2] == pytest.approx(0.7, abs=0.01)
        assert not world.crashed
        assert world.camera_matrix.shape == (3, 3)


def test_same_seed_same_trajectory_and_images():
    effects = ImageEffects(noise_std=5.0, exposure_jitter=0.1, frame_drop_prob=0.2, latency_s=0.04,
                           latency_jitter_s=0.02)
    scene = SceneConfig(distractors=(SceneObject("box", (0.1, 0.2, 0.9), 0.5, (4.0, 1.0, 0.5)),))

    def run(seed):
        with DroneWorld("cf2x", camera=SMALL, wind=WindConfig((0.5, 0.0, 0.0), 0.3), effects=effects,
                        noise=NoiseConfig(velocity_std_mps=0.02)) as world:
            world.reset(scene, (0.0, 0.0, 1.0), 0.0, seed=seed)
            states, frames = [], []
            for k in range(30):
                s = world.step([1.0, 0.0, 0.0, 0.3])
                states.append(np.concatenate([s.position, s.quaternion, s.rpm]))
                frame = world.render()
                frames.append(None if frame is None else (frame.seq, frame.capture_time_s, frame.image))
            return np.array(states), frames

    (s1, f1), (s2, f2), (s3, _) = run(3), run(3), run(4)
    np.testing.assert_array_equal(s1, s2)
    assert [f is None for f in f1] == [f is None for f in f2]
    for a, b in zip(f1, f2):
        if a is not None:
            assert a[:2] == b[:2] and np.array_equal(a[2], b[2])
    assert not np.array_equal(s1, s3)


def test_frame_drops_and_latency_are_as_configured():
    effects = ImageEffects(frame_drop_prob=0.25, latency_s=0.05)
    with DroneWorld("cf2x", camera=SMALL, effects=effects) as world:
        world.reset(SceneConfig(), seed=1)
        delivered = []
        for _ in range(300):
            world.step([0.0, 0.0, 0.0, 0.0])
            frame = world.render()
            if frame is not None:
                delivered.append((world.time_s, frame))
        # 25% dropped (binomial, n=300: 3 sigma ~ 7.5%)
        assert len(delivered) / 300 == pytest.approx(0.75, abs=0.08)
        for now, frame in delivered:
            age = now - frame.capture_time_s
            assert 0.05 <= age + 1e-9 and age < 0.05 + 1 / 30 + 1e-9  # arrives at the first step after 50 ms
        seqs = [f.seq for _, f in delivered]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert max(np.diff(seqs)) > 1 and seqs[-1] >= 290  # drops leave gaps; every step captured one


def test_camera_slower_than_control_loop():
    with DroneWorld("cf2x", camera=CameraConfig(width=32, height=24, rate_hz=15.0), control_hz=30.0) as world:
        world.reset(SceneConfig(), seed=0)
        got = []
        for _ in range(10):
            got.append(world.render() is not None)
            world.step([0.0, 0.0, 0.0, 0.0])
        assert got == [True, False] * 5


def test_crash_into_ground_and_into_a_post():
    with DroneWorld("cf2x", camera=SMALL) as world:
        world.reset(SceneConfig(), (0.0, 0.0, 1.0), 0.0, seed=0)
        for _ in range(90):
            world.step([0.0, 0.0, -1.5, 0.0])  # dive at 1.5 m/s
            if world.crashed:
                break
        assert world.crashed and "ground" in world.crash_reason

        world.reset(SceneConfig(), (0.0, 0.0, 1.0), 0.0, seed=0)
        assert not world.crashed
        for _ in range(120):
            world.step([0.0, 0.0, -0.3, 0.0])  # gentle descent: lands, no crash
        assert world.state.position[2] < 0.05 and not world.crashed

        scene = SceneConfig(obstacles=(Obstacle("post", (2.0, 0.0), height_m=3.0, radius_m=0.1),))
        world.reset(scene, (0.0, 0.0, 1.0), 0.0, seed=0)
        for _ in range(120):
            world.step([1.5, 0.0, 0.0, 0.0])
            if world.crashed:
                break
        assert world.crashed and "cylinder" in world.crash_reason
        assert world.state.position[0] < 2.0  # stopped by the post, not through it


def test_target_does_not_collide_and_can_move():
    target = SceneObject("sphere", (1.0, 0.0, 0.0), 0.6, (1.5, 0.0, 1.0), collides=False)
    with DroneWorld("cf2x", camera=SMALL) as world:
        world.reset(SceneConfig(target=target), (0.0, 0.0, 1.0), 0.0, seed=0)
        before = world.render().image.astype(int)
        world.set_target_position((4.0, 1.5, 1.0))
        np.testing.assert_allclose(world.target_position, (4.0, 1.5, 1.0))
        world.step([0.0, 0.0, 0.0, 0.0])
        after = world.render().image.astype(int)

        def red_columns(image):
            mask = (image[..., 0] > 3 * image[..., 1]) & (image[..., 0] > 40)
            return np.nonzero(mask)[1]

        assert red_columns(after).mean() < red_columns(before).mean() - 5  # moved left (+y) in the image
        assert len(red_columns(after)) < len(red_columns(before))  # and further away
        for _ in range(60):  # fly through where the target was: no crash
            world.step([1.0, 0.0, 0.0, 0.0])
        assert not world.crashed and world.state.position[0] > 1.5
        with pytest.raises(ValueError, match="target position"):
            world.set_target_position((1.0, math.nan, 0.0))


def test_bad_world_arguments_are_named():
    with pytest.raises(ValueError, match="integer multiple of control_hz"):
        DroneWorld("cf2x", control_hz=7.0)
    with pytest.raises(ValueError, match="unknown airframe"):
        DroneWorld("x500")
    with DroneWorld("cf2x", camera=SMALL) as world:
        with pytest.raises(ValueError, match="start_position"):
            world.reset(SceneConfig(), (0.0, 1.0))
        with pytest.raises(TypeError, match="SceneConfig"):
            world.reset({"target": None})
    with pytest.raises(RuntimeError, match="closed"):
        world.step([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(RuntimeError, match="closed"):
        world.reset()


def test_sensor_noise_disturbs_the_controller_but_hover_holds():
    def hover(noise):
        with DroneWorld("cf2x", camera=SMALL, noise=noise) as world:
            world.reset(SceneConfig(), (0.0, 0.0, 1.0), 0.0, seed=5)
            rates = []
            for _ in range(60):
                state = world.step([0.0, 0.0, 0.0, 0.0])
                rates.append(state.angular_velocity_body)
            return state, np.array(rates)

    quiet_state, quiet_rates = hover(NoiseConfig())
    noisy_state, noisy_rates = hover(NoiseConfig(velocity_std_mps=0.05, attitude_std_rad=0.01, gyro_std_radps=0.05))
    assert np.abs(quiet_rates).max() < 1e-3
    assert np.abs(noisy_rates).std() > 10 * max(np.abs(quiet_rates).std(), 1e-6)  # the noise reaches the motors
    np.testing.assert_allclose(noisy_state.position, (0.0, 0.0, 1.0), atol=0.15)  # and is rejected
    with pytest.raises(ValueError, match="standard deviations"):
        NoiseConfig(gyro_std_radps=-1.0)
