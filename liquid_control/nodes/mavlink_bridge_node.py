"""ROS 2 node: cmd_vel (heading frame FLU: yaw-only) -> MAVLink velocity setpoints for PX4 / ArduPilot, with failsafes.

Subscribes `cmd_vel` (geometry_msgs/TwistStamped, frame base_link) and `odom`
(nav_msgs/Odometry, for the geofence); publishes `mavlink/mode` (String),
`mavlink/armed` (Bool), `mavlink/connected` (Bool) and `/diagnostics`; serves
`mavlink/arm` (SetBool) and `mavlink/set_offboard` (Trigger), which refuse unless
`allow_arming` / `allow_mode_change` are true. Logic lives in
liquid_control.deploy (mavlink_link, failsafe); this file only adapts ROS.
"""
# No `from __future__ import annotations` here: rclpy finds the TimerInfo argument of a timer
# callback by comparing the real annotation object, which string annotations would break.
import sys

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
try:
    from rclpy.timer import TimerInfo  # Kilted and later: the executor passes expected/actual call times
except ImportError:  # older distributions (e.g. Humble on JetPack): lateness against the nominal period
    TimerInfo = None
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from liquid_control.deploy.failsafe import Failsafe, FailsafeAction, FailsafeConfig
from liquid_control.deploy.mavlink_link import (CommandNotAllowed, MavlinkLink, MavlinkLinkConfig,
                                                MavlinkLinkError, VelocityCommand)
from liquid_control.interfaces.topics import (CMD_VEL, MAVLINK_ARM, MAVLINK_ARMED, MAVLINK_CONNECTED, MAVLINK_MODE,
                                              MAVLINK_SET_OFFBOARD, ODOM)
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, declare_parameters_with_ranges,
                                         make_status, now_seconds, qos_profile, spin_node)
from liquid_control.util.timing import LoopTiming

PARAMETERS = [
    ParamSpec("connection", "udpin:0.0.0.0:14540", "MAVLink connection: udpin:/udpout:/tcp:/tcpin:HOST:PORT, "
              "serial:/dev/DEVICE[:BAUD] or a device path"),
    ParamSpec("baud", 921600, "serial baud rate (bit/s)", 1200, 4000000),
    ParamSpec("source_system", 1, "our MAVLink system id", 1, 255),
    ParamSpec("source_component", 191, "our MAVLink component id (191 = onboard computer)", 1, 255),
    ParamSpec("target_system", 0, "vehicle system id; 0 = first autopilot heard", 0, 255),
    ParamSpec("target_component", 1, "vehicle component id (1 = autopilot)", 0, 255),
    ParamSpec("command_frame_id", "base_link",
              "cmd_vel frame_id accepted besides empty (velocities in the heading frame FLU)"),
    ParamSpec("setpoint_rate_hz", 20.0, "setpoint stream rate (Hz); PX4 offboard needs > 2 Hz", 10.0, 100.0),
    ParamSpec("heartbeat_rate_hz", 1.0, "our HEARTBEAT rate (Hz)", 0.5, 5.0),
    ParamSpec("diagnostics_rate_hz", 1.0, "/diagnostics rate (Hz)", 0.2, 10.0),
    ParamSpec("command_timeout_s", 0.5, "cmd_vel older than this -> stream zero velocity (s)", 0.05, 5.0),
    ParamSpec("action_timeout_s", 3.0, "cmd_vel older than this -> failsafe action (s)", 0.2, 60.0),
    ParamSpec("failsafe_action", "hover", "mode to switch to when commands stop (needs allow_mode_change)",
              choices=tuple(a.value for a in FailsafeAction)),
    ParamSpec("heartbeat_timeout_s", 3.0, "no vehicle heartbeat for this long -> stop streaming (s)", 0.5, 30.0),
    ParamSpec("max_horizontal_speed_mps", 1.0, "clamp on |(vx, vy)| (m/s)", 0.01, 20.0),
    ParamSpec("max_vertical_speed_mps", 0.5, "clamp on |vz| (m/s)", 0.01, 10.0),
    ParamSpec("max_yaw_rate_radps", 1.0, "clamp on |yaw rate| (rad/s)", 0.01, 6.3),
    ParamSpec("geofence_radius_m", 0.0, "max distance from the first odom position (m); 0 disables", 0.0, 10000.0),
    ParamSpec("odom_timeout_s", 1.0, "odom older than this with the fence on -> hover (s)", 0.05, 10.0),
    ParamSpec("allow_arming", False, "let the mavlink/arm service send arm/disarm commands", read_only=True),
    ParamSpec("allow_mode_change", False, "let failsafes and mavlink/set_offboard change the flight mode",
              read_only=True),
]


class MavlinkBridgeNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("mavlink_bridge", **node_kwargs)
        p = declare_parameters_with_ranges(self, PARAMETERS)
        self.failsafe = Failsafe(FailsafeConfig(
            command_timeout_s=p["command_timeout_s"], action_timeout_s=p["action_timeout_s"],
            action=p["failsafe_action"], allow_mode_change=p["allow_mode_change"],
            heartbeat_timeout_s=p["heartbeat_timeout_s"], max_horizontal_speed_mps=p["max_horizontal_speed_mps"],
            max_vertical_speed_mps=p["max_vertical_speed_mps"], max_yaw_rate_radps=p["max_yaw_rate_radps"],
            geofence_radius_m=p["geofence_radius_m"], odom_timeout_s=p["odom_timeout_s"]))
        self.link = MavlinkLink(MavlinkLinkConfig(
            connection=p["connection"], baud=p["baud"], source_system=p["source_system"],
            source_component=p["source_component"], target_system=p["target_system"],
            target_component=p["target_component"], heartbeat_timeout_s=p["heartbeat_timeout_s"],
            allow_arming=p["allow_arming"], allow_mode_change=p["allow_mode_change"]))
        self.link.open()
        self.command_frames = ("", p["command_frame_id"])
        self.loop = LoopTiming(1.0 / p["setpoint_rate_hz"])
        self.decision = self.failsafe.step(now_seconds(self))
        self.create_subscription(TwistStamped, CMD_VEL.name, self.on_cmd_vel, qos_profile(CMD_VEL))
        self.create_subscription(Odometry, ODOM.name, self.on_odom, qos_profile(ODOM, subscriber=True))
        self.mode_pub = self.create_publisher(String, MAVLINK_MODE.name, qos_profile(MAVLINK_MODE))
        self.armed_pub = self.create_publisher(Bool, MAVLINK_ARMED.name, qos_profile(MAVLINK_ARMED))
        self.connected_pub = self.create_publisher(Bool, MAVLINK_CONNECTED.name, qos_profile(MAVLINK_CONNECTED))
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_service(SetBool, MAVLINK_ARM.name, self.on_arm)
        self.create_service(Trigger, MAVLINK_SET_OFFBOARD.name, self.on_set_offboard)
        self.create_timer(1.0 / p["setpoint_rate_hz"], self.on_setpoint_timer)
        self.create_timer(1.0 / p["heartbeat_rate_hz"], self.send_heartbeat)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self.publish_diagnostics)
        self._published_state: tuple | None = None
        self.send_heartbeat()  # lets a udpin autopilot learn our address at once
        self.get_logger().info(f"MAVLink bridge on {p['connection']} at {p['setpoint_rate_hz']} Hz; "
                               f"arming {'ENABLED' if p['allow_arming'] else 'disabled'}, "
                               f"mode changes {'ENABLED' if p['allow_mode_change'] else 'disabled'}")

    def _guarded(self, action):
        """Run one link operation; errors are logged and counted, the node keeps running (fail safe)."""
        try:
            return action()
        except (MavlinkLinkError, CommandNotAllowed, ValueError) as exc:
            self.loop.count("link_errors")
            self.get_logger().error(f"MAVLink: {exc}", throttle_duration_sec=2.0)
            return None

    def send_heartbeat(self) -> None:
        self._guarded(self.link.send_heartbeat)

    def on_cmd_vel(self, msg: TwistStamped) -> None:
        if msg.header.frame_id not in self.command_frames:
            self.loop.count("wrong_frame_commands")
            self.get_logger().warning(f"cmd_vel in frame '{msg.header.frame_id}' ignored; expected body "
                                      f"'{self.command_frames[1]}'", throttle_duration_sec=5.0)
            return
        t = msg.twist
        self.failsafe.on_command(VelocityCommand(t.linear.x, t.linear.y, t.linear.z, t.angular.z),
                                 now_seconds(self))

    def on_odom(self, msg: Odometry) -> None:
        pose = msg.pose.pose
        self.failsafe.on_odometry((pose.position.x, pose.position.y, pose.position.z),
                                  (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w),
                                  now_seconds(self))

    def on_setpoint_timer(self, info: TimerInfo = None) -> None:
        now = now_seconds(self)
        if info is None:
            self.loop.tick(now)
        else:
            self.loop.tick(info.actual_call_time.nanoseconds * 1e-9, info.expected_call_time.nanoseconds * 1e-9)
        # Each step guarded on its own: a failed mode request must not cost the setpoint.
        if self._guarded(lambda: self.link.poll(now)):
            self.failsafe.on_vehicle_heartbeat(now)
        self.decision = self.failsafe.step(now)
        if self.decision.stream:
            self._guarded(lambda: self.link.send_velocity(self.decision.setpoint))
        if self.decision.request_action is not None:
            self.get_logger().error(f"{self.decision.message}")
            self._guarded(lambda: self.link.send_mode(self.link.mode_name(self.decision.request_action.value)))
        self.publish_state(now)

    def publish_state(self, now: float) -> None:
        vehicle, health = self.link.vehicle, self.link.health(now)
        state = (vehicle.mode, vehicle.armed, health.connected)
        if state != self._published_state:  # latched topics: publish on change only
            self.mode_pub.publish(String(data=vehicle.mode))
            self.armed_pub.publish(Bool(data=vehicle.armed))
            self.connected_pub.publish(Bool(data=health.connected))
            self._published_state = state

    def publish_diagnostics(self) -> None:
        now = now_seconds(self)
        d, vehicle, health = self.decision, self.link.vehicle, self.link.health(now)
        values = {"state": d.state.value, "streaming": d.stream, "vehicle_mode": vehicle.mode,
                  "vehicle_armed": vehicle.armed, "autopilot": vehicle.family, "vehicle_system_id": vehicle.system_id,
                  "connected": health.connected, "heartbeat_age_s": health.heartbeat_age_s,
                  "messages_received": health.messages_received, "receive_errors": health.receive_errors,
                  "setpoints_sent": health.setpoints_sent, **self.loop.summary(now),
                  **{k: v for k, v in self.failsafe.counters.items()}}
        self.diagnostics.publish(make_status("mavlink_bridge", d.level, d.message, values,
                                             hardware_id=self.link.config.connection))

    def on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        return self._command_service(response, lambda: self.link.send_arm(request.data),
                                     "arm" if request.data else "disarm")

    def on_set_offboard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self.link.config.allow_mode_change:
            response.success, response.message = False, "offboard mode refused: allow_mode_change is false"
            return response
        if not self.decision.stream:  # PX4 rejects offboard without a setpoint stream
            response.success, response.message = False, f"not streaming setpoints ({self.decision.message})"
            return response
        return self._command_service(response, lambda: self.link.send_mode(self.link.mode_name("offboard")),
                                     "offboard mode")

    def _command_service(self, response, send, what: str):
        try:
            send()
            response.success, response.message = True, f"{what} command sent (watch mavlink/mode, mavlink/armed)"
            self.get_logger().warning(f"operator request: {what} command sent")
        except (CommandNotAllowed, MavlinkLinkError, ValueError) as exc:
            response.success, response.message = False, f"{what} refused: {exc}"
        return response

    def close(self) -> None:
        self.link.close()


def main(args: list[str] | None = None) -> int:
    return spin_node(MavlinkBridgeNode, args)


if __name__ == "__main__":
    sys.exit(main())
