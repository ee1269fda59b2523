"""`liquid-control explain`: saliency concentrates where the model looks; the command's outputs; bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import bag_fixtures as bf
from liquid_control import cli
from liquid_control.analysis.saliency import integrated_gradients, mass_stats, replay_policy, visual_backprop
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
from liquid_control.models.policy import PolicyConfig, PolicyModel

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "default_cfc.safetensors"


class TopLeftOnly(FeatureExtractor):
    """A FeatureExtractor that sees only the top-left quadrant: every other pixel is replaced by
    mid-grey (0.5, which the trunk's input scaling maps to 0) before the trunk, so the features,
    and so the policy's command, depend on that quadrant alone."""

    def __init__(self, config: PerceptionConfig) -> None:
        super().__init__(config)
        mask = torch.zeros(1, 1, config.height, config.width)
        mask[..., : config.height // 2, : config.width // 2] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        with torch.no_grad():  # no biases: zero input gives zero activations, as a blank region should
            for module in self.trunk:
                if isinstance(module, torch.nn.Conv2d):
                    module.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images * self.mask + 0.5 * (1.0 - self.mask))


def test_saliency_mass_concentrates_in_the_only_region_the_model_uses():
    torch.manual_seed(0)
    config = PerceptionConfig(height=48, width=64, conv_channels=(8, 16, 16), keypoints=4, feature_size=32)
    perception = TopLeftOnly(config).eval()
    policy = PolicyModel(PolicyConfig()).eval()
    region = np.zeros((48, 64), dtype=bool)
    region[:24, :32] = True
    images = torch.rand(3, 3, 48, 64)
    # the command really depends on the quadrant only: changing everything else changes nothing
    changed = images.clone()
    changed[..., 24:, :] = torch.rand_like(changed[..., 24:, :])
    changed[..., :24, 32:] = 0.0
    with torch.no_grad():
        state = policy.initial_state(3)
        assert torch.allclose(policy.step(perception(images), state, torch.ones(3, 1))[0],
                              policy.step(perception(changed), state, torch.ones(3, 1))[0])
    replay = replay_policy(perception, policy, images, [0.0, 1 / 30, 2 / 30])
    vbp = visual_backprop(perception, images).numpy()
    ig, attributions = integrated_gradients(perception, policy, images, replay.states_before,
                                            torch.ones(3, 1), steps=16)
    assert vbp.shape == ig.shape == (3, 48, 64)
    assert vbp.min() >= 0 and vbp.max() == pytest.approx(1.0)
    for name, maps in (("vbp", vbp), ("ig", ig.numpy())):
        for k in range(3):
            share = mass_stats(maps[k], region)["region_mass"]
            assert share > 0.8, f"{name} frame {k}: only {share:.0%} of the saliency in the quadrant"
    # control: the same weights without the mask spread their saliency over the whole image
    plain = FeatureExtractor(config).eval()
    plain.load_state_dict(perception.state_dict())
    plain_vbp = visual_backprop(plain, images).numpy()
    plain_ig = integrated_gradients(plain, policy, images, replay.states_before, torch.ones(3, 1), steps=16)[0]
    for maps in (plain_vbp, plain_ig.numpy()):
        assert max(mass_stats(maps[k], region)["region_mass"] for k in range(3)) < 0.5
    # integrated gradients: nothing outside the quadrant at all, and completeness holds roughly
    assert attributions[..., 24:, :].abs().max() == 0 and attributions[..., :24, 32:].abs().max() == 0
    with torch.no_grad():
        spans = torch.ones(3, 1)
        delta = (policy.step(perception(images), replay.states_before, spans)[0].norm(dim=1)
                 - policy.step(perception(torch.zeros_like(images)), replay.states_before, spans)[0].norm(dim=1))
    assert torch.allclose(attributions.sum(dim=(1, 2, 3)), delta, atol=0.05 * float(delta.abs().max()) + 1e-3)


def test_replay_matches_the_policy_sequence_forward():
    torch.manual_seed(1)
    perception = FeatureExtractor(PerceptionConfig(height=24, width=32, conv_channels=(8, 8), keypoints=4)).eval()
    policy = PolicyModel(PolicyConfig()).eval()
    images = torch.rand(5, 3, 24, 32)
    times = [0.0, 1 / 30, 3 / 30, 4 / 30, 4 / 30]  # a dropped frame, then a stamp that does not advance
    replay = replay_policy(perception, policy, images, times)
    np.testing.assert_allclose(replay.timespans, [1, 1, 2, 1, 0], atol=1e-9)
    with torch.no_grad():
        commands, state = policy(perception(images)[None], torch.tensor(replay.timespans, dtype=torch.float32)[None])
    np.testing.assert_allclose(replay.commands, commands[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(replay.states[-1], state[0].numpy(), atol=1e-5)
    assert replay.states.shape == (5, policy.state_size)


def _check_outputs(out: Path, frames: int, methods: list[str], video: bool = True) -> dict:
    strip = cv2.imread(str(out / "saliency_strip.png"))
    assert strip is not None and strip.shape[0] > 0
    traces = cv2.imread(str(out / "neuron_traces.png"))
    assert traces is not None and traces.shape[1] > 100
    report = json.loads((out / "explain.json").read_text())
    assert report["methods"] == methods and len(report["strip_frames"]) == min(frames, report["frames"])
    assert len(report["per_frame"]) == report["frames"]
    assert all(name in report["per_frame"][0] for name in methods)
    if video:
        capture = cv2.VideoCapture(str(out / "saliency.mp4"))
        ok, first = capture.read()
        capture.release()
        assert ok and first.shape[1] > first.shape[0]
    return report


@pytest.mark.timeout(120)
def test_explain_a_short_episode_with_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "episode"
    assert cli.main(["explain", "--model", str(SHIPPED), "--scenario", "train_fly_to_target", "--seed", "1000000",
                     "--duration", "0.7", "--frames", "4", "--method", "vbp", "--backend", "torch",
                     "--out", str(out), "--no-progress"]) == 0
    report = _check_outputs(out, 4, ["vbp"])
    assert report["source"]["scenario"] == "train_fly_to_target" and report["frames"] >= 4
    # the torch replay reproduces the commands the deployed runtime flew
    assert report["replay_vs_closed_loop_max_abs_command_diff"] < 1e-4
    assert "strip" in capsys.readouterr().out


def test_explain_a_small_bag_with_the_shipped_model(tmp_path):
    bag = bf.write_rosbags_bag(tmp_path / "bag", bf.standard_entries(n=6, height=60, width=80))
    out = tmp_path / "from_bag"
    assert cli.main(["explain", "--model", str(SHIPPED), "--bag", str(bag), "--frames", "4", "--ig-steps", "4",
                     "--out", str(out), "--no-progress"]) == 0
    report = _check_outputs(out, 4, ["vbp", "ig"])
    assert report["source"]["image_topic"] == "/camera/image_raw" and report["frames"] == 6
    assert [f["timespan"] for f in report["per_frame"]] == pytest.approx([1.0] + [0.99] * 5)  # 33 ms stamps


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a model at all")
    not_a_bag = tmp_path / "not_a_bag"
    not_a_bag.mkdir()
    (not_a_bag / "x.mcap").write_bytes(b"garbage")
    base = ["explain", "--out", str(tmp_path / "out"), "--no-progress"]
    cases = [
        (["--model", str(tmp_path / "missing.safetensors"), "--scenario", "train_fly_to_target"], "no such file"),
        (["--model", str(corrupt), "--scenario", "train_fly_to_target"], "corrupt.safetensors"),
        (["--model", str(SHIPPED), "--scenario", "no_such_scenario"], "no_such_scenario"),
        (["--model", str(SHIPPED), "--bag", str(tmp_path / "missing_bag")], "does not exist"),
        (["--model", str(SHIPPED), "--bag", str(not_a_bag)], "not_a_bag"),
        (["--model", str(SHIPPED), "--scenario", "train_fly_to_target", "--frames", "0"], "--frames"),
    ]
    for args, needle in cases:
        assert cli.main(base + args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:  # neither or both sources: argparse's usage error, also 2
        cli.main(base + ["--model", str(SHIPPED)])
    assert exit_info.value.code == 2
