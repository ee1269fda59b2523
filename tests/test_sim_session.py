"""SimSession (episodes on one clock, stale commands, reset), without ROS."""
from __future__ import annotations

import json

import numpy as np
import pytest

from liquid_control.simulation.camera import CameraConfig
from liquid_control.simulation.session import SimSession, SimSessionConfig

SMALL_CAMERA = CameraConfig(width=32, height=24)


def run_until(session: SimSession, phase: str, max_steps: int = 5000):
    events, frames = [], []
    for _ in range(max_steps):
        out = session.step()
        events += out.events
        if out.frame is not None:
            frames.append(out.frame)
        if session.phase == phase:
            return events, frames
    raise AssertionError(f"session never reached phase {phase!r}")


def test_episodes_share_one_monotonic_clock_with_a_frameless_pause():
    session = SimSession(SimSessionConfig(episodes=2, duration_s=0.5, pause_between_s=0.25, camera=SMALL_CAMERA,
                                          control_hz=60.0))
    times, frame_times = [], []
    events = []
    while session.phase != "finished":
        out = session.step()
        times.append(out.time_s)
        events += out.events
        if out.frame is not None:
            frame_times.append(out.frame.capture_time_s)
            assert out.frame.capture_time_s <= out.time_s + 1e-9
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "end", "start", "end", "finished"]
    assert np.all(np.diff(times) >= 0) and np.all(np.diff(frame_times) > 0)
    first_end, second_start = events[1]["time_s"], events[2]["time_s"]
    assert second_start - first_end == pytest.approx(0.25, abs=1.0 / 60 + 1e-9)
    assert not [t for t in frame_times if first_end < t < second_start]  # no frames in the pause
    assert [e["seed"] for e in events if e["event"] == "start"] == [0, 1]
    assert events[1]["reason"] == "timeout" and events[1]["success"] is False
    json.dumps(events, allow_nan=False)  # strict JSON: NaN metrics become null


def test_commands_go_stale_into_hover():
    cfg = SimSessionConfig(duration_s=2.0, command_timeout_s=0.2, camera=SMALL_CAMERA)
    commanded, abandoned = SimSession(cfg), SimSession(cfg)
    for session in (commanded, abandoned):
        session.step()  # starts the episode
        session.set_command([0.8, 0.0, 0.0, 0.0])
    for k in range(120):  # 1 s at 120 Hz
        if k % 4 == 0:
            commanded.set_command([0.8, 0.0, 0.0, 0.0])
        a, b = commanded.step(), abandoned.step()
    assert a.state.velocity_body[0] > 0.5  # kept flying forward
    assert abs(b.state.velocity_body[0]) < 0.15  # stopped after 0.2 s without commands
    assert abandoned.stale_steps > 90 and commanded.stale_steps == 0
    with pytest.raises(ValueError, match="finite"):
        commanded.set_command([np.nan, 0, 0, 0])
    commanded.close()
    abandoned.close()


def test_reset_aborts_the_running_episode_and_restarts_at_the_seed():
    session = SimSession(SimSessionConfig(camera=SMALL_CAMERA, autostart=False))
    for _ in range(5):
        assert session.step().events == [] and session.phase == "idle"
    events = session.reset(seed=42)
    assert [(e["event"], e["seed"]) for e in events] == [("start", 42)]
    first = session.step()
    assert first.state is not None
    for _ in range(10):
        session.step()
    events = session.reset("train_fly_to_target", seed=7)
    assert [e["event"] for e in events] == ["end", "start"]
    assert events[0]["reason"] == "reset" and events[1]["seed"] == 7 and events[0]["time_s"] <= events[1]["time_s"]
    with pytest.raises(ValueError):
        session.reset("no_such_scenario")
    with pytest.raises(ValueError, match="divide"):
        SimSessionConfig(control_hz=70.0)
    session.close()


# ------------------------------------------------------------------ the node over DDS
pytest.importorskip("rclpy")
