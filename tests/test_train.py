"""Augmentation, the recipe loader, the TBPTT stream sampler, and a short training run that learns."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch

from liquid_control.learning.augment import (AugmentConfig, Photometric, apply_photometric, drop_mask, jitter_times,
                                             sample_photometric, timespans)
from liquid_control.learning.dataset import EpisodeData, shard_name, write_shard
from liquid_control import cli
from liquid_control.config import ConfigError
from liquid_control.learning.recipe import load_config
from liquid_control.learning.sampler import StreamSampler, prefetched
from liquid_control.learning.dataset import load_episodes
from liquid_control.learning.sampler import motion_loss
from liquid_control.learning.train import (_to_tensor_images, aux_heads, build_models, evaluate_loss, mean_command_loss,
                                           recipe_sampler, stalled, train)
from liquid_control.models import load_model

PERIOD = 1.0 / 30.0


# --------------------------------------------------------------------------- augmentation
def test_photometric_keeps_dtype_range_and_is_seeded():
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 16, 3), dtype=np.uint8)
    config = AugmentConfig(brightness=0.5, contrast=(0.2, 3.0), saturation=(0.0, 2.0), noise_std_max=40.0)
    a = apply_photometric(images, sample_photometric(config, np.random.default_rng(7)), np.random.default_rng(8))
    b = apply_photometric(images, sample_photometric(config, np.random.default_rng(7)), np.random.default_rng(8))
    c = apply_photometric(images, sample_photometric(config, np.random.default_rng(9)), np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255 and (a == 255).any()  # extreme draws saturate, not wrap around


def test_photometric_known_answers():
    rng = np.random.default_rng(0)
    images = np.full((2, 4, 4, 3), 100, np.uint8)
    images[:, :, :, 0] = 200  # reddish
    same = apply_photometric(images, Photometric(0.0, 1.0, 1.0, 0.0), rng)
    np.testing.assert_array_equal(same, images)  # identity draw changes nothing
    brighter = apply_photometric(images, Photometric(20.0, 1.0, 1.0, 0.0), rng)
    np.testing.assert_array_equal(brighter.astype(int), images.astype(int) + 20)
    grey = apply_photometric(images, Photometric(0.0, 1.0, 0.0, 0.0), rng)
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 100)
    assert (grey == luma).all()  # saturation 0: every channel equals the luma
    flat = apply_photometric(images, Photometric(0.0, 0.0, 1.0, 0.0), rng)
    assert (flat == flat[0, 0, 0, 0]).all()  # contrast 0: each frame becomes its mean
    with pytest.raises(ValueError, match="uint8"):
        apply_photometric(images.astype(np.float32), Photometric(0, 1, 1, 0), rng)


def test_channel_gain_scales_each_channel_and_is_off_by_default():
    rng = np.random.default_rng(0)
    images = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
    cast = apply_photometric(images, Photometric(0.0, 1.0, 1.0, 0.0, (1.2, 0.5, 1.0)), rng)
    assert cast[..., 0].max() == cast[..., 0].min() == 120 and (cast[..., 1] == 50).all() and (cast[..., 2] == 100).all()
    assert sample_photometric(AugmentConfig(), np.random.default_rng(1)).channel_gain == (1.0, 1.0, 1.0)
    gains = [sample_photometric(AugmentConfig(channel_gain=(0.6, 1.5)), np.random.default_rng(k)).channel_gain
             for k in range(20)]
    assert all(0.6 <= g <= 1.5 for draw in gains for g in draw) and len({draw[0] for draw in gains}) == 20
    with pytest.raises(ValueError, match="channel_gain"):
        AugmentConfig(channel_gain=(1.5, 0.6))


def test_frame_drops_and_jitter_give_irregular_but_valid_timespans():
    rng = np.random.default_rng(3)
    keep = drop_mask(10_000, 0.25, rng)
    assert keep[0] and abs(1.0 - keep.mean() - 0.25) < 0.02
    times = np.arange(200) * PERIOD
    jittered = jitter_times(times, 0.01, np.random.default_rng(4))
    assert np.all(np.diff(jittered) > 0) and np.std(jittered - times) > 0.005
    np.testing.assert_array_equal(jittered, jitter_times(times, 0.01, np.random.default_rng(4)))
    spans = timespans(np.array([0.0, 1, 2, 4, 5]) * PERIOD, PERIOD)
    np.testing.assert_allclose(spans, [1, 1, 1, 2, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="frame_drop_prob"):
        AugmentConfig(frame_drop_prob=1.0)


# --------------------------------------------------------------------------- sampler
def _episode(n: int, offset: float = 0.0, gap_at: int | None = None) -> EpisodeData:
    times = np.arange(n, dtype=float) * PERIOD
    if gap_at is not None:
        times[gap_at:] += PERIOD  # one frame missing in the recording
    images = np.zeros((n, 6, 8, 3), np.uint8)
    images[:, :, :, 0] = np.arange(n)[:, None, None]  # frame index in the red channel
    return EpisodeData(images=images, capture_times_s=times + offset,
                       labels=np.tile(np.arange(n, dtype=np.float32)[:, None], (1, 4)))


def test_stream_sampler_walks_episodes_in_chunks_and_carries_time():
    episodes = [_episode(20, gap_at=12)]
    sampler = StreamSampler(episodes, batch_size=1, sequence_length=8, augment=AugmentConfig.none(),
                            frame_period_s=PERIOD, random_start_prob=0.0, rng=np.random.default_rng(0))
    first, second, third = sampler.next_batch(), sampler.next_batch(), sampler.next_batch()
    assert first.reset[0] and not second.reset[0] and not third.reset[0]
    np.testing.assert_array_equal(first.labels[0, :, 0], np.arange(8))
    np.testing.assert_array_equal(second.labels[0, :, 0], np.arange(8, 16))
    np.testing.assert_array_equal(first.images[0, :, 0, 0, 0], np.arange(8))  # images travel with labels
    np.testing.assert_allclose(second.timespans[0, :, 0], [1, 1, 1, 1, 2, 1, 1, 1], rtol=1e-5)  # the gap at 12
    np.testing.assert_array_equal(third.mask[0], [1, 1, 1, 1, 0, 0, 0, 0])  # 4 frames left, then padding
    fourth = sampler.next_batch()
    assert fourth.reset[0] and fourth.timespans[0, 0, 0] == 1.0  # new episode: state reset, first span 1


def test_stream_sampler_drops_frames_and_lengthens_timespans():
    sampler = StreamSampler([_episode(400)], batch_size=2, sequence_length=32,
                            augment=AugmentConfig(frame_drop_prob=0.3, time_jitter_s=0.0, brightness=0.0,
                                                  contrast=(1, 1), saturation=(1, 1), noise_std_max=0.0),
                            frame_period_s=PERIOD, random_start_prob=0.0, rng=np.random.default_rng(1))
    batch = sampler.next_batch()
    spans = batch.timespans[0, 1:, 0]
    gaps = np.diff(batch.labels[0, :, 0])  # labels hold the frame index
    np.testing.assert_allclose(spans, gaps, rtol=1e-5)  # timespan == frames elapsed
    assert spans.max() >= 2.0


def test_prefetched_batches_are_the_same_stream_as_direct_calls():
    def make():
        return StreamSampler([_episode(90), _episode(50)], batch_size=3, sequence_length=8,
                             augment=AugmentConfig(frame_drop_prob=0.2), frame_period_s=PERIOD,
                             random_start_prob=0.5, rng=np.random.default_rng(7))

    direct, ahead = make(), make()
    expected = [direct.next_batch() for _ in range(6)]
    got = list(prefetched(ahead.next_batch, 6))
    assert len(got) == 6
    for a, b in zip(expected, got):
        for field in ("images", "timespans", "labels", "mask", "reset"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # exactly `count` batches drawn: the next one is the 7th of the direct stream
    np.testing.assert_array_equal(direct.next_batch().labels, ahead.next_batch().labels)


# --------------------------------------------------------------------------- recipe
def test_config_errors_name_the_key(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {epochz: 3}\n")
    with pytest.raises(ConfigError, match="optim.*epochz"):
        load_config(bad)
    bad.write_text("optim: {epochs: 0}\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    for text in ("data: {task_weights: {chase: -1}}", "data: {task_weights: {chase: 0}}",
                 "data: {task_weights: {chase: fast}}", "optim: {burn_in_frames: -3}",
                 "dagger: {sample_weight: 0}", "optim: {warmup_epochs: -1}", "optim: {epochs: 2, warmup_epochs: 3}",
                 "optim: {stall_check_epoch: -1}", "optim: {stall_ratio: 0}", "optim: {stall_ratio: .nan}",
                 "optim: {max_restarts: -1}"):
        bad.write_text(text + "\n")
        with pytest.raises(ConfigError, match="task_weights|burn_in_frames|sample_weight|warmup_epochs|stall_|"
                                              "max_restarts"):
            load_config(bad)
    config = load_config(repo_root / "config" / "train_cfc.yaml", {"optim.epochs": 2, "selection.from_epoch": 2})
    assert config.optim.epochs == 2 and config.model.kind == "cfc"


def test_a_recipe_extends_another_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\noptim: {epochs: 5, batch_size: 4}\n"
                                        "model: {kind: cfc, perception: {height: 24, width: 32}}\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\nmodel: {perception: {height: 48}}\n")
    (tmp_path / "leaf.yaml").write_text("extends: mid.yaml\nname: leaf\noptim: {epochs: 2}\n")
    config = load_config(tmp_path / "leaf.yaml", {"optim.batch_size": 8})
    assert config.name == "leaf" and config.optim.epochs == 2 and config.optim.batch_size == 8
    assert config.model.kind == "cfc" and config.model.perception == {"height": 48, "width": 32}
    assert load_config(tmp_path / "base.yaml").model.perception == {"height": 24, "width": 32}  # base unchanged


@pytest.mark.parametrize("files, match", [
    ({"a.yaml": "extends: a.yaml\n"}, "circular extends"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "circular extends"),
    ({"a.yaml": "extends: nowhere.yaml\n"}, "nowhere.yaml does not exist"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "extends must name another recipe file"),
    ({"a.yaml": "extends: ''\n"}, "extends must name another recipe file"),
    ({"a.yaml": "extends: \"b\\0.yaml\"\n"}, "extends"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "- 1\n"}, "b.yaml: the top level must be a mapping"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "optim: {epochz: 1}\n"}, r"a.yaml \(extends b.yaml\).optim.*epochz"),
    ({f"r{k}.yaml": f"extends: r{k + 1}.yaml\n" for k in range(12)} | {"r12.yaml": "name: end\n"}, "longer than"),
])
def test_bad_extends_is_a_clear_error(tmp_path, capsys, files, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    first = tmp_path / next(iter(files))
    with pytest.raises(ConfigError, match=match):
        load_config(first)
    assert cli.main(["train", "--config", str(first), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(match, err) and "Traceback" not in err


def test_baseline_recipes_have_equal_budgets_and_the_same_recipe(repo_root):
    from liquid_control.models import count_trainable

    names = ("cfc", "lstm", "gru", "mlp", "lstm_time", "gru_time")
    configs = {k: load_config(repo_root / "config" / f"train_{k}.yaml") for k in names}
    counts = {}
    for name, config in configs.items():
        kind = name.removesuffix("_time")
        assert config.model.kind == kind
        assert config.model.policy == ({"rnn_time_input": True} if name.endswith("_time") else {})
        counts[name] = count_trainable(build_models(config)[1])
        # Same data, optimiser and augmentation as the CfC recipe.
        assert config.data == configs["cfc"].data and config.optim == configs["cfc"].optim
        assert config.augment == configs["cfc"].augment and config.dagger == configs["cfc"].dagger
        assert config.expert == configs["cfc"].expert and config.selection == configs["cfc"].selection
        assert config.model.perception == configs["cfc"].model.perception
    assert all(19_000 <= c <= 21_000 for c in counts.values()), counts


# --------------------------------------------------------------------------- training
def _synthetic_shards(directory, episodes: int = 6, frames: int = 40) -> None:
    """A red square whose horizontal position sets the yaw-rate label (left -> turn left): learnable."""
    rng = np.random.default_rng(0)
    for e in range(episodes):
        positions = np.clip(np.cumsum(rng.normal(0, 1.5, frames)) + rng.uniform(4, 28), 2, 28).astype(int)
        images = np.full((frames, 24, 32, 3), (60, 120, 60), np.uint8)
        labels = np.zeros((frames, 4), np.float32)
        for k, x in enumerate(positions):
            images[k, 9:15, x - 2:x + 2] = (220, 30, 30)
            labels[k, 3] = 1.2 * (16 - x) / 14  # bearing -> yaw rate (rad/s)
            labels[k, 0] = 0.5
        write_shard(directory / shard_name("synthetic", e),
                    EpisodeData(images=images, capture_times_s=np.arange(frames) * PERIOD, labels=labels))


def test_short_training_lowers_the_loss_and_writes_everything(tmp_path, repo_root):
    data = tmp_path / "data"
    _synthetic_shards(data)
    overrides = {"data.sources": [str(data)], "data.collect": None, "optim.epochs": 10, "optim.threads": 1,
                 "output.model": str(tmp_path / "tiny.safetensors"), "output.run_dir": str(tmp_path / "run"),
                 "data.validation_fraction": 0.34}
    config = load_config(repo_root / "config" / "train_tiny.yaml", overrides)
    torch.manual_seed(config.seed)  # train() seeds the same way before building, so this is its start point
    perception, policy = build_models(config)
    from liquid_control.learning.dataset import load_episodes, split_episodes

    _, val = split_episodes(load_episodes([data], 24, 32), 0.34, config.seed)
    before = evaluate_loss(perception, policy, val, PERIOD, policy.command_scale)

    result = train(config, progress=False)
    assert result.best_val_loss < 0.5 * before, (before, result.history)
    bundle = load_model(result.model_path)
    assert bundle.policy is not None and bundle.perception is not None
    assert bundle.training["best_epoch"] == result.best_epoch
    assert bundle.training["recipe"]["name"] == "tiny_cfc"
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert len(rows) == 10 and {"epoch", "train_loss", "val_loss", "learning_rate"} <= set(rows[0])
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000

    # Reproducible from the seed: one more run with the same seed gives the same first epoch.
    config2 = load_config(repo_root / "config" / "train_tiny.yaml",
                          {**overrides, "optim.epochs": 1, "output.model": str(tmp_path / "again.safetensors"),
                           "output.run_dir": str(tmp_path / "run2")})
    again = train(config2, progress=False)
    first = load_config(repo_root / "config" / "train_tiny.yaml", {**overrides, "optim.epochs": 1,
                        "output.model": str(tmp_path / "third.safetensors"), "output.run_dir": str(tmp_path / "r3")})
    third = train(first, progress=False)
    assert again.history[0]["train_loss"] == pytest.approx(third.history[0]["train_loss"], rel=1e-6)


def test_warmup_ramps_the_learning_rate_then_joins_the_cosine(tmp_path, repo_root):
    data = tmp_path / "data"
    _synthetic_shards(data, episodes=3, frames=30)
    rates = {}
    for warmup in (0.0, 2.0):
        overrides = {"data.sources": [str(data)], "data.collect": None, "optim.epochs": 3, "optim.threads": 1,
                     "optim.warmup_epochs": warmup, "output.model": str(tmp_path / f"w{warmup}.safetensors"),
                     "output.run_dir": str(tmp_path / f"run{warmup}"), "data.validation_fraction": 0.34}
        result = train(load_config(repo_root / "config" / "train_tiny.yaml", overrides), progress=False)
        rates[warmup] = [row["learning_rate"] for row in result.history]
    # Logged at each epoch's end, after epoch x N steps: (N + 1) / 2N of the way up the ramp after epoch 1
    # of 2, then the plain cosine.
    assert 0.5 * rates[0.0][0] < rates[2.0][0] < 0.9 * rates[0.0][0]
    assert rates[2.0][1:] == pytest.approx(rates[0.0][1:], rel=1e-6)


def test_mean_command_loss_is_the_scaled_error_of_the_training_mean():
    def episode(labels):
        labels = np.asarray(labels, dtype=np.float32)
        return EpisodeData(images=np.zeros((len(labels), 2, 2, 3), np.uint8),
                           capture_times_s=np.arange(len(labels), dtype=float), labels=labels)

    train_set = [episode([[1, 0, 0, 0], [3, 0, 0, 0]]), episode([[2, 4, 0, 0]])]  # mean (2, 4/3, 0, 0)
    val_set = [episode([[4, 4 / 3, 0, 0]]), episode([[2, 4 / 3, 0, 2]])]
    # frame 1: ((4-2)/2)^2 / 4 = 0.25; frame 2: (2/1)^2 / 4 = 1.0 (scale 2 on x, 1 on yaw rate)
    assert mean_command_loss(train_set, val_set, np.array([2.0, 1.0, 1.0, 1.0])) == pytest.approx(0.625)


def test_a_stall_is_judged_by_the_best_validation_loss_so_far():
    # Two real runs (docs/RESULTS.md, round 9): a seed on the plateau, and one whose second epoch was noisy.
    assert stalled([0.0811, 0.0810], plateau=0.0803, ratio=0.8)
    assert not stalled([0.0542, 0.0626], plateau=0.0747, ratio=0.8)
    assert not stalled([0.0813, 0.0600], plateau=0.0816, ratio=0.8)


def test_a_stalled_run_restarts_from_new_weights(tmp_path, repo_root, capsys):
    data = tmp_path / "data"
    _synthetic_shards(data, episodes=3, frames=30)
    results = {}
    for ratio in (1.0, 0.001):  # 1.0: no check (epoch 0); 0.001: any loss is a stall, every restart happens
        overrides = {"data.sources": [str(data)], "data.collect": None, "optim.epochs": 2, "optim.threads": 1,
                     "optim.stall_check_epoch": int(ratio < 1), "optim.stall_ratio": ratio, "optim.max_restarts": 2,
                     "output.model": str(tmp_path / f"s{ratio}.safetensors"), "output.run_dir": str(tmp_path / f"r{ratio}"),
                     "data.validation_fraction": 0.34}
        results[ratio] = train(load_config(repo_root / "config" / "train_tiny.yaml", overrides), progress=False)
    log = capsys.readouterr().err
    assert results[1.0].restarts == 0 and results[0.001].restarts == 2 and log.count("stalled; restart") == 2
    assert "restart 2 of at most 2" in log
    # The kept run is the last attempt: its own two epochs, from other initial weights than the first.
    assert [row["epoch"] for row in results[0.001].history] == [1, 2]
    assert results[0.001].history[0]["train_loss"] != pytest.approx(results[1.0].history[0]["train_loss"], rel=1e-6)
    assert load_model(results[0.001].model_path).policy is not None
    # The checkpoint remembers the restarts, so a resumed run does not start over again.
    saved = torch.load(tmp_path / "r0.001" / "checkpoint.pt", weights_only=True)
    assert saved["restarts"] == 2


def test_rollout_is_forward_with_every_state(repo_root):
    _, policy = build_models(load_config(repo_root / "config" / "train_tiny.yaml"))
    features = torch.randn(2, 5, policy.feature_size)
    spans = torch.rand(2, 5, 1) + 0.5
    commands, final = policy(features, spans)
    rolled, states, last = policy.rollout(features, spans)
    assert states.shape == (2, 5, policy.state_size)
    torch.testing.assert_close(rolled, commands)
    torch.testing.assert_close(states[:, -1], final)
    torch.testing.assert_close(last, final)


def test_the_motion_head_learns_the_target_velocity_from_the_policy_state(tmp_path, repo_root):
    """A target drifting sideways at a constant speed per episode, drawn where its speed says (so one frame
    shows it): after training, the head on the policy state reads the speed far better than before."""
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    frames = 40
    for e in range(6):
        speed = rng.uniform(-1.0, 1.0)
        times = np.arange(frames) * PERIOD
        column = int(round(16 + 10 * speed))
        images = np.full((frames, 24, 32, 3), (60, 120, 60), np.uint8)
        images[:, 9:15, column - 2:column + 2] = (220, 30, 30)
        targets = np.stack([np.full(frames, 4.0), -speed * times, np.ones(frames)], axis=1).astype(np.float32)
        write_shard(data / shard_name("drift", e), EpisodeData(
            images=images, capture_times_s=times, labels=np.tile([0.3, -speed, 0, 0], (frames, 1)).astype(np.float32),
            positions=np.zeros((frames, 3), np.float32), yaws=np.zeros(frames, np.float32), targets=targets))
    overrides = {"data.sources": [str(data)], "data.collect": None, "optim.epochs": 30, "optim.threads": 1,
                 "optim.motion_weight": 1.0, "output.model": str(tmp_path / "m.safetensors"),
                 "output.run_dir": str(tmp_path / "run"), "data.validation_fraction": 0.34}
    config = load_config(repo_root / "config" / "train_tiny.yaml", overrides)
    torch.manual_seed(config.seed)  # train() starts from these weights
    perception, policy = build_models(config)
    heads = aux_heads(config, perception, policy)
    batch = recipe_sampler(config, load_episodes([data], 24, 32), np.random.default_rng(5)).next_batch()

    def motion_error() -> float:
        with torch.no_grad():
            features = perception(_to_tensor_images(batch.images, None)).view(*batch.labels.shape[:2], -1)
            _, states, _ = policy.rollout(features, torch.from_numpy(batch.timespans))
            return float(motion_loss(heads.motion(states), torch.from_numpy(batch.motion),
                                     torch.from_numpy(batch.mask)))

    before = motion_error()
    train(config, progress=False)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert set(saved["aux_head"]) == {"motion.weight", "motion.bias"}  # only the head that was asked for
    perception.load_state_dict(saved["perception"])
    policy.load_state_dict(saved["policy"])
    heads.load_state_dict(saved["aux_head"])
    assert motion_error() < 0.5 * before


def test_train_cli_runs_a_recipe_and_reports_bad_ones(tmp_path, repo_root, capsys):
    from liquid_control.cli import main as cli_main

    data = tmp_path / "data"
    _synthetic_shards(data, episodes=3, frames=20)
    recipe = str(repo_root / "config" / "train_tiny.yaml")
    common = ["--set", f"data.sources=[{data}]", "--set", "data.collect=null", "--set", "optim.epochs=1",
              "--set", f"output.model={tmp_path / 'cli.safetensors'}", "--set", f"output.run_dir={tmp_path / 'run'}",
              "--no-progress"]
    assert cli_main(["train", "--config", recipe, *common]) == 0
    assert "best validation loss" in capsys.readouterr().out
    assert (tmp_path / "cli.safetensors").is_file()
    assert cli_main(["train", "--config", recipe, *common, "--set", "optim.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["train", "--config", recipe, *common, "--set", f"data.sources=[{tmp_path / 'missing'}]"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["train", "--config", recipe, "--set", "optim.epochs"]) == 2


@pytest.mark.parametrize("with_sim_data", [False, True], ids=["bags_alone", "bags_mixed_with_sim_shards"])
def test_train_from_rosbags_alone_or_mixed_with_simulator_shards(tmp_path, repo_root, capsys, with_sim_data):
    """A recorded flight (rosbag2 mcap and sqlite3, Twist commands) trains through the same recipe."""
    import bag_fixtures as bf

    from liquid_control.cli import main as cli_main

    bags = tmp_path / "bags"
    bags.mkdir()
    for k, storage in enumerate(("mcap", "sqlite3")):
        bf.write_rosbags_bag(bags / f"flight_{storage}", bf.standard_entries(n=24, encoding=("rgb8", "bgr8")[k],
                                                                             stamped_commands=bool(k)), storage)
    sources = [str(bags)]
    if with_sim_data:
        _synthetic_shards(tmp_path / "sim", episodes=2, frames=20)
        sources.append(str(tmp_path / "sim"))
    model = tmp_path / "from_bags.safetensors"
    code = cli_main(["train", "--config", str(repo_root / "config" / "train_tiny.yaml"),
                     "--set", f"data.sources=[{', '.join(sources)}]", "--set", "data.collect=null",
                     "--set", "optim.epochs=1", "--set", f"output.model={model}",
                     "--set", f"output.run_dir={tmp_path / 'run'}", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed
    bundle = load_model(model)
    assert bundle.policy is not None and bundle.perception is not None
    # Every bag (and shard) became an episode: "data: N training episodes (...), M validation episodes".
    counts = re.search(r"data: (\d+) training episodes .*?, (\d+) validation episodes", printed.err)
    assert counts and int(counts[1]) + int(counts[2]) == 2 + 2 * with_sim_data, printed.err


def test_init_from_copies_a_model_files_weights_and_refuses_other_networks(tmp_path, repo_root):
    from liquid_control.config import ConfigError
    from liquid_control.learning.train import initialise_from
    from liquid_control.models import save_model

    config = load_config(repo_root / "config" / "train_tiny.yaml")
    torch.manual_seed(1)
    source_perception, source_policy = build_models(config)
    path = tmp_path / "start.safetensors"
    save_model(path, policy=source_policy, perception=source_perception)
    torch.manual_seed(2)
    perception, policy = build_models(config)
    assert not torch.equal(perception.head.weight, source_perception.head.weight)
    initialise_from(perception, policy, str(path))
    for mine, theirs in zip([*perception.parameters(), *policy.parameters()],
                            [*source_perception.parameters(), *source_policy.parameters()]):
        assert torch.equal(mine, theirs)
    wider = load_config(repo_root / "config" / "train_tiny.yaml", {"model.perception.feature_size": 6})
    other_perception, other_policy = build_models(wider)
    with pytest.raises(ConfigError, match="other networks"):
        initialise_from(other_perception, other_policy, str(path))
    with pytest.raises(ConfigError, match="init_from"):
        initialise_from(perception, policy, str(tmp_path / "missing.safetensors"))


def _task_episode(n, task, value):
    images = np.zeros((n, 4, 4, 3), np.uint8)
    return EpisodeData(images=images, capture_times_s=np.arange(n) * PERIOD,
                       labels=np.full((n, 4), value, np.float32), meta={"task": task})


def test_task_weights_shift_sampling_towards_a_task():
    episodes = [_task_episode(50, "chase", 1.0), _task_episode(50, "fly_to_target", 0.0)]

    def chase_fraction(weights):
        sampler = StreamSampler(episodes, 64, 10, AugmentConfig.none(), PERIOD, 0.0, np.random.default_rng(0),
                                task_weights=weights)
        return float(sampler.next_batch().labels[:, 0, 0].mean())

    assert 0.3 < chase_fraction(None) < 0.7
    assert chase_fraction({"chase": 4.0}) > 0.7
    assert chase_fraction({"chase": 0.0}) == 0.0
    episodes[0].meta["dagger_round"] = 1
    sampler = StreamSampler(episodes, 64, 10, AugmentConfig.none(), PERIOD, 0.0, np.random.default_rng(0),
                            dagger_weight=4.0)
    assert float(sampler.next_batch().labels[:, 0, 0].mean()) > 0.7
    with pytest.raises(ValueError, match="no training frame"):
        StreamSampler(episodes, 2, 10, AugmentConfig.none(), PERIOD, 0.0, np.random.default_rng(0),
                      task_weights={"chase": 0.0, "fly_to_target": 0.0})


def test_burn_in_masks_the_first_frames_of_mid_episode_starts_only():
    sampler = StreamSampler([_episode(400)], batch_size=32, sequence_length=8, augment=AugmentConfig.none(),
                            frame_period_s=PERIOD, random_start_prob=0.5, rng=np.random.default_rng(2),
                            burn_in_frames=12)
    first, second = sampler.next_batch(), sampler.next_batch()
    mid_start = first.labels[:, 0, 0] > 0  # labels hold the frame index
    assert mid_start.any() and (~mid_start).any()
    assert (first.mask[mid_start] == 0).all() and (first.mask[~mid_start] == 1).all()
    np.testing.assert_array_equal(second.mask[mid_start][:, :4], 0)  # 12 frames = 8 + 4
    np.testing.assert_array_equal(second.mask[mid_start][:, 4:], 1)
    assert (second.mask[~mid_start] == 1).all()
