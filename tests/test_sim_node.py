"""The sim node over DDS: clock, camera, odometry, status, cmd_vel, reset (SimSession: test_sim_session.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from liquid_control.simulation.camera import CameraConfig, intrinsics


def test_sim_node_publishes_clock_camera_odom_status_and_follows_cmd_vel(harness):
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from liquid_control.interfaces.topics import COMMAND_QOS, EVENTS_QOS, SENSOR_QOS
    from liquid_control.nodes.common import qos_profile, stamp_to_seconds
    from liquid_control.nodes.sim_node import SimNode
    from node_helpers import overrides

    sim = harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=0.0, duration_s=3.0, autostart=False,
        command_timeout_s=0.2)))
    probe = harness.node("sim_probe")
    got = {k: [] for k in ("clock", "image", "info", "odom", "status")}
    probe.create_subscription(Clock, "/clock", got["clock"].append, 100)
    probe.create_subscription(Image, "camera/image_raw", got["image"].append, qos_profile(SENSOR_QOS, 100))
    probe.create_subscription(CameraInfo, "camera/camera_info", got["info"].append, qos_profile(SENSOR_QOS, 100))
    probe.create_subscription(Odometry, "odom", got["odom"].append, qos_profile(SENSOR_QOS, 100))
    probe.create_subscription(String, "episode/status", lambda m: got["status"].append(json.loads(m.data)),
                              qos_profile(EVENTS_QOS))
    cmd = probe.create_publisher(TwistStamped, "cmd_vel", qos_profile(COMMAND_QOS))
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

    from liquid_control.interfaces.topics import COMMAND_QOS
    from liquid_control.nodes.common import ParameterError, qos_profile
    from liquid_control.nodes.sim_node import SimNode
    from node_helpers import overrides

    with pytest.raises(ParameterError, match="real_time_factor"):
        SimNode(context=harness.context, parameter_overrides=overrides(real_time_factor=-1.0))
    with pytest.raises(ValueError):
        SimNode(context=harness.context, parameter_overrides=overrides(scenario="no_such_scenario"))
    sim = harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=1.0)))
    probe = harness.node("sim_probe2")
    cmd = probe.create_publisher(TwistStamped, "cmd_vel", qos_profile(COMMAND_QOS))
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

    from liquid_control.interfaces.topics import EVENTS_QOS
    from liquid_control.nodes.common import qos_profile
    from liquid_control.nodes.sim_node import SimNode
    from node_helpers import overrides

    sim = harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=0.0, autostart=False)))
    probe = harness.node("sim_probe3")
    status = []
    probe.create_subscription(String, "episode/status", lambda m: status.append(json.loads(m.data)), qos_profile(EVENTS_QOS))
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


def test_sim_node_diagnostics_name_the_host_and_the_simulator(harness):
    import socket

    from diagnostic_msgs.msg import DiagnosticArray
    from liquid_control.nodes.sim_node import SimNode
    from node_helpers import overrides

    harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, autostart=False, diagnostics_rate_hz=10.0)))
    probe = harness.node("sim_diag_probe")
    got = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    harness.spin_until(lambda: any(s.name == "sim" for a in got for s in a.status), 10.0, "sim diagnostics")
    assert {s.hardware_id for a in got for s in a.status if s.name == "sim"} == {f"{socket.gethostname()}/pybullet"}


def test_sim_sensor_streams_reach_reliable_subscribers_and_tf_is_published(harness):
    """REP-2003: the sim publishes camera, camera_info and odom reliably, so a subscriber with rclpy's
    default QoS (reliable, as RViz2 subscribes) gets them; TF carries odom -> base_link and the camera mount."""
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image

    from liquid_control.nodes import sim_node
    from liquid_control.nodes.common import qos_profile
    from liquid_control.interfaces.topics import TF, TF_STATIC
    from node_helpers import overrides

    harness.add(sim_node.SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=32, camera_height=24, real_time_factor=0.0, duration_s=2.0)))
    probe = harness.node("reliable_probe")
    got = {k: [] for k in ("image", "info", "odom", "tf", "tf_static")}
    for cls, topic, key in ((Image, "camera/image_raw", "image"), (CameraInfo, "camera/camera_info", "info"),
                            (Odometry, "odom", "odom")):
        probe.create_subscription(cls, topic, got[key].append, 10)  # rclpy default: reliable, volatile
    if sim_node.TFMessage is not None:
        probe.create_subscription(sim_node.TFMessage, TF.name, got["tf"].append, qos_profile(TF))
        probe.create_subscription(sim_node.TFMessage, TF_STATIC.name, got["tf_static"].append,
                                  qos_profile(TF_STATIC))
    wanted = ("image", "info", "odom") + (("tf", "tf_static") if sim_node.TFMessage is not None else ())
    harness.spin_until(lambda: all(got[k] for k in wanted), 60.0, f"messages on {wanted} with reliable QoS")
    for endpoint in probe.get_publishers_info_by_topic("/camera/image_raw"):
        assert endpoint.qos_profile.reliability.name == "RELIABLE"
    # The transforms TF carries, built by the node (also where tf2_msgs, and so the publishers, are missing).
    sim = harness.nodes[0]
    mount = sim.camera_mount_transform(sim.session.config.camera)
    assert (mount.header.frame_id, mount.child_frame_id) == ("base_link", "camera_optical_frame")
    q = mount.transform.rotation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [-0.5, 0.5, -0.5, 0.5], atol=1e-9)
    assert mount.transform.translation.x == pytest.approx(0.03)
    odom = got["odom"][-1]
    moved = sim.odom_transform(odom)
    assert (moved.header.frame_id, moved.child_frame_id, moved.header.stamp) == ("odom", "base_link", odom.header.stamp)
    assert moved.transform.translation.z == odom.pose.pose.position.z
    assert moved.transform.rotation.w == odom.pose.pose.orientation.w
    if sim_node.TFMessage is None:
        pytest.skip("tf2_msgs is not installed here (no PyPI wheel): sensor streams and transforms checked, "
                    "/tf and /tf_static delivery not")
    static = got["tf_static"][0].transforms[0]
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera_optical_frame")
    q = static.transform.rotation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [-0.5, 0.5, -0.5, 0.5], atol=1e-9)
    dynamic = got["tf"][-1].transforms[0]
    assert (dynamic.header.frame_id, dynamic.child_frame_id) == ("odom", "base_link")
