"""Policy loop (timespans, hold, watchdog, output checks) and the policy node over DDS."""
from __future__ import annotations

import math

import numpy as np
import pytest

from liquid_control.inference.loop import PolicyLoop, PolicyLoopConfig

PERIOD = 1.0 / 30.0


class FakePolicy:
    """Records every step; returns a scripted command (default: [timespan, 0, 0, 0])."""

    def __init__(self, outputs=None) -> None:
        self.calls: list[tuple[np.ndarray, float]] = []
        self.resets = 0
        self.outputs = list(outputs or [])

    def step(self, features, timespan):
        self.calls.append((np.array(features), timespan))
        if self.outputs:
            out = self.outputs.pop(0)
            if isinstance(out, Exception):
                raise out
            return np.asarray(out, dtype=float)
        return np.array([0.1 * timespan, 0.0, 0.0, 0.0])

    def reset(self):
        self.resets += 1


def make_loop(policy=None, **config):
    policy = policy or FakePolicy()
    cfg = PolicyLoopConfig(frame_period_s=PERIOD, **config)
    return PolicyLoop(cfg, policy.step, policy.reset, feature_size=3), policy


def feats(value: float) -> np.ndarray:
    return np.full(3, value, np.float32)


def test_timespans_follow_feature_stamps_and_are_clipped():
    loop, policy = make_loop(min_timespan=0.25, max_timespan=4.0)
    stamps = [10.0, 10.0 + PERIOD, 10.0 + 3 * PERIOD, 10.0 + 3.05 * PERIOD, 10.0 + 20 * PERIOD]
    for k, stamp in enumerate(stamps):
        loop.on_features(stamp, feats(k), receive_s=0.1 * k)
        result = loop.tick(0.1 * k + 0.01)
        assert result.stepped and result.feature_stamp_s == stamp
    spans = [call[1] for call in policy.calls]
    # first step 1.0; on time 1.0; one dropped frame 2.0; 0.05 -> clipped to 0.25; 17 -> clipped to 4.0
    assert spans == pytest.approx([1.0, 1.0, 2.0, 0.25, 4.0])


def test_holds_last_command_between_frames_without_stepping():
    loop, policy = make_loop()
    loop.on_features(0.0, feats(1), receive_s=0.0)
    first = loop.tick(0.01)
    held = [loop.tick(0.01 + 0.01 * k) for k in range(1, 4)]
    assert len(policy.calls) == 1
    assert all(not r.stepped and np.array_equal(r.command, first.command) for r in held)
    assert first.command[0] == pytest.approx(0.1)


def test_waiting_for_first_features_is_hover_with_warning():
    loop, policy = make_loop()
    result = loop.tick(5.0)
    assert np.array_equal(result.command, np.zeros(4)) and result.level == 1 and result.state == "waiting"
    assert not policy.calls


def test_watchdog_hovers_on_stale_features_and_resets_state_on_recovery():
    loop, policy = make_loop(watchdog_timeout_s=0.5)
    loop.on_features(0.0, feats(1), receive_s=0.0)
    assert loop.tick(0.02).stepped
    assert loop.tick(0.4).level == 0  # 0.4 s old: still holding
    stale = loop.tick(0.6)
    assert stale.level == 2 and stale.state == "stale" and np.array_equal(stale.command, np.zeros(4))
    assert loop.tick(0.9).state == "stale" and loop.counters["watchdog_trips"] == 1
    resets_before = policy.resets
    loop.on_features(1.0, feats(2), receive_s=1.0)
    recovered = loop.tick(1.01)
    assert recovered.stepped and recovered.level == 0
    assert policy.resets == resets_before + 1
    assert policy.calls[-1][1] == 1.0  # fresh start: nominal timespan, not the 30-period gap


def test_non_finite_or_failed_steps_hover_and_out_of_range_is_clamped():
    outputs = [[math.nan, 0, 0, 0], ValueError("policy: features contain NaN"), [5.0, -5.0, 0.2, -9.0]]
    loop, _ = make_loop(FakePolicy(outputs), max_speed_xy_mps=1.0, max_speed_z_mps=0.5, max_yaw_rate_radps=1.0)
    for k in range(3):
        loop.on_features(k * PERIOD, feats(k), receive_s=k * 0.05)
        result = loop.tick(k * 0.05 + 0.01)
        if k < 2:
            assert result.level == 2 and np.array_equal(result.command, np.zeros(4))
    assert result.command.tolist() == [1.0, -1.0, 0.2, -1.0]
    assert loop.counters["rejected_outputs"] == 2 and loop.counters["clamped_outputs"] == 1


def test_out_of_range_hover_mode_rejects_instead_of_clamping():
    loop, _ = make_loop(FakePolicy([[0.5, 0, 0, 0], [3.0, 0, 0, 0]]), out_of_range="hover")
    loop.on_features(0.0, feats(0), 0.0)
    assert loop.tick(0.01).command[0] == 0.5
    loop.on_features(PERIOD, feats(1), 0.05)
    assert np.array_equal(loop.tick(0.06).command, np.zeros(4))


def test_stamp_going_back_restarts_state_and_duplicates_are_ignored():
    loop, policy = make_loop()
    loop.on_features(5.0, feats(0), 0.0)
    loop.tick(0.01)
    loop.on_features(5.0, feats(0), 0.02)  # duplicate frame
    assert not loop.tick(0.03).stepped and loop.counters["duplicate_inputs"] == 1
    loop.on_features(1.0, feats(1), 0.04)  # bag looped / sim reset
    assert loop.tick(0.05).stepped
    assert policy.resets == 1 and policy.calls[-1][1] == 1.0 and loop.counters["stamp_went_back"] == 1


def test_frames_overwritten_before_a_tick_count_as_dropped():
    loop, policy = make_loop()
    for k in range(3):
        loop.on_features(k * PERIOD, feats(k), 0.001 * k)
    loop.tick(0.01)
    assert loop.counters["dropped_inputs"] == 2 and len(policy.calls) == 1
    assert policy.calls[0][0][0] == 2  # the newest frame


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="out_of_range"):
        PolicyLoopConfig(frame_period_s=PERIOD, out_of_range="ignore")
    with pytest.raises(ValueError, match="min_timespan"):
        PolicyLoopConfig(frame_period_s=PERIOD, min_timespan=3.0, max_timespan=2.0)


# ------------------------------------------------------------------ the node over DDS
rclpy = pytest.importorskip("rclpy")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from node_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("policy") / "tiny.safetensors")


@pytest.fixture
def harness():
    from node_helpers import Harness

    h = Harness()
    yield h
    h.close()


def start_policy(harness, model, **params):
    from geometry_msgs.msg import TwistStamped
    from liquid_control.nodes.common import command_qos, sensor_qos
    from liquid_control.nodes.policy_node import PolicyNode
    from node_helpers import overrides
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    node = harness.add(PolicyNode(context=harness.context, parameter_overrides=overrides(
        model_path=str(model), backend="torch", **params)))
    probe = harness.node("policy_probe")
    got = {"cmd": [], "diag": []}
    probe.create_subscription(TwistStamped, "cmd_vel", got["cmd"].append, command_qos())
    probe.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
    publisher = probe.create_publisher(Image, "features", sensor_qos(1))
    harness.spin_until(lambda: publisher.get_subscription_count() > 0 and probe.count_publishers("cmd_vel") > 0,
                       10.0, "policy node discovery")
    return node, probe, publisher, got


def features_message(values: np.ndarray, stamp_s: float):
    from sensor_msgs.msg import Image
    from liquid_control.feature_codec import features_to_payload

    height, width, encoding, step, bigendian, data = features_to_payload(values)
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    return msg


def test_node_steps_on_each_new_frame_with_the_runtime_answer(harness, tiny_model):
    """Distinct commands == an offline PolicyRuntime stepped on the same features with timespan 1."""
    from liquid_control.inference.runtime import PolicyRuntime

    node, probe, publisher, got = start_policy(harness, tiny_model, rate_hz=50.0)
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=8).astype(np.float32) for _ in range(6)]
    for k, values in enumerate(inputs):  # stamps one nominal period apart, sent 0.15 s apart: no drops
        publisher.publish(features_message(values, 100.0 + k * PERIOD))
        harness.spin_for(0.15)
    offline = PolicyRuntime(tiny_model, backend="torch")
    expected = [offline.step(values, 1.0) for values in inputs]
    commands = [(m.twist.linear.x, m.twist.linear.y, m.twist.linear.z, m.twist.angular.z) for m in got["cmd"]]
    distinct = [c for i, c in enumerate(commands) if i == 0 or c != commands[i - 1]]
    distinct = [c for c in distinct if any(c)]  # leading hover while waiting
    assert len(distinct) == len(expected)
    np.testing.assert_allclose(np.array(distinct), np.clip(np.array(expected), -node.loop.config.limits,
                                                           node.loop.config.limits), atol=1e-5)
    assert all(m.header.frame_id == "base_link" for m in got["cmd"])
    assert node.loop.counters["steps"] == len(inputs) and node.loop.counters["dropped_inputs"] == 0


@pytest.mark.parametrize("rate_hz", [30.0, 100.0])
def test_node_publishes_commands_at_the_set_rate(harness, tiny_model, rate_hz):
    node, probe, publisher, got = start_policy(harness, tiny_model, rate_hz=rate_hz)
    harness.spin_for(0.3)
    got["cmd"].clear()
    harness.spin_for(2.0)
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got["cmd"]])
    assert len(stamps) > 1
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    # Loose bound: two shared CPU cores; the benchmark measures lateness properly.
    assert 0.75 * rate_hz < measured < 1.1 * rate_hz


def test_node_watchdog_hovers_then_recovers_with_fresh_state(harness, tiny_model):
    from node_helpers import diagnostic_values

    node, probe, publisher, got = start_policy(harness, tiny_model, rate_hz=50.0, watchdog_timeout_s=0.3,
                                               diagnostics_rate_hz=10.0)
    values = np.linspace(-1, 1, 8).astype(np.float32)
    stamp = 50.0
    for _ in range(5):
        publisher.publish(features_message(values, stamp))
        stamp += PERIOD
        harness.spin_for(0.05)
    assert any(m.twist.linear.x != 0.0 for m in got["cmd"])
    got["cmd"].clear()
    got["diag"].clear()
    harness.spin_for(0.8)  # no features: stale after 0.3 s
    last = got["cmd"][-1].twist
    assert (last.linear.x, last.linear.y, last.linear.z, last.angular.z) == (0.0, 0.0, 0.0, 0.0)
    statuses = [diagnostic_values(a, "policy") for a in got["diag"]]
    assert any(s is not None and s[0] == 2 and "no new features" in s[1] for s in statuses)
    resets = node.loop.counters["state_resets"]
    for _ in range(3):
        publisher.publish(features_message(values, stamp))
        stamp += PERIOD
        harness.spin_for(0.05)
    assert node.loop.counters["state_resets"] == resets + 1
    assert any(m.twist.linear.x != 0.0 for m in got["cmd"][-3:])


def test_node_reset_service_and_bad_feature_messages(harness, tiny_model):
    from std_srvs.srv import Trigger

    node, probe, publisher, got = start_policy(harness, tiny_model, rate_hz=50.0)
    publisher.publish(features_message(np.zeros(5, np.float32), 1.0))  # wrong length
    harness.spin_until(lambda: node.bad_inputs == 1, 5.0, "a bad feature message")
    assert "expects 8" in node.last_error
    bad = features_message(np.zeros(8, np.float32), 1.1)
    bad.encoding = "mono8"
    publisher.publish(bad)
    harness.spin_until(lambda: node.bad_inputs == 2, 5.0, "a second bad feature message")
    assert node.loop.counters["steps"] == 0 and "encoding" in node.last_error
    client = probe.create_client(Trigger, "policy/reset")
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(Trigger.Request())
    harness.spin_until(future.done, 5.0, "reset service")
    assert future.result().success and node.loop.counters["state_resets"] == 1


def test_node_refuses_out_of_range_parameters_and_missing_model(tiny_model, tmp_path):
    from node_helpers import Harness, overrides
    from liquid_control.nodes.common import ParameterError
    from liquid_control.nodes.policy_node import PolicyNode

    h = Harness()
    try:
        with pytest.raises(ParameterError, match="rate_hz"):
            PolicyNode(context=h.context, parameter_overrides=overrides(model_path=str(tiny_model), rate_hz=500.0))
        with pytest.raises(ParameterError, match="cpu_affinity"):
            PolicyNode(context=h.context, parameter_overrides=overrides(model_path=str(tiny_model),
                                                                        cpu_affinity="first"))
        with pytest.raises(ParameterError, match="realtime_priority"):
            PolicyNode(context=h.context, parameter_overrides=overrides(model_path=str(tiny_model),
                                                                        realtime_priority=120))
        with pytest.raises(FileNotFoundError, match="does not exist"):
            PolicyNode(context=h.context, parameter_overrides=overrides(model_path=str(tmp_path / "none.onnx")))
    finally:
        h.close()


def test_step_on_arrival_publishes_without_waiting_for_the_tick(harness, tiny_model):
    """At 1 Hz a tick-stepped command would wait up to 1 s; three in a row within 0.25 s need step_on_arrival."""
    import time

    node, probe, publisher, got = start_policy(harness, tiny_model, rate_hz=1.0, step_on_arrival=True)
    rng = np.random.default_rng(3)
    for k in range(3):
        harness.spin_for(0.35)
        before = len(got["cmd"])
        sent = time.monotonic()
        publisher.publish(features_message(rng.normal(size=8).astype(np.float32), 7.0 + k * PERIOD))
        harness.spin_until(lambda: node.loop.counters["steps"] == k + 1 and len(got["cmd"]) > before, 5.0,
                           "a command")
        assert time.monotonic() - sent < 0.25
    assert node.loop.counters["steps"] == 3


def test_step_on_arrival_leaves_a_frame_to_an_imminent_tick(harness, tiny_model):
    """A frame arriving within ARRIVAL_GUARD_S of the next tick's due time is stepped by that tick, not at once."""
    from liquid_control.nodes.policy_node import ARRIVAL_GUARD_S

    node, probe, publisher, got = start_policy(harness, tiny_model, rate_hz=1.0, step_on_arrival=True)
    assert not node.tick_is_imminent(100.0)  # no tick seen yet: step at once
    node.last_expected_s = 99.0  # next tick due at 100.0 s
    assert node.tick_is_imminent(100.0 - ARRIVAL_GUARD_S / 2)
    assert node.tick_is_imminent(100.5)  # overdue
    assert not node.tick_is_imminent(100.0 - 2 * ARRIVAL_GUARD_S)
    assert not node.tick_is_imminent(99.5)
