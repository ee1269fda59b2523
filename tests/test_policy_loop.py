"""The deploy loop (inference/loop.py) with an injected clock and a fake model: timespans, hold,
watchdog, output checks, arrival guard, missed ticks, diagnostics schedule; its defaults = config/policy.yaml."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from liquid_control.inference.loop import (ARRIVAL_GUARD_S, FIRST_TIMESPAN, PolicyLoop, PolicyLoopConfig,
                                           timespan)

PERIOD = 1.0 / 30.0


class FakePolicy:
    """Records every step; returns a scripted command (default: [timespan, 0, 0, 0])."""

    feature_size = 3
    frame_period_s = PERIOD

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
    return PolicyLoop(PolicyLoopConfig(**config), policy), policy


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
    with pytest.raises(ValueError, match="rate_hz"):
        PolicyLoopConfig(rate_hz=0.0)
    with pytest.raises(ValueError, match="out_of_range"):
        PolicyLoopConfig(out_of_range="ignore")
    with pytest.raises(ValueError, match="min_timespan"):
        PolicyLoopConfig(min_timespan=3.0, max_timespan=2.0)


def test_loop_defaults_are_the_deployed_policy_yaml_and_the_node_parameter_defaults(repo_root):
    """Evaluation builds PolicyLoopConfig() from these defaults: they must be what the node flies."""
    deployed = yaml.safe_load((repo_root / "config" / "policy.yaml").read_text())["policy"]["ros__parameters"]
    defaults = PolicyLoopConfig()
    for name, value in vars(defaults).items():
        assert deployed[name] == value, f"config/policy.yaml {name}={deployed[name]!r}, PolicyLoopConfig {value!r}"
    pytest.importorskip("rclpy")
    from liquid_control.nodes.policy_node import PARAMETERS

    node_defaults = {spec.name: spec.default for spec in PARAMETERS}
    assert PolicyLoopConfig.from_mapping(node_defaults) == defaults


def test_timespan_is_one_rule_for_floats_and_arrays():
    assert timespan(2 * PERIOD, PERIOD) == pytest.approx(2.0) and isinstance(timespan(PERIOD, PERIOD), float)
    assert timespan(10 * PERIOD, PERIOD, 0.25, 4.0) == 4.0 and timespan(0.01 * PERIOD, PERIOD, 0.25, 4.0) == 0.25
    np.testing.assert_allclose(timespan(np.array([1.0, 3.0, 0.5]) * PERIOD, PERIOD), [1.0, 3.0, 0.5])
    with pytest.raises(ValueError, match="frame_period_s"):
        timespan(1.0, 0.0)


def test_fixed_timespan_ablation_replaces_every_timespan():
    policy = FakePolicy()
    loop = PolicyLoop(PolicyLoopConfig(), policy, fixed_timespan=1.5)
    for k, stamp in enumerate([0.0, 3 * PERIOD, 3.1 * PERIOD]):
        loop.on_features(stamp, feats(k), 0.01 * k)
        loop.tick(0.01 * k)
    assert [call[1] for call in policy.calls] == [1.5, 1.5, 1.5]
    with pytest.raises(ValueError, match="fixed_timespan"):
        PolicyLoop(PolicyLoopConfig(), policy, fixed_timespan=math.nan)


def test_frame_arrived_steps_at_once_unless_a_tick_is_imminent():
    loop, policy = make_loop(rate_hz=1.0)
    assert loop.frame_arrived(0.0, feats(0), 0.0).stepped  # no tick seen yet: step at once
    loop.on_timer(99.0, expected_s=99.0)  # next tick due at 100.0 s
    assert loop.frame_arrived(1.0, feats(1), 99.5).stepped
    assert loop.frame_arrived(2.0, feats(2), 100.0 - ARRIVAL_GUARD_S / 2) is None  # imminent: left to the tick
    assert len(policy.calls) == 2
    assert loop.on_timer(100.0, expected_s=100.0).stepped and len(policy.calls) == 3
    assert loop.tick_is_imminent(101.5)  # overdue
    assert not loop.tick_is_imminent(101.0 - 2 * ARRIVAL_GUARD_S)
    at_ticks, policy = make_loop(step_on_arrival=False)
    assert at_ticks.frame_arrived(0.0, feats(0), 0.0) is None and not policy.calls
    assert at_ticks.on_timer(0.01).stepped


def test_missed_ticks_are_counted_from_the_timer_due_times():
    loop, _ = make_loop(rate_hz=10.0)
    for expected in (0.0, 0.1, 0.2, 0.5, 0.6):  # 0.3 and 0.4 were skipped
        loop.on_timer(expected + 0.001, expected_s=expected)
    values = loop.diagnostic_values(0.6)
    assert values["missed_ticks"] == 2 and values["iterations"] == 5
    assert values["lateness_max_ms"] == pytest.approx(1.0)


def test_diagnostics_are_due_once_per_period_and_after_the_clock_jumps_back():
    loop, _ = make_loop(diagnostics_rate_hz=2.0)
    due = [t for t in np.arange(0.0, 2.0, 0.1) if loop.diagnostics_due(float(t))]
    assert due == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert not loop.diagnostics_due(1.2)  # next due at 2.0
    assert loop.diagnostics_due(0.1)  # clock went back by more than two periods (sim reset)


def test_status_latency_and_diagnostic_values():
    loop, _ = make_loop()
    assert loop.status() == (1, "control loop not started yet")
    result = loop.frame_arrived(5.0, feats(1), 5.004)
    loop.command_sent(result, 5.006)
    values = loop.diagnostic_values(5.01)
    assert values["capture_to_command_max_ms"] == pytest.approx(6.0)
    assert values["last_timespan"] == FIRST_TIMESPAN and values["steps"] == 1
    assert loop.status() == (0, "running")
