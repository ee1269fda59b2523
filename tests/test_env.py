"""The episode runner, the gymnasium env and the expert CLI on the real simulator (short episodes)."""
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from liquid_control import cli
from liquid_control.simulation.env import ENV_SCENARIOS, LiquidControlEnv
from liquid_control.simulation.episode import (
    EpisodeConfig, ExpertController, PerturbedController, run_episode, run_expert_episode, scene_from_spec,
)
from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import load_scenario


@pytest.fixture(scope="module")
def fly():
    return load_scenario("train_fly_to_target")


# ---------------------------------------------------------------- episode runner

def test_scene_from_spec_maps_every_sampled_factor(fly):
    spec = sample_episode(load_scenario("ood_distractors_fly_to_target"), 2)
    scene = scene_from_spec(spec)
    assert scene.target.position == spec.targets[0] and not scene.target.collides
    assert len(scene.distractors) == len(spec.distractors) > 0 and all(d.collides for d in scene.distractors)
    assert np.allclose(scene.light.direction, -np.array(spec.light_direction))  # from-light vs travel direction
    assert scene.ground.texture == spec.ground_texture and scene.sky.colour == spec.sky_colour


@pytest.mark.parametrize("scenario, seeds, duration", [
    ("train_fly_to_target", [0, 1, 2], None), ("train_target_loop", [0], None), ("train_chase", [0, 1], 8.0),
])
def test_expert_succeeds_on_train_episodes_with_physics(scenario, seeds, duration):
    for seed in seeds:
        m = run_expert_episode(load_scenario(scenario), seed, EpisodeConfig(render=False, duration_s=duration)).metrics
        assert m["success"] and not m["crashed"], m
        if scenario == "train_fly_to_target":
            assert 0.5 <= m["final_distance_m"] <= 1.5 and m["time_to_goal_s"] < 20


def test_same_episode_twice_is_bit_identical_including_images(fly):
    config = EpisodeConfig(keep_frames=True, duration_s=1.0)
    a = run_episode((fly, 5), ExpertController(), config=config)
    b = run_episode((fly, 5), ExpertController(), config=config)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.commands, b.commands)
    frames_a = [f.image for f in a.frames if f is not None]
    frames_b = [f.image for f in b.frames if f is not None]
    assert len(frames_a) > 10 and all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))


def test_dagger_labels_come_from_the_expert_while_another_controller_flies(fly):
    config = EpisodeConfig(render=False, duration_s=3.0)
    same = run_episode((fly, 1), ExpertController(), labeller=ExpertController(), config=config)
    assert np.array_equal(same.labels, same.commands)  # expert flying: label == flown command
    mixed = run_episode((fly, 1), PerturbedController(ExpertController()), labeller=ExpertController(), config=config)
    assert mixed.labels.shape == mixed.commands.shape
    gap = np.abs(mixed.commands - mixed.labels).mean(axis=0)
    assert np.all(gap > 0.02) and np.all(gap < 1.0)  # perturbed, but around the expert's labels
    assert not np.array_equal(mixed.positions, same.positions)


class NaNController:
    def reset(self, spec):
        pass

    def act(self, observation):
        return [math.nan, 0.0, 0.0, 0.0] if observation.time_s < 0.5 else [0.0, 0.0, 0.0]


def test_bad_commands_fly_as_hover_and_are_counted(fly):
    result = run_episode((fly, 0), NaNController(), config=EpisodeConfig(render=False, duration_s=1.0))
    assert result.metrics["command_faults"] == len(result.commands) == 30
    assert not np.any(result.commands) and not result.metrics["crashed"]
    assert np.linalg.norm(result.positions[-1] - result.positions[0]) < 0.05  # it hovered


# ---------------------------------------------------------------- gymnasium

@pytest.mark.parametrize("env_id", sorted(ENV_SCENARIOS))
def test_registered_envs_pass_the_gymnasium_checker(env_id):
    env = gym.make(env_id, duration_s=1.0)
    try:
        check_env(env.unwrapped, skip_render_check=False)
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs) and info["scenario"] == ENV_SCENARIOS[env_id]
    finally:
        env.close()


def test_env_is_seeded_and_images_arrive_with_capture_times():
    env = LiquidControlEnv("train_fly_to_target", duration_s=2.0)
    a, _ = env.reset(seed=11)
    steps_a = [env.step(np.array([0.5, 0, 0, 0.2], np.float32)) for _ in range(10)]
    b, _ = env.reset(seed=11)
    steps_b = [env.step(np.array([0.5, 0, 0, 0.2], np.float32)) for _ in range(10)]
    assert np.array_equal(a["image"], b["image"])
    assert all(np.array_equal(x[0]["image"], y[0]["image"]) and x[1] == y[1] for x, y in zip(steps_a, steps_b))
    last = steps_a[-1][0]
    assert last["image"].dtype == np.uint8 and last["image"].std() > 1.0  # a rendered scene, not blank
    assert 0.0 <= last["capture_time_s"][0] <= last["time_s"][0]
    env.reset(seed=12)
    other = [env.step(np.array([0.5, 0, 0, 0.2], np.float32)) for _ in range(10)]
    assert not np.array_equal(last["image"], other[-1][0]["image"])
    env.close()


def test_env_reward_follows_progress_and_expert_gets_the_success_bonus():
    env = LiquidControlEnv("train_fly_to_target")
    env.reset(seed=0, options={"episode_seed": 0})
    total, done, info = 0.0, False, {}
    while not done:
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        total += reward
        done = terminated or truncated
    assert terminated and info["success"] and total > 10.0 + 1.0  # bonus + metres of progress
    env.reset(seed=0, options={"episode_seed": 0})
    backwards = sum(env.step(np.array([-1.0, 0, 0, 0], np.float32))[1] for _ in range(30))
    assert backwards < -0.5  # flying away from the target costs reward
    _, _, _, _, info = env.step(np.array([np.nan, 0, 0, 0], np.float32))
    assert info["command_faults"] == 1
    env.close()


def test_env_rejects_bad_use():
    with pytest.raises(ValueError, match="render_mode"):
        LiquidControlEnv(render_mode="human")
    env = LiquidControlEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, np.float32))


# ---------------------------------------------------------------- CLI

def test_cli_expert_prints_table_and_saves_strip_video_plot(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text("scenarios:\n  - {scenario: train_fly_to_target, episodes: 2}\n"
                     "  - {scenario: train_chase, episodes: 1}\n")
    out = {k: tmp_path / f"out.{e}" for k, e in (("strip", "png"), ("video", "gif"), ("plot", "png"))}
    code = cli.main(["expert", "--suite", str(suite), "--workers", "2", "--duration", "6", "--no-progress",
                     "--strip", str(out["strip"]), "--video", str(out["video"]), "--plot", str(out["plot"]),
                     "--json", str(tmp_path / "m.json")])
    text = capsys.readouterr().out
    assert code == 0
    assert "train_fly_to_target" in text and "train_chase" in text and "ALL" in text and "Wilson" in text
    assert all(p.stat().st_size > 1000 for p in out.values())
    import json
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert sorted((m["scenario"], m["seed"]) for m in metrics) == [
        ("train_chase", 0), ("train_fly_to_target", 0), ("train_fly_to_target", 1)]


def test_cli_expert_reports_a_bad_suite(tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text("scenarios:\n  - {scenario: train_chase, episodes: -2}\n")
    assert cli.main(["expert", "--suite", str(suite), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(suite) in err and "episodes" in err


def test_every_shipped_scenario_builds_a_valid_world_configuration():
    from liquid_control.simulation.airframe import load_airframe
    from liquid_control.simulation.episode import effects_from_spec
    from liquid_control.util.paths import share_path

    names = sorted(p.stem for p in share_path("sim", "scenarios").glob("*.yaml"))
    assert len(names) >= 20
    for name in names:
        for seed in (0, 1):
            spec = sample_episode(load_scenario(name), seed)
            scene_from_spec(spec), effects_from_spec(spec), load_airframe(spec.airframe)  # validate, raise if bad
