"""Offline bag evaluation: timespans from stamps, RGB handling, matching, metrics, CLI outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bag_fixtures as bf
from liquid_control import cli
from liquid_control.bags import BagError
from liquid_control.evaluation.bag import (EvaluationConfig, command_metrics, evaluate_bag, match_commands,
                                          replay_images)
from liquid_control.inference.loop import PolicyLoop, PolicyLoopConfig
from liquid_control.inference.pipeline import DeployedPipeline
from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime
from liquid_control.models.model_file import save_model
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
from liquid_control.models.policy import PolicyConfig, PolicyModel

PERIOD_NS = 33_333_333  # 30 Hz, the policy's default nominal frame period
START_NS = 1_800_000_000_000_000_000


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    perception = FeatureExtractor(PerceptionConfig(height=24, width=32, conv_channels=(8, 8), keypoints=4,
                                                   feature_size=32)).eval()
    policy = PolicyModel(PolicyConfig()).eval()
    return save_model(tmp_path_factory.mktemp("model") / "model.safetensors", policy=policy, perception=perception)


def make_bag(path, frame_indices, encodings=("rgb8", "bgr8", "mono8")):
    """Images at the given frame indices (gaps = dropped frames); a command 2 ms after each."""
    entries = []
    for k, index in enumerate(frame_indices):
        stamp = START_NS + index * PERIOD_NS
        msg, expected = bf.image_msg(stamp, bf.random_rgb(30, 41, seed=k), encodings[k % len(encodings)])
        entries.append(bf.Entry("/camera/image_raw", bf.IMAGE, stamp + 5_000_000, msg, expected))
        command = np.array([0.5 + 0.1 * k, -0.2 * k, 0.0, 0.3 * (-1) ** k])
        entries.append(bf.Entry("/cmd_vel", bf.TWIST_STAMPED, stamp + 6_000_000,
                                bf.twist_stamped_msg(stamp + 2_000_000, command), command))
    return bf.write_rosbags_bag(path, entries, "mcap"), entries


def test_evaluation_matches_a_manual_rollout(tmp_path, model_file):
    frames = [0, 1, 2, 3, 4, 6, 7, 8, 11, 12]  # frames 5, 9 and 10 dropped
    bag, entries = make_bag(tmp_path / "bag", frames)
    perception = PerceptionRuntime(model_file, backend="torch")
    policy = PolicyRuntime(model_file, backend="torch")
    evaluation = evaluate_bag(bag, perception, policy)

    expected_spans = np.array([1, 1, 1, 1, 1, 2, 1, 1, 3, 1], float)
    # (stamps pass through float seconds, as in the node: ~1e-7 s at 1.8e9 s)
    np.testing.assert_allclose(evaluation.timespans, expected_spans, atol=1e-4)
    # Same runtimes stepped by hand on the images the fixtures say the bag holds (RGB), clamped as deployed.
    policy.reset()
    limits = EvaluationConfig().loop.limits
    manual = [np.clip(policy.step(perception.features(e.expected, "rgb8"), span), -limits, limits)
              for e, span in zip([e for e in entries if e.msgtype == bf.IMAGE], expected_spans)]
    np.testing.assert_allclose(evaluation.predicted, np.array(manual), rtol=1e-4, atol=1e-5)
    assert evaluation.states == ["running"] * 10
    np.testing.assert_allclose(evaluation.recorded, [e.expected for e in entries if e.msgtype != bf.IMAGE])
    report = evaluation.report()
    assert report["frames"] == report["matched_frames"] == 10 and report["frames_not_stepped"] == 0
    assert report["loop"]["steps"] == 10 and report["loop"]["watchdog_trips"] == 0
    assert report["timespans"]["late_or_dropped_frames"] == 2
    assert report["metrics"]["vx"]["mae"] == pytest.approx(
        np.abs(evaluation.predicted[:, 0] - evaluation.recorded[:, 0]).mean())


def test_command_metrics_known_answers():
    recorded = np.array([[0.0, 1.0, 0.2, 0.5], [1.0, 1.0, 0.2, -0.5], [2.0, 1.0, 0.2, 0.01], [3.0, 1.0, 0.2, 0.3]])
    predicted = recorded + np.array([0.1, -0.2, 0.0, 0.0])
    predicted[:, 3] = [0.4, 0.2, -1.0, 0.3]
    metrics = command_metrics(predicted, recorded, sign_deadband=0.05)
    assert metrics["vx"]["mae"] == pytest.approx(0.1) and metrics["vx"]["rmse"] == pytest.approx(0.1)
    assert metrics["vx"]["correlation"] == pytest.approx(1.0)
    assert metrics["vy"]["mae"] == pytest.approx(0.2) and metrics["vy"]["correlation"] is None  # constant
    assert metrics["vz"]["mae"] == 0.0 and metrics["vz"]["sign_agreement"] == 1.0
    # yaw: 0.01 is inside the deadband; of the other three pairs, two agree in sign.
    assert metrics["yaw_rate"]["signed_pairs"] == 3
    assert metrics["yaw_rate"]["sign_agreement"] == pytest.approx(2 / 3)
    errors = np.array([0.1, -0.7, -1.01, 0.0])
    assert metrics["yaw_rate"]["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        command_metrics(np.zeros((3, 3)), np.zeros((3, 3)))


def test_matching_and_timespans():
    commands = np.arange(12, dtype=float).reshape(3, 4)
    matched = match_commands(np.array([95, 205, 1000]), np.array([100, 200, 300]), commands, max_gap_s=10e-9)
    np.testing.assert_array_equal(matched[:2], commands[:2])
    assert np.isnan(matched[2]).all()  # 700 ns from the nearest command: too far


class IndexPerception:
    """Image whose pixels hold k -> features all k."""

    feature_size = 4

    def features(self, image, encoding):
        return np.full(4, float(image[0, 0, 0]), np.float32)


class RecordingPolicy:
    feature_size, frame_period_s = 4, 1.0 / 30.0

    def __init__(self):
        self.calls, self.resets = [], 0

    def step(self, features, timespan):
        self.calls.append((float(features[0]), timespan))
        return np.array([0.1, 0.0, 0.0, 0.0])

    def reset(self):
        self.resets += 1


def test_replay_ticks_between_images_and_follows_a_bag_that_loops_back():
    """A 0.6 s gap trips the watchdog (hover, fresh state after); stamps jumping back 50 s start a new timeline."""
    period_ns = 33_333_333
    stamps = [START_NS, START_NS + period_ns, START_NS + 20 * period_ns, START_NS - 50 * 10 ** 9,
              START_NS - 50 * 10 ** 9 + 2 * period_ns]
    images = [(stamp, np.full((2, 2, 3), k, np.uint8), "rgb8") for k, stamp in enumerate(stamps)]
    policy = RecordingPolicy()
    pipeline = DeployedPipeline(IndexPerception(), PolicyLoop(PolicyLoopConfig(), policy))
    decisions = replay_images(pipeline, images)
    assert [d.feature_stamp_s for d in decisions] == [s * 1e-9 for s in stamps]  # every image stepped
    assert [round(span, 3) for _, span in policy.calls] == [1.0, 1.0, 1.0, 1.0, 2.0]
    counters = {**pipeline.loop.counters, **pipeline.gate.counts}
    assert counters["watchdog_trips"] == 1 and counters["stamp_went_back"] == 1 and counters["time_jumps_back"] == 1
    assert pipeline.loop.timing.summary(0.0)["iterations"] > 20  # the timer ran through the gap


def test_cli_writes_report_and_plot(tmp_path, model_file, capsys):
    bag, _ = make_bag(tmp_path / "bag", range(8))
    out = tmp_path / "evaluation"
    assert cli.main(["evaluate-bag", str(bag), "--model", str(model_file), "-o", str(out), "--backend", "torch"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 8 and set(report["metrics"]) == {"vx", "vy", "vz", "yaw_rate"}
    assert (out / "commands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "yaw_rate" in capsys.readouterr().out


def test_bad_inputs(tmp_path, model_file, capsys):
    msg, _ = bf.image_msg(START_NS, bf.random_rgb(8, 8), "rgb8")
    no_commands = bf.write_rosbags_bag(tmp_path / "images_only", [bf.Entry("/image", bf.IMAGE, START_NS, msg)])
    assert cli.main(["evaluate-bag", str(no_commands), "--model", str(model_file), "--backend", "torch"]) == 2
    assert "no command topic" in capsys.readouterr().err
    perception = PerceptionRuntime(model_file, backend="torch")
    policy = PolicyRuntime(model_file, backend="torch")
    far = bf.write_rosbags_bag(tmp_path / "far", [
        bf.Entry("/image", bf.IMAGE, START_NS, msg),
        bf.Entry("/cmd_vel", bf.TWIST, START_NS + 5_000_000_000, bf.twist_msg([0, 0, 0, 0]))])
    with pytest.raises(BagError, match="no recorded command.*within 0.1 s"):
        evaluate_bag(far, perception, policy, EvaluationConfig())
    torch.manual_seed(1)
    other = FeatureExtractor(PerceptionConfig(height=24, width=32, conv_channels=(8,), keypoints=4, feature_size=16))
    with pytest.raises(ValueError, match="outputs 16 features but the policy"):
        evaluate_bag(far, PerceptionRuntime(other, backend="torch"), policy)
    with pytest.raises(ValueError, match="max_match_gap_s"):
        EvaluationConfig(max_match_gap_s=0.0)
    capsys.readouterr()
    # No --model: the shipped model loads (as in `demo`) and the evaluation gets as far as the bag allows.
    assert cli.main(["evaluate-bag", str(far), "--backend", "torch"]) == 2
    assert "no recorded command" in capsys.readouterr().err
