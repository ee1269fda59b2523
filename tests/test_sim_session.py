"""SimSession (episodes on one clock, stale commands, reset) and the sim node over DDS."""
from __future__ import annotations

import json

import numpy as np
import pytest

from liquid_control.simulation.session import SimSession, SimSessionConfig
from liquid_control.simulation.camera import CameraConfig, intrinsics

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


@pytest.fixture
def harness():
    from node_helpers import Harness

    h = Harness()
    yield h
    h.close()


def test_sim_node_publishes_clock_camera_odom_status_and_follows_cmd_vel(harness):
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from liquid_control.nodes.common import command_qos, sensor_qos, stamp_to_seconds
    from liquid_control.nodes.sim_node import STATUS_QOS, SimNode
    from node_helpers import overrides

    sim = harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=0.0, duration_s=3.0, autostart=False,
        command_timeout_s=0.2)))
    probe = harness.node("sim_probe")
    got = {k: [] for k in ("clock", "image", "info", "odom", "status")}
    probe.create_subscription(Clock, "/clock", got["clock"].append, 100)
    probe.create_subscription(Image, "camera/image_raw", got["image"].append, sensor_qos(100))
    probe.create_subscription(CameraInfo, "camera/camera_info", got["info"].append, sensor_qos(100))
    probe.create_subscription(Odometry, "odom", got["odom"].append, sensor_qos(100))
    probe.create_subscription(String, "episode/status", lambda m: got["status"].append(json.loads(m.data)),
                              STATUS_QOS)
    cmd = probe.create_publisher(TwistStamped, "cmd_vel", command_qos())
    client = probe.create_client(Trigger, "episode/reset")
    assert client.wait_for_service(timeout_sec=10.0)
    harness.spin_until(lambda: len(got["clock"]) > 5, 10.0, "/clock while idle")
    assert not got["image"] and not got["odom"]  # autostart false: only the clock runs
    future = client.call_async(Trigger.Request())
    harness.spin_until(future.done, 10.0, "episode/reset")
    assert future.result().success

    def forward():
        msg = TwistStamped()
        msg.header.frame_id = "base_link"
        msg.twist.linear.x = 0.8
        cmd.publish(msg)

    probe.create_timer(0.005, forward)  # wall time; the sim runs faster than real time
    harness.spin_until(lambda: any(s["event"] == "end" for s in got["status"]), 60.0, "the episode to end")

    clock = [stamp_to_seconds(m.clock) for m in got["clock"]]
    assert np.all(np.diff(clock) >= 0)
    image_stamps = [stamp_to_seconds(m.header.stamp) for m in got["image"]]
    assert len(image_stamps) > 20 and np.all(np.diff(image_stamps) > 0)
    assert max(image_stamps) <= max(clock) + 1e-9
    image = got["image"][-1]
    assert (image.encoding, image.width, image.height, image.step, len(image.data)) == ("rgb8", 32, 24, 96, 2304)
    info = got["info"][-1]
    np.testing.assert_allclose(np.array(info.k).reshape(3, 3), intrinsics(CameraConfig(width=32, height=24)))
    assert {stamp_to_seconds(m.header.stamp) for m in got["info"]} <= set(image_stamps)
    odom = got["odom"][-1]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    assert max(m.twist.twist.linear.x for m in got["odom"]) > 0.5  # cmd_vel reached the flight controller
    start = next(s for s in got["status"] if s["event"] == "start")
    end = next(s for s in got["status"] if s["event"] == "end")
    assert start["seed"] == 0 and start["task"] == "fly_to_target" and len(start["targets"]) == 1
    assert end["reason"] in ("success", "timeout", "crash", "left_arena") and "final_distance_m" in end
    assert sim.counts["commands"] > 0 and sim.counts["rejected_commands"] == 0


def test_sim_node_rejects_commands_in_the_wrong_frame_and_bad_parameters(harness):
    from geometry_msgs.msg import TwistStamped

    from liquid_control.nodes.common import ParameterError, command_qos
    from liquid_control.nodes.sim_node import SimNode
    from node_helpers import overrides

    with pytest.raises(ParameterError, match="real_time_factor"):
        SimNode(context=harness.context, parameter_overrides=overrides(real_time_factor=-1.0))
    with pytest.raises(ValueError):
        SimNode(context=harness.context, parameter_overrides=overrides(scenario="no_such_scenario"))
    sim = harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=1.0)))
    probe = harness.node("sim_probe2")
    cmd = probe.create_publisher(TwistStamped, "cmd_vel", command_qos())
    harness.spin_until(lambda: cmd.get_subscription_count() > 0, 10.0, "sim subscription")
    msg = TwistStamped()
    msg.header.frame_id = "map"
    msg.twist.linear.x = 1.0
    cmd.publish(msg)
    harness.spin_until(lambda: sim.counts["rejected_commands"] == 1, 5.0, "rejected command")
    assert sim.counts["commands"] == 0


def test_sim_node_reset_uses_the_scenario_and_seed_parameters(harness):
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from liquid_control.nodes.sim_node import STATUS_QOS, SimNode
    from node_helpers import overrides

    sim = harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=0.0, autostart=False)))
    probe = harness.node("sim_probe3")
    status = []
    probe.create_subscription(String, "episode/status", lambda m: status.append(json.loads(m.data)), STATUS_QOS)
    client = probe.create_client(Trigger, "episode/reset")
    assert client.wait_for_service(timeout_sec=10.0)

    def reset():
        future = client.call_async(Trigger.Request())
        harness.spin_until(future.done, 10.0, "episode/reset")
        return future.result()

    assert all(r.successful for r in sim.set_parameters([Parameter("scenario", value="train_chase"),
                                                         Parameter("seed", value=7)]))
    assert reset().success
    harness.spin_until(lambda: any(s["event"] == "start" for s in status), 5.0, "start event")
    start = next(s for s in status if s["event"] == "start")
    assert (start["task"], start["seed"]) == ("chase", 7)
    sim.set_parameters([Parameter("scenario", value="no_such_scenario")])
    refused = reset()
    assert not refused.success and "no_such_scenario" in refused.message
