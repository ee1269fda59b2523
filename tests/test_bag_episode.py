"""Recording a simulated episode straight to a bag (no ROS): read back, independent readers, evaluate-bag."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import bag_fixtures as bf
from liquid_control import cli
from liquid_control.bags import BagError
from liquid_control.bags.episode import EpisodeBagRecorder, RecordingController
from liquid_control.bags.reader import BagReader
from liquid_control.bags.writer import mcap_has_footer

FRAME_PERIOD_S = 1 / 30


def yaw_quaternion(yaw: float) -> list[float]:
    return [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]


def test_episode_bag_reads_back(tmp_path):
    bag = tmp_path / "episode"
    images = [bf.random_rgb(48, 64, seed=k) for k in range(5)]
    commands = [np.array([0.5, -0.1 * k, 0.2, 0.3 - 0.1 * k]) for k in range(5)]
    with EpisodeBagRecorder(bag) as recorder:
        for k in range(5):
            recorder.image(k * FRAME_PERIOD_S, images[k])
            # Facing +y (yaw 90 deg) while moving along world +x: the body sees the motion on its right (-y).
            recorder.odometry(k * FRAME_PERIOD_S + 0.002, [1.0, 2.0 + k, 3.0], yaw_quaternion(math.pi / 2),
                              [1.0, 0.0, 0.5], [0.0, 0.0, 0.25])
            recorder.command(k * FRAME_PERIOD_S + 0.003, commands[k])
    assert mcap_has_footer(next(bag.glob("*.mcap")))

    with BagReader(bag) as reader:
        assert (reader.image_topic, reader.command_topic) == ("/camera/image_raw", "/cmd_vel")  # auto-detected
        frames = list(reader.images())
        samples = list(reader.commands())
        odometry = [reader.deserialize(raw) for raw in reader.messages(["/odom"])]
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, images[k])
        assert frame.encoding == "rgb8" and frame.stamp_ns == round(k * FRAME_PERIOD_S * 1e9)
    np.testing.assert_allclose([s.command for s in samples], commands)
    assert [s.stamp_ns for s in samples] == [round((k * FRAME_PERIOD_S + 0.003) * 1e9) for k in range(5)]
    assert len(odometry) == 5
    last = odometry[-1]
    assert (last.header.frame_id, last.child_frame_id) == ("odom", "base_link")
    assert (last.pose.pose.position.x, last.pose.pose.position.y) == (1.0, 6.0)
    twist = last.twist.twist
    np.testing.assert_allclose([twist.linear.x, twist.linear.y, twist.linear.z], [0.0, -1.0, 0.5], atol=1e-12)
    assert twist.angular.z == 0.25

    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:  # rosbags checks every type hash against the stored definitions
        types = {c.topic: c.msgtype for c in reader.connections}
        assert reader.message_count == 15
    assert types == {"/camera/image_raw": "sensor_msgs/msg/Image", "/cmd_vel": "geometry_msgs/msg/TwistStamped",
                     "/odom": "nav_msgs/msg/Odometry"}
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(next(bag.glob("*.mcap")), "rb") as handle:  # a reader that is not rosbags
        headers = [m.header.frame_id for _, channel, _, m in make_reader(
            handle, decoder_factories=[DecoderFactory()]).iter_decoded_messages() if channel.topic == "/cmd_vel"]
    assert headers == ["base_link"] * 5


@pytest.mark.parametrize("call, message", [
    (lambda r: r.image(0.0, np.zeros((4, 4, 3), np.float32)), "uint8 RGB"),
    (lambda r: r.image(0.0, np.zeros((4, 4), np.uint8)), r"\(H, W, 3\)"),
    (lambda r: r.image(-1.0, np.zeros((4, 4, 3), np.uint8)), "non-negative"),
    (lambda r: r.command(float("nan"), [0, 0, 0, 0]), "finite"),
    (lambda r: r.command(0.0, [0, 0, 0]), r"command \[vx, vy, vz, yaw_rate\] must be 4 finite"),
    (lambda r: r.command(0.0, [0, 0, float("inf"), 0]), "4 finite"),
    (lambda r: r.odometry(0.0, [0, 0, 0], [0, 0, 0, 0], [0, 0, 0]), "unit quaternion"),
    (lambda r: r.odometry(0.0, [0, 0], [0, 0, 0, 1], [0, 0, 0]), "position must be 3"),
])
def test_bad_input_is_named(tmp_path, call, message):
    with EpisodeBagRecorder(tmp_path / "bad") as recorder:
        with pytest.raises(BagError, match=message):
            call(recorder)
    with pytest.raises(BagError, match="already exists"):
        EpisodeBagRecorder(tmp_path / "bad")


class ScriptedController:
    """Steps a known command sequence (yaw rate = step index / 100)."""

    def reset(self, spec) -> None:
        self.steps = 0

    def act(self, observation) -> np.ndarray:
        self.steps += 1
        return np.array([0.3, 0.0, 0.1, self.steps / 100])


def test_recorded_simulated_episode_evaluates(tmp_path, capsys):
    """A real (short) simulated episode through RecordingController, then `liquid-control evaluate-bag` on it."""
    from node_helpers import save_tiny_model

    from liquid_control.simulation.episode import EpisodeConfig, run_episode
    from liquid_control.simulation.scenario import load_scenario

    bag = tmp_path / "flight"
    with EpisodeBagRecorder(bag) as recorder:
        result = run_episode((load_scenario("train_fly_to_target"), 3), RecordingController(ScriptedController(),
                                                                                             recorder),
                             config=EpisodeConfig(duration_s=1.0, keep_frames=True))
    steps = len(result.times_s)
    delivered = {f.seq: f for f in result.frames if f is not None}
    with BagReader(bag) as reader:
        frames = list(reader.images())
        samples = list(reader.commands())
        odometry = [reader.deserialize(raw) for raw in reader.messages(["/odom"])]
    assert len(frames) == len(delivered) > 20 and len(samples) == len(odometry) == steps
    for frame, original in zip(frames, sorted(delivered.values(), key=lambda f: f.seq)):
        np.testing.assert_array_equal(frame.image, original.image)
        assert frame.stamp_ns == round(original.capture_time_s * 1e9)
    np.testing.assert_allclose([s.command[3] for s in samples], np.arange(1, steps + 1) / 100)
    np.testing.assert_allclose([o.pose.pose.position.z for o in odometry], result.positions[:, 2])

    model = save_tiny_model(tmp_path / "model.safetensors")
    out = tmp_path / "evaluation"
    assert cli.main(["evaluate-bag", str(bag), "--model", str(model), "-o", str(out), "--backend", "torch"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == report["matched_frames"] == len(frames)
    assert "yaw_rate" in capsys.readouterr().out
