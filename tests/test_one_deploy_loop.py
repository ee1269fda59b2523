"""One scripted sequence through the three ways the deploy loop runs: the policy node's calls (frame gate +
PolicyLoop), the closed-loop evaluator's controller and the offline bag evaluator (a real MCAP bag) must
give identical commands, loop states and hidden states. The script has a dropped frame, a frame between
ticks, a NaN feature vector, an out-of-order stamp, a gap longer than 4 periods (timespan clip), outputs
beyond the limits (clamp) and a stale gap longer than the watchdog (hover, then a state reset)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bag_fixtures as bf
from node_helpers import save_tiny_model
from liquid_control.evaluation.bag import evaluate_bag
from liquid_control.evaluation.closed_loop import PolicyController
from liquid_control.inference.frame_gate import FrameGate
from liquid_control.inference.loop import PolicyLoop, PolicyLoopConfig
from liquid_control.inference.runtime import PolicyRuntime
from liquid_control.models.model_file import load_model, save_model
from liquid_control.simulation.drone_world import Frame
from liquid_control.simulation.episode import Observation

PERIOD = 1.0 / 30.0  # the loop's rate_hz and the tiny model's frame period
T0 = 100.0


@pytest.fixture(scope="module")
def fast_model(tmp_path_factory):
    """The tiny node model with a readout bias of 2.5 m/s on vx: beyond the deployed 2 m/s limit, so clamped."""
    path = save_tiny_model(tmp_path_factory.mktemp("parity") / "tiny.safetensors")
    bundle = load_model(path)
    with torch.no_grad():
        bundle.policy.readout.bias[0] += 2.5
    return save_model(path, bundle.policy, bundle.perception)


def script(feature_size: int) -> tuple[list, np.ndarray]:
    """(per tick k at T0 + k * PERIOD: None or (capture stamp, feature row), feature rows)."""
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(40, feature_size)).astype(np.float32)
    rows[5] = np.nan  # bad features: the step fails, hover, state kept
    events: list = [None] * 60
    row = 0

    def frame_at(k: int, stamp: float | None = None) -> None:
        nonlocal row
        events[k] = (T0 + k * PERIOD if stamp is None else stamp, row)
        row += 1

    for k in (0, 1, 2, 4, 5, 6, 7, 8, 9):  # tick 3 dropped: timespan 2
        frame_at(k)
    frame_at(10, T0 + 9.6 * PERIOD)  # captured between ticks, arrives at tick 10
    frame_at(11)
    frame_at(12, T0 + 10.5 * PERIOD)  # older than tick 11's frame: out of order, dropped
    frame_at(18)  # 7 periods since the last step: timespan clipped to 4
    for k in range(19, 22):
        frame_at(k)
    for k in range(40, 46):  # 18 ticks (0.6 s) without frames: stale, then a fresh start
        frame_at(k)
    return events, rows


class ScriptedPerception:
    """An image whose pixels all hold row index r -> feature row r (NaN rows included)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.feature_size, self.source = rows, rows.shape[1], "scripted"

    def features(self, image: np.ndarray, encoding: str) -> np.ndarray:
        assert encoding == "rgb8" and image.ndim == 3
        return self.rows[int(image[0, 0, 0])]


def image_of(row: int) -> np.ndarray:
    return np.full((6, 8, 3), row, np.uint8)


def run_node_calls(events, rows, policy):
    """The perception node's gate, then the policy node's calls: frame_arrived on arrival, on_timer each tick."""
    gate, loop = FrameGate(), PolicyLoop(PolicyLoopConfig(), policy)
    per_tick, per_frame = [], []
    for k, event in enumerate(events):
        now = T0 + k * PERIOD
        arrived = None
        if event is not None and gate.admit(event[0], now):
            arrived = loop.frame_arrived(event[0], rows[event[1]], now)
        result = loop.on_timer(now, expected_s=now)
        per_tick.append((result.command.copy(), result.state, policy.state.copy()))
        if event is not None:
            per_frame.append(arrived or result)
    return per_tick, per_frame, loop.counters


def run_closed_loop(events, rows, policy):
    controller = PolicyController(ScriptedPerception(rows), policy)
    per_tick = []
    for k, event in enumerate(events):
        now = T0 + k * PERIOD
        frame = None if event is None else Frame(image_of(event[1]), event[0], k)
        command = controller.act(Observation(now, frame, frame, None, np.zeros(3), np.zeros(3), "fly_to_target"))
        per_tick.append((command, controller.pipeline.loop.result.state, policy.state.copy()))
    return per_tick, controller.pipeline.loop.counters


def run_bag(events, rows, policy, path):
    """Images logged at their arrival ticks (so the out-of-order one comes after the newer frame)."""
    entries = []
    for k, event in enumerate(events):
        if event is None:
            continue
        stamp_ns, arrival_ns = int(round(event[0] * 1e9)), int(round((T0 + k * PERIOD) * 1e9))
        msg, expected = bf.image_msg(stamp_ns, image_of(event[1]), "rgb8")
        entries.append(bf.Entry("/camera/image_raw", bf.IMAGE, arrival_ns, msg, expected))
        entries.append(bf.Entry("/cmd_vel", bf.TWIST_STAMPED, stamp_ns + 1_000_000,
                                bf.twist_stamped_msg(stamp_ns, [0.0] * 4), None))
    bag = bf.write_rosbags_bag(path, entries, "mcap")
    return evaluate_bag(bag, ScriptedPerception(rows), policy)


def test_node_calls_closed_loop_and_bag_evaluation_fly_the_same_commands(tmp_path, fast_model):
    policies = [PolicyRuntime(fast_model, backend="torch") for _ in range(3)]
    assert policies[0].frame_period_s == pytest.approx(PERIOD)
    events, rows = script(policies[0].feature_size)
    node_ticks, node_frames, node_counters = run_node_calls(events, rows, policies[0])
    loop_ticks, loop_counters = run_closed_loop(events, rows, policies[1])
    evaluation = run_bag(events, rows, policies[2], tmp_path / "bag")

    # The script exercises every rule it claims to (else identical outputs would prove little).
    assert node_counters["rejected_outputs"] == 1 and node_counters["clamped_outputs"] >= 1
    assert node_counters["watchdog_trips"] == 1 and node_counters["dropped_inputs"] == 0
    frames = sum(event is not None for event in events)
    assert node_counters["state_resets"] == 1 and node_counters["steps"] == frames - 2  # NaN, out of order
    states = [state for _, state, _ in node_ticks]
    assert {"running", "fault", "stale"} <= set(states)
    stepped = [r.timespan for r in node_frames if r.stepped]
    assert 4.0 in stepped and 2.0 in [round(s, 6) for s in stepped] and max(stepped) == 4.0

    assert loop_counters == node_counters
    for (c_node, s_node, h_node), (c_loop, s_loop, h_loop) in zip(node_ticks, loop_ticks):
        np.testing.assert_array_equal(c_node, c_loop)
        assert s_node == s_loop
        np.testing.assert_array_equal(h_node, h_loop)

    assert evaluation.counters["out_of_order_frames"] == 1
    assert {k: evaluation.counters[k] for k in node_counters if k != "dropped_inputs"} == \
        {k: v for k, v in node_counters.items() if k != "dropped_inputs"}
    np.testing.assert_allclose(evaluation.predicted, np.array([r.command for r in node_frames]), rtol=1e-6, atol=1e-7)
    assert evaluation.states == [r.state for r in node_frames]
    np.testing.assert_allclose(policies[2].state, policies[0].state, rtol=1e-6, atol=1e-7)
