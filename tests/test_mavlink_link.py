"""MAVLink link (no ROS): connection strings, FLU->FRD, what goes on the wire, heartbeat parsing, link health."""
import socket
import time

import pytest
from pymavlink import mavutil

from liquid_control.deploy.mavlink_link import (MAV_FRAME_BODY_NED, VELOCITY_YAW_RATE_TYPE_MASK, CommandNotAllowed,
                                                MavlinkLink, MavlinkLinkConfig, MavlinkLinkError,
                                                VelocityCommand, flu_to_frd, parse_connection)
from mavlink_test_autopilot import AutopilotProcess

mavlink = mavutil.mavlink


def test_type_mask_selects_velocity_and_yaw_rate_only():
    assert VELOCITY_YAW_RATE_TYPE_MASK == 1479 and MAV_FRAME_BODY_NED == 8
    used = [bit for bit in range(12) if not VELOCITY_YAW_RATE_TYPE_MASK & (1 << bit)]
    assert used == [3, 4, 5, 9, 11]  # vx, vy, vz, force-flag clear (= accel is accel), yaw rate


def test_flu_to_frd_negates_y_z_and_yaw_rate():
    assert flu_to_frd(VelocityCommand(1.0, 2.0, 3.0, 0.5)) == (1.0, -2.0, -3.0, -0.5)
    # left in FLU is right-negative in FRD; up is down-negative; CCW yaw is negative CW yaw
    assert flu_to_frd(VelocityCommand(0.0, 1.0, 0.0, 0.0))[1] == -1.0


@pytest.mark.parametrize("text, kind, address, baud", [
    ("udpin:0.0.0.0:14540", "udpin", "0.0.0.0:14540", 921600),
    ("udp:127.0.0.1:0", "udpin", "127.0.0.1:0", 921600),
    ("udpout:192.168.1.5:14550", "udpout", "192.168.1.5:14550", 921600),
    ("tcp:localhost:5760", "tcp", "localhost:5760", 921600),
    ("tcpin:0.0.0.0:5760", "tcpin", "0.0.0.0:5760", 921600),
    ("serial:/dev/ttyTHS1:57600", "serial", "/dev/ttyTHS1", 57600),
    ("serial:/dev/ttyACM0", "serial", "/dev/ttyACM0", 921600),
    ("/dev/ttyUSB0", "serial", "/dev/ttyUSB0", 921600),
])
def test_parse_connection_accepts_udp_tcp_serial(text, kind, address, baud):
    spec = parse_connection(text)
    assert (spec.kind, spec.address, spec.baud) == (kind, address, baud)


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("udpout:127.0.0.1:0", "outside 1..65535"),
    ("udpin:0.0.0.0:70000", "outside"),
    ("tcp:localhost:http", "not a number"),
    ("udp:14540", "HOST:PORT"),
    ("bluetooth:aa:bb", "not understood"),
    ("serial:", "missing serial device"),
])
def test_parse_connection_rejects_bad_strings_with_a_clear_message(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_connection(text)


def test_config_rejects_bad_ids():
    with pytest.raises(ValueError, match="source_system"):
        MavlinkLinkConfig(source_system=0)
    with pytest.raises(ValueError, match="not understood"):
        MavlinkLinkConfig(connection="carrier-pigeon")


def test_missing_serial_device_is_a_clear_error():
    link = MavlinkLink(MavlinkLinkConfig(connection="serial:/dev/does-not-exist-liquid:57600"))
    with pytest.raises(MavlinkLinkError, match="does-not-exist-liquid"):
        link.open()


def _poll_until(link, condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        link.poll(time.monotonic())
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def px4():
    with AutopilotProcess("px4", heartbeat_hz=10.0) as autopilot:
        yield autopilot


def _open_link(autopilot, **overrides):
    link = MavlinkLink(MavlinkLinkConfig(connection=autopilot.bridge_connection, heartbeat_timeout_s=0.5,
                                         **overrides))
    link.open()
    link.send_heartbeat()  # the autopilot answers once it has heard from us
    assert _poll_until(link, lambda: link.vehicle.heartbeats > 0), "no heartbeat from the test autopilot"
    return link


def test_px4_link_streams_frd_setpoints_and_decodes_heartbeats(px4):
    link = _open_link(px4)
    try:
        assert link.vehicle.family == "px4" and link.vehicle.mode == "POSCTL" and not link.vehicle.armed
        assert px4.wait_for(lambda ev: any(e["type"] == mavlink.MAV_TYPE_ONBOARD_CONTROLLER
                                           and e["autopilot"] == mavlink.MAV_AUTOPILOT_INVALID
                                           and e["component"] == 191 for e in ev), "heartbeat")
        link.send_velocity(VelocityCommand(1.0, 0.5, 0.25, 0.3))
        assert px4.wait_for(lambda ev: len(ev) >= 1, "setpoint")
        sp = px4.events("setpoint")[0]
        assert sp["frame"] == 8 and sp["type_mask"] == 1479
        assert (sp["vx"], sp["vy"], sp["vz"], sp["yaw_rate"]) == pytest.approx((1.0, -0.5, -0.25, -0.3))
        assert (sp["target_system"], sp["target_component"]) == (1, 1)
        with pytest.raises(ValueError, match="non-finite"):
            link.send_velocity(VelocityCommand(float("nan"), 0.0, 0.0, 0.0))
        # mode and armed flag follow the vehicle's heartbeat
        px4.send("mode OFFBOARD")
        px4.send("arm")
        assert _poll_until(link, lambda: link.vehicle.mode == "OFFBOARD" and link.vehicle.armed)
        assert link.health(time.monotonic()).connected
    finally:
        link.close()


def test_link_health_reports_loss_when_heartbeats_stop(px4):
    link = _open_link(px4)
    try:
        px4.send("heartbeat off")
        time.sleep(0.2)
        link.poll(time.monotonic())  # drain what was in flight
        assert _poll_until(link, lambda: not link.health(time.monotonic()).connected, timeout_s=3.0)
        health = link.health(time.monotonic())
        assert health.heartbeat_age_s > 0.5 and health.heartbeats > 0
        px4.send("heartbeat on")
        assert _poll_until(link, lambda: link.health(time.monotonic()).connected, timeout_s=3.0)
    finally:
        link.close()


def test_arm_and_mode_commands_refused_unless_enabled(px4):
    link = _open_link(px4)
    try:
        with pytest.raises(CommandNotAllowed, match="allow_arming"):
            link.send_arm(True)
        with pytest.raises(CommandNotAllowed, match="allow_mode_change"):
            link.send_mode("OFFBOARD")
        link.send_velocity(VelocityCommand())  # a marker that everything before it has arrived
        assert px4.wait_for(lambda ev: len(ev) >= 1, "setpoint")
        assert px4.events("command_long") == [] and px4.events("set_mode") == []
    finally:
        link.close()


def test_px4_mode_and_arm_commands_when_enabled(px4):
    link = _open_link(px4, allow_arming=True, allow_mode_change=True)
    try:
        link.send_mode(link.mode_name("offboard"))
        link.send_arm(True)
        assert px4.wait_for(lambda ev: len(ev) >= 2, "command_long")
        set_mode, arm = px4.events("command_long")[:2]
        assert set_mode["command"] == mavlink.MAV_CMD_DO_SET_MODE
        assert set_mode["params"][1:3] == [6.0, 0.0]  # PX4 main mode OFFBOARD, no sub mode
        assert arm["command"] == mavlink.MAV_CMD_COMPONENT_ARM_DISARM and arm["params"][0] == 1.0
        assert _poll_until(link, lambda: link.vehicle.mode == "OFFBOARD" and link.vehicle.armed)
        assert link.last_ack is not None and link.last_ack.result == mavlink.MAV_RESULT_ACCEPTED
        link.send_mode(link.mode_name("land"))
        assert _poll_until(link, lambda: link.vehicle.mode == "LAND")
        with pytest.raises(ValueError, match="unknown PX4 mode"):
            link.send_mode("GUIDED")
    finally:
        link.close()


def test_ardupilot_modes_use_copter_mode_numbers():
    with AutopilotProcess("ardupilot", heartbeat_hz=10.0) as ardupilot:
        link = _open_link(ardupilot, allow_mode_change=True)
        try:
            assert link.vehicle.family == "ardupilot" and link.vehicle.mode == "LOITER"
            assert link.mode_name("offboard") == "GUIDED" and link.mode_name("return") == "RTL"
            link.send_mode("GUIDED")
            assert ardupilot.wait_for(lambda ev: len(ev) >= 1, "command_long")
            command = ardupilot.events("command_long")[0]
            assert command["command"] == mavlink.MAV_CMD_DO_SET_MODE and command["params"][:2] == [1.0, 4.0]
            assert _poll_until(link, lambda: link.vehicle.mode == "GUIDED")
        finally:
            link.close()


def test_tcp_connection_carries_setpoints():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    vehicle = mavutil.mavlink_connection(f"tcpin:127.0.0.1:{port}", source_system=1, source_component=1)
    link = MavlinkLink(MavlinkLinkConfig(connection=f"tcp:127.0.0.1:{port}", target_system=1))
    try:
        link.open()
        link.send_velocity(VelocityCommand(0.0, 0.0, 1.0, 0.0))
        msg = vehicle.recv_match(type="SET_POSITION_TARGET_LOCAL_NED", blocking=True, timeout=5.0)
        assert msg is not None and msg.vz == pytest.approx(-1.0) and msg.coordinate_frame == 8
    finally:
        link.close()
        vehicle.close()


def test_ignores_heartbeats_of_ground_stations():
    # A GCS heartbeat (autopilot INVALID) must not be taken for the vehicle.
    link = MavlinkLink(MavlinkLinkConfig(connection="udpin:127.0.0.1:0"))
    link.open()
    gcs = mavutil.mavlink_connection(f"udpout:127.0.0.1:{link.local_port()}", source_system=255, source_component=190)
    try:
        gcs.mav.heartbeat_send(mavlink.MAV_TYPE_GCS, mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0)
        assert _poll_until(link, lambda: link.messages_received > 0, timeout_s=3.0)
        assert link.vehicle.heartbeats == 0 and link.vehicle.system_id == 0
        with pytest.raises(MavlinkLinkError, match="no vehicle"):
            link.send_velocity(VelocityCommand())
    finally:
        link.close()
        gcs.close()
