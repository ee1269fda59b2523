"""MAVLink bridge node end to end: real rclpy over DDS in-process, the test autopilot in its own process.

The autopilot records everything the bridge sends; the assertions check what a
flight controller would receive (frame, type mask, FRD signs, rate) and that
arm / mode commands appear only when the configuration enables them.
"""
import math
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from pymavlink import mavutil

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from liquid_control.interfaces.topics import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS  # noqa: E402
from liquid_control.nodes.common import ParameterError, qos_profile  # noqa: E402
from liquid_control.nodes.mavlink_bridge_node import MavlinkBridgeNode  # noqa: E402
from mavlink_test_autopilot import AutopilotProcess  # noqa: E402

mavlink = mavutil.mavlink
pytestmark = pytest.mark.timeout(60)


class Probe:
    """Test-side node: publishes cmd_vel / odom, records the bridge's topics, calls its services."""

    def __init__(self, context):
        self.node = rclpy.create_node("bridge_probe", context=context)
        self.cmd_pub = self.node.create_publisher(TwistStamped, "cmd_vel", qos_profile(COMMAND_QOS))
        self.live_pub = self.node.create_publisher(Bool, "policy/live", qos_profile(COMMAND_QOS))
        self.live = True  # sent before each command, as the policy node does
        self.odom_pub = self.node.create_publisher(Odometry, "odom", qos_profile(SENSOR_QOS))
        self.modes, self.armed, self.connected, self.diagnostics = [], [], [], []
        self.node.create_subscription(String, "mavlink/mode", lambda m: self.modes.append(m.data), qos_profile(LATCHED_QOS))
        self.node.create_subscription(Bool, "mavlink/armed", lambda m: self.armed.append(m.data), qos_profile(LATCHED_QOS))
        self.node.create_subscription(Bool, "mavlink/connected", lambda m: self.connected.append(m.data),
                                      qos_profile(LATCHED_QOS))
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.extend(s for s in m.status
                                                                        if s.name == "mavlink_bridge"), 10)
        self.arm_client = self.node.create_client(SetBool, "mavlink/arm")
        self.offboard_client = self.node.create_client(Trigger, "mavlink/set_offboard")
        self.command = None  # (vx, vy, vz, yaw_rate, frame_id) republished at 20 Hz while set
        self.node.create_timer(0.05, self._publish_command)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.sim_step_ns = None  # when set, /clock advances this much every 10 ms of wall time
        self.sim_time_ns = 1_000_000_000
        self.node.create_timer(0.01, self._publish_clock)

    def _publish_clock(self):
        if self.sim_step_ns is None:
            return
        self.sim_time_ns += self.sim_step_ns
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(self.sim_time_ns, 1_000_000_000)
        self.clock_pub.publish(msg)

    def _publish_command(self):
        if self.command is None:
            return
        msg = TwistStamped()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        *values, msg.header.frame_id = self.command
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z, msg.twist.angular.z = values
        if self.live is not None:
            self.live_pub.publish(Bool(data=self.live))
        self.cmd_pub.publish(msg)

    def publish_odom(self, x, y, z):
        msg = Odometry()
        msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = x, y, z
        msg.pose.pose.orientation.w = 1.0
        self.odom_pub.publish(msg)

    def call(self, client, request, timeout_s=5.0):
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {client.srv_name} not available"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f"no answer from {client.srv_name}"
        return future.result()


@contextmanager
def running_bridge(autopilot, **params):
    """Bridge + probe spinning in one SingleThreadedExecutor on a background thread."""
    settings = dict(connection=autopilot.bridge_connection, setpoint_rate_hz=20.0, heartbeat_rate_hz=5.0,
                    diagnostics_rate_hz=5.0)
    settings.update(params)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    bridge = probe = None
    stop = threading.Event()
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.02) for _ in iter(stop.is_set, True)])
    try:
        bridge = MavlinkBridgeNode(context=context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in settings.items()])
        probe = Probe(context)
        executor.add_node(bridge)
        executor.add_node(probe.node)
        thread.start()
        yield bridge, probe
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=5.0)
        executor.shutdown()
        for node in (bridge, probe.node if probe else None):
            if node is not None:
                node.destroy_node()
        if bridge is not None:
            bridge.close()
        rclpy.try_shutdown(context=context)


def wait_until(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def latest_setpoint(autopilot):
    setpoints = autopilot.events("setpoint")
    return setpoints[-1] if setpoints else None


def setpoint_is(autopilot, vx, vy, vz, yaw_rate, tol=1e-4):
    sp = latest_setpoint(autopilot)
    return sp is not None and all(abs(a - b) <= tol for a, b in
                                  zip((sp["vx"], sp["vy"], sp["vz"], sp["yaw_rate"]), (vx, vy, vz, yaw_rate)))


def test_streams_frd_setpoints_at_the_configured_rate_and_never_arms_by_default():
    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4, running_bridge(px4) as (bridge, probe):
        probe.command = (0.6, 0.3, 0.2, 0.3, "base_link")  # FLU, inside the default clamps
        assert wait_until(lambda: setpoint_is(px4, 0.6, -0.3, -0.2, -0.3)), latest_setpoint(px4)
        start = time.monotonic()
        time.sleep(1.5)
        window = px4.events("setpoint", since=start + 0.25)
        window = [e for e in window if e["t"] <= start + 1.25]
        assert 16 <= len(window) <= 24, f"{len(window)} setpoints in 1 s at 20 Hz"
        assert {(e["frame"], e["type_mask"]) for e in window} == {(8, 1479)}
        assert all(e["target_system"] == 1 and e["target_component"] == 1 for e in window)
        # state topics and diagnostics
        assert wait_until(lambda: probe.modes and probe.modes[-1] == "POSCTL" and probe.connected[-1])
        assert probe.armed and probe.armed[-1] is False
        assert wait_until(lambda: any(dict((kv.key, kv.value) for kv in s.values).get("state") == "active"
                                      for s in probe.diagnostics))
        values = dict((kv.key, kv.value) for kv in probe.diagnostics[-1].values)
        assert 15.0 <= float(values["rate_hz"]) <= 25.0 and float(values["lateness_p99_ms"]) >= 0.0
        assert values["connected"] == "True" and values["autopilot"] == "px4"
        # operator services refuse while allow_arming / allow_mode_change are false
        reply = probe.call(probe.arm_client, SetBool.Request(data=True))
        assert not reply.success and "allow_arming" in reply.message
        reply = probe.call(probe.offboard_client, Trigger.Request())
        assert not reply.success and "allow_mode_change" in reply.message
        time.sleep(0.3)
        assert px4.events("command_long") == [] and px4.events("set_mode") == []
        # our heartbeat: an onboard controller, not an autopilot
        beats = px4.events("heartbeat")
        assert beats and all(b["type"] == mavlink.MAV_TYPE_ONBOARD_CONTROLLER and b["component"] == 191
                             for b in beats)
        in_window = [b for b in beats if start <= b["t"] < start + 1.5]
        assert 5 <= len(in_window) <= 10, f"{len(in_window)} heartbeats in 1.5 s at heartbeat_rate_hz 5"


@pytest.mark.parametrize("allow_mode_change", [False, True])
def test_stale_commands_hover_then_failsafe_action_only_when_enabled(allow_mode_change):
    with AutopilotProcess("px4", heartbeat_hz=5.0, mode="OFFBOARD") as px4, running_bridge(
            px4, command_timeout_s=0.2, action_timeout_s=0.6, handback_timeout_s=30.0, failsafe_action="land",
            allow_mode_change=allow_mode_change) as (bridge, probe):
        probe.command = (0.5, 0.0, 0.0, 0.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.5, 0.0, 0.0, 0.0))
        probe.command = None  # the stream of commands stops
        stopped = time.monotonic()
        assert wait_until(lambda: setpoint_is(px4, 0.0, 0.0, 0.0, 0.0), timeout_s=2.0)
        assert time.monotonic() - stopped < 0.6  # zero within command_timeout + a few cycles
        time.sleep(1.0)  # past action_timeout_s
        assert setpoint_is(px4, 0.0, 0.0, 0.0, 0.0)  # still streaming zeros (hover)
        commands = px4.events("command_long")
        if allow_mode_change:
            assert len(commands) == 1 and commands[0]["command"] == mavlink.MAV_CMD_DO_SET_MODE
            assert commands[0]["params"][1:3] == [4.0, 6.0]  # PX4 AUTO / AUTO_LAND
            assert wait_until(lambda: probe.modes and probe.modes[-1] == "LAND")
        else:
            assert commands == [] and px4.events("set_mode") == []
            assert wait_until(lambda: any(s.level == DiagnosticStatus.ERROR and "NOT sent" in s.message
                                          for s in probe.diagnostics))


def test_vehicle_heartbeat_loss_stops_the_stream_and_reports_error():
    with AutopilotProcess("px4", heartbeat_hz=10.0) as px4, running_bridge(
            px4, heartbeat_timeout_s=0.5) as (bridge, probe):
        probe.command = (0.3, 0.0, 0.0, 0.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.3, 0.0, 0.0, 0.0))
        px4.send("heartbeat off")
        lost_at = time.monotonic()
        time.sleep(1.2)
        late = px4.events("setpoint", since=lost_at + 0.8)
        assert late == [], f"{len(late)} setpoints sent after the vehicle went silent"
        assert wait_until(lambda: any(s.level == DiagnosticStatus.ERROR and "heartbeat lost" in s.message
                                      for s in probe.diagnostics))
        assert wait_until(lambda: probe.connected and probe.connected[-1] is False)
        px4.send("heartbeat on")  # link back: streaming resumes
        resumed = time.monotonic()
        assert wait_until(lambda: len(px4.events("setpoint", since=resumed)) >= 3)


def test_clamps_nan_and_foreign_frames():
    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4, running_bridge(
            px4, max_horizontal_speed_mps=1.0, max_vertical_speed_mps=0.5, max_yaw_rate_radps=0.4) as (_, probe):
        probe.command = (3.0, 4.0, -2.0, 1.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.6, -0.8, 0.5, -0.4)), latest_setpoint(px4)
        probe.command = (math.nan, 0.0, 0.0, 0.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.0, 0.0, 0.0, 0.0)), latest_setpoint(px4)
        probe.command = (0.2, 0.0, 0.0, 0.0, "")  # empty frame_id is accepted as body
        assert wait_until(lambda: setpoint_is(px4, 0.2, 0.0, 0.0, 0.0))
        probe.command = (0.7, 0.0, 0.0, 0.0, "odom")  # a world-frame twist is not a body command
        time.sleep(0.8)  # ignored -> the last body command goes stale -> hover
        assert setpoint_is(px4, 0.0, 0.0, 0.0, 0.0)
        assert all(e["vx"] != pytest.approx(0.7) for e in px4.events("setpoint"))


def test_geofence_removes_outward_velocity():
    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4, running_bridge(
            px4, geofence_radius_m=2.0, odometry_source="topic") as (bridge, probe):
        probe.command = (0.8, 0.4, 0.0, 0.0, "base_link")
        for _ in range(5):  # first odometry = start point
            probe.publish_odom(0.0, 0.0, 1.0)
            time.sleep(0.05)
        assert wait_until(lambda: setpoint_is(px4, 0.8, -0.4, 0.0, 0.0))
        deadline = time.monotonic() + 5.0
        while not setpoint_is(px4, 0.0, -0.4, 0.0, 0.0) and time.monotonic() < deadline:
            probe.publish_odom(3.0, 0.0, 1.0)  # 3 m along +x: outside; forward is outward
            time.sleep(0.05)
        assert setpoint_is(px4, 0.0, -0.4, 0.0, 0.0), latest_setpoint(px4)
        assert wait_until(lambda: any("outside geofence" in s.message for s in probe.diagnostics))


def test_arm_and_offboard_services_work_only_when_enabled():
    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4, running_bridge(
            px4, allow_arming=True, allow_mode_change=True) as (bridge, probe):
        assert wait_until(lambda: len(px4.events("setpoint")) >= 3)  # PX4 wants a stream before offboard
        assert px4.events("command_long") == []  # enabling alone sends nothing
        reply = probe.call(probe.offboard_client, Trigger.Request())
        assert reply.success, reply.message
        reply = probe.call(probe.arm_client, SetBool.Request(data=True))
        assert reply.success, reply.message
        assert wait_until(lambda: probe.modes and probe.modes[-1] == "OFFBOARD" and probe.armed[-1] is True)
        commands = [(e["command"], e["params"][:3]) for e in px4.events("command_long")]
        assert commands == [(mavlink.MAV_CMD_DO_SET_MODE, [float(mavutil.px4_map["OFFBOARD"][0]), 6.0, 0.0]),
                            (mavlink.MAV_CMD_COMPONENT_ARM_DISARM, [1.0, 0.0, 0.0])]


def test_use_sim_time_runs_the_stream_on_the_simulation_clock():
    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4, running_bridge(
            px4, use_sim_time=True, heartbeat_timeout_s=30.0) as (bridge, probe):
        probe.command = (0.2, 0.0, 0.0, 0.0, "base_link")
        time.sleep(0.5)
        assert px4.events("setpoint") == []  # no /clock yet: simulated time stands still
        probe.sim_step_ns = 2_000_000  # 2 ms of sim time per 10 ms of wall time: 0.2x real time
        assert wait_until(lambda: setpoint_is(px4, 0.2, 0.0, 0.0, 0.0))
        start = time.monotonic()
        time.sleep(2.0)
        count = len(px4.events("setpoint", since=start))
        assert 4 <= count <= 14, f"{count} setpoints in 2 s wall at 20 Hz sim and 0.2x (expected ~8)"


def test_out_of_range_rate_is_rejected_at_start():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ParameterError, match="setpoint_rate_hz"):
            MavlinkBridgeNode(context=context, parameter_overrides=[Parameter("setpoint_rate_hz", value=2.0)])
        with pytest.raises(ParameterError, match="failsafe_action"):
            MavlinkBridgeNode(context=context, parameter_overrides=[Parameter("failsafe_action", value="flip")])
    finally:
        rclpy.try_shutdown(context=context)


def test_node_process_loads_the_shipped_yaml_and_exits_cleanly_on_sigterm(repo_root):
    with AutopilotProcess("ardupilot", heartbeat_hz=5.0) as copter:
        proc = subprocess.Popen(
            [sys.executable, "-m", "liquid_control.nodes.mavlink_bridge_node", "--ros-args",
             "--params-file", str(repo_root / "config" / "mavlink_bridge.yaml"),
             "-p", f"connection:={copter.bridge_connection}"],
            cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert copter.wait_for(lambda ev: len(ev) >= 5, "setpoint", timeout_s=20.0), \
                "no setpoints from the node process"
            assert {(e["frame"], e["type_mask"]) for e in copter.events("setpoint")} == {(8, 1479)}
            # no policy runs: after handback_timeout_s (3 s in the shipped YAML) the stream stops
            first = copter.events("setpoint")[0]["t"]
            assert copter.wait_for(lambda ev: ev and time.monotonic() - ev[-1]["t"] > 1.0, "setpoint",
                                   timeout_s=15.0), "the stream never stopped without a policy"
            assert copter.events("setpoint")[-1]["t"] - first < 3.0 + 1.0
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            assert "Traceback" not in err
            assert "no live policy output yet" in err and "handed back to the flight controller" in err  # the log
            assert copter.events("command_long") == [] and copter.events("set_mode") == []
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_node_process_with_a_missing_serial_device_exits_1_with_a_clear_message(repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_control.nodes.mavlink_bridge_node", "--ros-args",
         "-p", "connection:=serial:/dev/no-such-fc-liquid:921600"],
        cwd=repo_root, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot start node" in proc.stderr and "no-such-fc-liquid" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- hand-back to the flight controller (issue 14, defect 1) ------------------------------------------------------
def setpoints_after(autopilot, t):
    return autopilot.events("setpoint", since=t)


@pytest.mark.parametrize("allow_mode_change", [False, True])
def test_policy_watchdog_hover_ends_in_a_hand_back_to_the_flight_controller(allow_mode_change):
    """The policy keeps publishing its watchdog's zeros (policy/live false): the bridge streams hover, then
    stops streaming so the FC's COM_OF_LOSS_T / GUID_TIMEOUT fires; a mode change only where configured."""
    with AutopilotProcess("px4", heartbeat_hz=10.0, mode="OFFBOARD") as px4, running_bridge(
            px4, command_timeout_s=0.2, action_timeout_s=0.5, handback_timeout_s=1.0, failsafe_action="land",
            allow_mode_change=allow_mode_change, allow_arming=True) as (bridge, probe):
        probe.command = (0.5, 0.0, 0.0, 0.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.5, 0.0, 0.0, 0.0))
        probe.live, probe.command = False, (0.0, 0.0, 0.0, 0.0, "base_link")  # perception died: watchdog hover
        died = time.monotonic()
        assert wait_until(lambda: setpoint_is(px4, 0.0, 0.0, 0.0, 0.0), timeout_s=1.0)
        assert wait_until(lambda: any(s.level == DiagnosticStatus.ERROR and "handed back" in s.message
                                      for s in probe.diagnostics), timeout_s=4.0)
        stopped = time.monotonic()
        assert stopped - died < 2.5  # handback_timeout_s 1.0 + a diagnostics period + DDS under load
        time.sleep(0.3)
        last_streamed = px4.events("setpoint")[-1]["t"]
        assert last_streamed - died < 1.0 + 0.5  # the stream ended about handback_timeout_s after live output did
        time.sleep(1.0)
        assert setpoints_after(px4, last_streamed + 0.01) == []  # and stays ended
        values = dict((kv.key, kv.value) for kv in probe.diagnostics[-1].values)
        assert values["state"] == "handed_back" and values["streaming"] == "False" and values["handbacks"] == "1"
        commands = px4.events("command_long")
        assert all(c["command"] != mavlink.MAV_CMD_COMPONENT_ARM_DISARM for c in commands)  # never armed
        assert px4.events("set_mode") == []
        if allow_mode_change:
            assert [c["command"] for c in commands] == [mavlink.MAV_CMD_DO_SET_MODE]
            assert commands[0]["params"][1:3] == [4.0, 6.0]  # PX4 AUTO / AUTO_LAND, before the stream ended
            assert commands[0]["t"] < last_streamed
            assert wait_until(lambda: probe.modes and probe.modes[-1] == "LAND")
        else:
            assert commands == []
            assert probe.modes[-1] == "OFFBOARD"
        # the policy is live again
        probe.live, probe.command = True, (0.3, 0.0, 0.0, 0.0, "base_link")
        back = time.monotonic()
        if not allow_mode_change:  # still OFFBOARD: a vehicle the bridge let go must not start moving by itself
            time.sleep(1.0)
            assert setpoints_after(px4, back) == []
            assert any("still in its offboard mode" in s.message for s in probe.diagnostics[-3:])
            px4.send("mode POSCTL")  # the pilot (or the FC's failsafe) takes over
        assert wait_until(lambda: setpoint_is(px4, 0.3, 0.0, 0.0, 0.0), timeout_s=3.0)


def test_failsafe_settings_apply_on_change_and_fixed_ones_are_refused():
    from rcl_interfaces.srv import SetParameters

    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4, running_bridge(px4) as (bridge, probe):
        client = probe.node.create_client(SetParameters, "mavlink_bridge/set_parameters")

        def set_params(**values):
            request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                        for k, v in values.items()])
            return probe.call(client, request).results

        probe.command = (0.9, 0.0, 0.0, 0.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.9, 0.0, 0.0, 0.0))
        result, = set_params(max_horizontal_speed_mps=0.4)
        assert result.successful, result.reason
        assert wait_until(lambda: setpoint_is(px4, 0.4, 0.0, 0.0, 0.0))  # takes effect at once
        for name, value in (("setpoint_rate_hz", 50.0), ("connection", "udpin:0.0.0.0:1"), ("allow_arming", True),
                            ("require_policy_live", False), ("publish_tf", False)):
            result, = set_params(**{name: value})
            assert not result.successful and "read-only" in result.reason, (name, result.reason)
        result, = set_params(handback_timeout_s=1.0)  # below action_timeout_s (1.5): refused, names the rule
        assert not result.successful and "must exceed action_timeout_s" in result.reason
        result, = set_params(handback_timeout_s=10.0)
        assert result.successful
        assert bridge.failsafe.config.handback_timeout_s == 10.0
        assert bridge.get_parameter("setpoint_rate_hz").value == 20.0
        assert bridge.failsafe.config.max_horizontal_speed_mps == 0.4


# -- vehicle state (issue 14: the bridge reads it) ----------------------------------------------------------------
def test_vehicle_state_becomes_enu_flu_odometry_battery_and_feeds_the_geofence():
    from sensor_msgs.msg import BatteryState

    with AutopilotProcess("px4", heartbeat_hz=10.0) as px4, running_bridge(
            px4, geofence_radius_m=2.0) as (bridge, probe):
        odoms, batteries = [], []
        probe.node.create_subscription(Odometry, "mavlink/odom", odoms.append, 10)
        probe.node.create_subscription(BatteryState, "mavlink/battery", batteries.append, 10)
        # NED position (north 1, east 0, 1 m up), moving north at 1 m/s, facing east (yaw 90 deg NED), yawing
        # right at 0.2 rad/s (FRD): ENU (0, 1, 1), facing +x (ENU yaw 0), body velocity = 1 m/s to the LEFT
        px4.send("position 1.0 0.0 -1.0 1.0 0.0 0.0")
        px4.send(f"attitude 0.0 0.0 {math.pi / 2} 0.0 0.0 0.2")
        px4.send("battery 4100,4000,4050,4150 1250 73")
        assert wait_until(lambda: odoms and batteries)
        odom = odoms[-1]
        assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        assert (p.x, p.y, p.z) == pytest.approx((0.0, 1.0, 1.0), abs=1e-6)
        assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, 0.0, 0.0, 1.0), abs=1e-6)
        v, w = odom.twist.twist.linear, odom.twist.twist.angular
        assert (v.x, v.y, v.z) == pytest.approx((0.0, 1.0, 0.0), abs=1e-6)
        assert (w.x, w.y, w.z) == pytest.approx((0.0, 0.0, -0.2), abs=1e-6)  # right (FRD +) is negative in FLU
        battery = batteries[-1]
        assert battery.voltage == pytest.approx(16.3) and battery.current == pytest.approx(-12.5)
        assert battery.percentage == pytest.approx(0.73) and list(battery.cell_voltage) == pytest.approx(
            [4.1, 4.0, 4.05, 4.15])
        # the geofence runs on the FC's estimate: 3 m east of the start, facing east, forward is outward
        probe.command = (0.8, 0.4, 0.0, 0.0, "base_link")
        assert wait_until(lambda: setpoint_is(px4, 0.8, -0.4, 0.0, 0.0))
        px4.send("position 1.0 3.0 -1.0 0.0 0.0 0.0")
        assert wait_until(lambda: setpoint_is(px4, 0.0, -0.4, 0.0, 0.0)), latest_setpoint(px4)
        assert wait_until(lambda: any("outside geofence" in s.message for s in probe.diagnostics))


def test_tf_transform_is_the_odometry_pose_and_its_availability_is_reported():
    from liquid_control.deploy.vehicle_state import Attitude, LocalPosition, odometry
    from liquid_control.nodes.common import tf_message_class
    from liquid_control.nodes.vehicle_msgs import transform_msg

    odom = odometry(LocalPosition((1.0, 2.0, -3.0), (0.0, 0.0, 0.0), 0.0), Attitude(0.0, 0.0, 0.0, (0, 0, 0), 0.0))
    msg = transform_msg(odom, rclpy.time.Time(seconds=5).to_msg(), "odom", "base_link")
    t, r = msg.transform.translation, msg.transform.rotation
    assert (msg.header.frame_id, msg.child_frame_id, msg.header.stamp.sec) == ("odom", "base_link", 5)
    assert (t.x, t.y, t.z) == pytest.approx((2.0, 1.0, 3.0)) and (r.x, r.y, r.z, r.w) == pytest.approx(odom.orientation)
    tf_class = tf_message_class()
    with AutopilotProcess("px4", heartbeat_hz=10.0) as px4, running_bridge(px4) as (bridge, probe):
        received = []
        if tf_class is not None:  # a ROS install: the transform goes out on /tf
            probe.node.create_subscription(tf_class, "/tf", received.append, 100)
        px4.send("position 1.0 2.0 -3.0 0.0 0.0 0.0")
        px4.send("attitude 0.0 0.0 0.0 0.0 0.0 0.0")
        assert wait_until(lambda: probe.diagnostics)
        values = dict((kv.key, kv.value) for kv in probe.diagnostics[-1].values)
        if tf_class is None:  # pip-only rclpy (no tf2_msgs wheel): no TF, and the bridge says so
            assert values["tf"] == "unavailable: tf2_msgs not installed"
        else:
            assert values["tf"] == "on"
            assert wait_until(lambda: received)
            tf = received[-1].transforms[0]
            assert (tf.child_frame_id, tf.transform.translation.x) == ("base_link", pytest.approx(2.0))
