"""Data collection: expert vs perturbed (relabelled) episodes, shard contents, resume, CLI."""
from __future__ import annotations

import numpy as np
import pytest

from liquid_control.cli import main as cli_main
from liquid_control.learning.collect import CollectConfig, collect, collect_episode, is_perturbed
from liquid_control.learning.dataset import list_shards, read_shard
from liquid_control.simulation.scenario import load_scenario


def test_perturbed_episode_flies_noise_but_stores_expert_labels():
    scenario = load_scenario("train_fly_to_target")
    config = CollectConfig(height=12, width=16, perturbed_fraction=1.0, duration_s=1.0)
    episode = collect_episode(scenario, 3, config)
    assert episode.meta["controller"] == "perturbed"
    assert episode.images.shape[1:] == (12, 16, 3) and episode.images.dtype == np.uint8
    assert 20 <= len(episode) <= 31  # 1 s of a 30 Hz camera, minus dropped / late frames
    assert np.all(np.diff(episode.capture_times_s) > 0)
    # The class mask comes with every frame: the target's pixels are the reddest ones.
    assert episode.segmentation.shape == episode.images.shape[:3]
    target = episode.segmentation == 2
    assert target.any() and set(np.unique(episode.segmentation)) <= {0, 1, 2, 3}
    rgb = episode.images.astype(int)
    redness = rgb[..., 0] - rgb[..., 1]
    assert redness[target].mean() > redness[~target].mean() + 30
    # The label is the clean expert; the flown command carries the exploration noise.
    assert np.abs(episode.commands - episode.labels).max() > 0.05
    assert np.all(np.abs(episode.labels) <= np.array([1.5, 1.0, 0.8, 1.2]) + 1e-6)  # expert limits
    clean = collect_episode(scenario, 3, CollectConfig(height=12, width=16, perturbed_fraction=0.0, duration_s=1.0))
    assert clean.meta["controller"] == "expert"
    np.testing.assert_array_equal(clean.commands, clean.labels)
    assert np.isfinite(clean.positions).all() and np.isfinite(clean.velocities_body).all()


def test_decoy_episodes_fly_to_distractors_but_store_the_clean_experts_labels():
    """A decoy episode's flown expert detours to distractors as if they were the target (so its commands
    turn away from the labels' for seconds at a time), while the labels stay the true target's expert."""
    from liquid_control.simulation.episode import DecoyController, EpisodeConfig, ExpertController, run_episode
    from liquid_control.simulation.sampling import sample_episode

    scenario = load_scenario("train_target_loop")
    seed = next(k for k in range(50) if len(sample_episode(scenario, k).distractors) >= 2)
    config = EpisodeConfig(render=False, duration_s=12.0)
    decoy = DecoyController(ExpertController(config.camera), mean_interval_s=1.0)
    flown = run_episode((scenario, seed), decoy, ExpertController(config.camera), config)
    again = run_episode((scenario, seed), DecoyController(ExpertController(config.camera), mean_interval_s=1.0),
                        ExpertController(config.camera), config)
    np.testing.assert_array_equal(flown.commands, again.commands)  # seeded from the episode
    yaw_gap = np.abs(flown.commands[:, 3] - flown.labels[:, 3])
    assert (yaw_gap > 0.3).sum() > 30  # whole seconds of turning elsewhere than the label says
    plain = run_episode((scenario, seed), ExpertController(config.camera), ExpertController(config.camera), config)
    np.testing.assert_allclose(plain.commands, plain.labels, atol=1e-9)
    episode = collect_episode(scenario, seed, CollectConfig(height=12, width=16, perturbed_fraction=1.0,
                                                            decoy_fraction=1.0, duration_s=1.0))
    assert episode.meta["controller"] == "decoy"
    with pytest.raises(ValueError, match="decoy_fraction"):
        CollectConfig(decoy_fraction=1.5)


def test_the_collection_expert_is_configurable_and_recorded_in_every_shard(repo_root):
    """A recipe's `expert` section flies and labels the episodes (the shipped model's data used chase gain
    0.8): a softer chase gain gives smaller forward labels at the same states, and the shard says which."""
    from liquid_control.config import ConfigError
    from liquid_control.learning.recipe import load_config
    from liquid_control.simulation.expert import ExpertConfig

    scenario = load_scenario("train_chase")
    episodes = {gain: collect_episode(scenario, 5, CollectConfig(height=12, width=16, perturbed_fraction=0.0,
                                                                 duration_s=2.0,
                                                                 expert=ExpertConfig(chase_forward_gain=gain)))
                for gain in (0.8, 1.6)}
    assert episodes[0.8].meta["expert"]["chase_forward_gain"] == 0.8
    assert episodes[1.6].meta["expert"] == {**episodes[0.8].meta["expert"], "chase_forward_gain": 1.6}
    assert not np.array_equal(episodes[0.8].labels, episodes[1.6].labels)
    recipe = load_config(repo_root / "config" / "train_tiny.yaml", {"expert.chase_forward_gain": 0.8})
    assert recipe.expert == ExpertConfig(chase_forward_gain=0.8)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="expert"):
            load_config(repo_root / "config" / "train_tiny.yaml", {"expert.chase_forward_gain": bad})


def test_perturbation_choice_is_a_deterministic_draw_from_the_seed():
    draws = [is_perturbed(seed, 0.7) for seed in range(400)]
    assert draws == [is_perturbed(seed, 0.7) for seed in range(400)]
    assert 0.6 < np.mean(draws) < 0.8
    assert not any(is_perturbed(s, 0.0) for s in range(50)) and all(is_perturbed(s, 1.0) for s in range(50))


def test_collect_writes_one_shard_per_episode_and_resumes(tmp_path, tiny_suite):
    out = tmp_path / "data"
    config = CollectConfig(height=12, width=16, duration_s=0.7, perturbed_fraction=0.5)
    first = collect(str(tiny_suite), out, workers=1, base_seed=10, config=config, progress=False)
    names = [p.name for p in list_shards(out)]
    assert names == ["train_fly_to_target_000010.npz", "train_fly_to_target_000011.npz"]
    assert first.written == 2 and first.skipped_existing == 0
    shard = read_shard(out / names[0])
    assert shard.meta["scenario"] == "train_fly_to_target" and shard.meta["seed"] == 10
    assert shard.meta["controller"] == ("perturbed" if is_perturbed(10, 0.5) else "expert")
    mtimes = {p.name: p.stat().st_mtime_ns for p in list_shards(out)}

    # A killed run leaves at most a hidden temp file: it is ignored, and the missing episode is flown again.
    (out / names[1]).unlink()
    (out / f".{names[1]}.tmp999").write_bytes(b"half")
    second = collect(str(tiny_suite), out, workers=2, base_seed=10, config=config, progress=False)
    assert second.written == 1 and second.skipped_existing == 1
    assert (out / names[0]).stat().st_mtime_ns == mtimes[names[0]]  # finished shards untouched
    again = read_shard(out / names[1])
    assert len(again) > 10
    import json

    runs = json.loads((out / "collection.json").read_text())["runs"]
    assert [r["written"] for r in runs] == [2, 1]  # a resumed run keeps the first run's record

    # Resuming with another expert would mix two label sets in one folder: refused, naming the field.
    from dataclasses import replace

    from liquid_control.simulation.expert import ExpertConfig

    other = replace(config, expert=ExpertConfig(chase_forward_gain=1.6))
    with pytest.raises(ValueError, match="another expert.*chase_forward_gain: 0.8 -> 1.6"):
        collect(str(tiny_suite), out, workers=1, base_seed=10, config=other, progress=False)
    assert len(json.loads((out / "collection.json").read_text())["runs"]) == 2  # nothing flown or recorded


def test_collect_cli(tmp_path, tiny_suite, capsys):
    out = tmp_path / "cli"
    code = cli_main(["collect", "--suite", str(tiny_suite), "--episodes", "1", "--out", str(out), "--size", "12x16",
                     "--duration", "0.5", "--no-progress"])
    assert code == 0 and "collected 1 episodes" in capsys.readouterr().out
    assert len(list_shards(out)) == 1
    assert cli_main(["collect", "--suite", "no_such_suite", "--out", str(out), "--no-progress"]) == 2
    assert "no_such_suite" in capsys.readouterr().err
    assert cli_main(["collect", "--suite", str(tiny_suite), "--out", str(out), "--workers", "0"]) == 2
    for bad in ("1.5", "-0.1", "nan"):
        capsys.readouterr()
        assert cli_main(["collect", "--suite", str(tiny_suite), "--out", str(tmp_path / "d"), "--decoy-fraction", bad,
                         "--no-progress"]) == 2
        assert "decoy_fraction must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() or not list_shards(tmp_path / "d")  # nothing flown
    with pytest.raises(SystemExit):
        cli_main(["collect", "--out", str(out), "--size", "12by16"])
    # --set picks the labelling expert; a folder another expert labelled is refused, a bad field named.
    stiff = ["collect", "--suite", str(tiny_suite), "--episodes", "1", "--size", "12x16", "--duration", "0.5",
             "--no-progress", "--set", "chase_forward_gain=1.6"]
    capsys.readouterr()
    assert cli_main(stiff + ["--out", str(out)]) == 2 and "another expert" in capsys.readouterr().err
    assert cli_main(stiff + ["--out", str(tmp_path / "stiff")]) == 0
    assert read_shard(list_shards(tmp_path / "stiff")[0]).meta["expert"]["chase_forward_gain"] == 1.6
    assert cli_main(stiff + ["--out", str(tmp_path / "x"), "--set", "no_such_gain=1"]) == 2
    assert "no_such_gain" in capsys.readouterr().err


def test_dagger_episode_flies_the_policy_and_stores_expert_labels(tmp_path, repo_root):
    import torch

    from liquid_control.learning.recipe import load_config
    from liquid_control.learning.train import build_models
    from liquid_control.models import save_model

    torch.manual_seed(0)
    perception, policy = build_models(load_config(repo_root / "config" / "train_tiny.yaml"))
    with torch.no_grad():
        policy.readout.bias.copy_(torch.tensor([-0.5, 0.0, 0.0, -0.5]))  # backs away and turns: not the expert
    model = save_model(tmp_path / "p.safetensors", policy=policy, perception=perception)
    config = CollectConfig(height=12, width=16, duration_s=1.0, policy_path=str(model))
    episode = collect_episode(load_scenario("train_fly_to_target"), 5, config)
    assert episode.meta["controller"] == "dagger"
    assert np.abs(episode.commands - episode.labels).max() > 0.3
    assert episode.labels[:, 0].mean() > 0.2  # the expert wants to approach the target ahead
