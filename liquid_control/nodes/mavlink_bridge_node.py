"""ROS 2 node: cmd_vel (heading frame FLU: yaw-only) -> MAVLink velocity setpoints for PX4 / ArduPilot, with failsafes.

Subscribes `cmd_vel` (geometry_msgs/TwistStamped, frame base_link), `policy/live`
(std_msgs/Bool, the policy's liveness) and, with odometry_source:=topic, `odom` (for
the geofence); publishes `mavlink/mode` (String), `mavlink/armed` (Bool),
`mavlink/connected` (Bool), the vehicle's own estimate as `mavlink/odom`
(nav_msgs/Odometry, ENU/FLU), `mavlink/battery` (sensor_msgs/BatteryState) and TF
odom -> base_link, and `/diagnostics`; serves `mavlink/arm` (SetBool) and
`mavlink/set_offboard` (Trigger), which refuse unless `allow_arming` /
`allow_mode_change` are true. After `handback_timeout_s` without live policy output it
stops streaming, so the flight controller's own offboard-loss failsafe takes over.
Failsafe thresholds and limits apply on `ros2 param set`; connection, rates and
permissions are read-only. Logic lives in liquid_control.deploy (mavlink_link,
failsafe, vehicle_state); this file only adapts ROS.
"""
# No `from __future__ import annotations` here: rclpy finds the TimerInfo argument of a timer
# callback by comparing the real annotation object, which string annotations would break.
import sys
from dataclasses import asdict

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
try:
    from rclpy.timer import TimerInfo  # Kilted and later: the executor passes expected/actual call times
except ImportError:  # older distributions (e.g. Humble on JetPack): lateness against the nominal period
    TimerInfo = None
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from liquid_control.deploy import vehicle_state
from liquid_control.deploy.failsafe import Failsafe, FailsafeAction, FailsafeConfig
from liquid_control.deploy.mavlink_link import (CommandNotAllowed, MavlinkLink, MavlinkLinkConfig,
                                                MavlinkLinkError, VelocityCommand, offboard_mode)
from liquid_control.interfaces.topics import (CMD_VEL, MAVLINK_ARM, MAVLINK_ARMED, MAVLINK_BATTERY, MAVLINK_CONNECTED,
                                              MAVLINK_MODE, MAVLINK_ODOM, MAVLINK_SET_OFFBOARD, ODOM, POLICY_LIVE, TF)
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, declare_parameters_with_ranges,
                                         make_status, now_seconds, qos_profile, spin_node, tf_message_class)
from liquid_control.nodes.vehicle_msgs import battery_msg, odometry_msg, transform_msg
from liquid_control.util.timing import LoopTiming

# Parameter -> FailsafeConfig field, for the parameters applied on change (checked together by FailsafeConfig).
LIVE_PARAMETERS = {"command_timeout_s": "command_timeout_s", "action_timeout_s": "action_timeout_s",
                   "handback_timeout_s": "handback_timeout_s", "failsafe_action": "action",
                   "heartbeat_timeout_s": "heartbeat_timeout_s",
                   "max_horizontal_speed_mps": "max_horizontal_speed_mps",
                   "max_vertical_speed_mps": "max_vertical_speed_mps", "max_yaw_rate_radps": "max_yaw_rate_radps",
                   "geofence_radius_m": "geofence_radius_m", "odom_timeout_s": "odom_timeout_s"}
FIXED = dict(read_only=True)  # read once at start: `ros2 param set` is refused instead of silently ignored
PARAMETERS = [
    ParamSpec("connection", "udpin:0.0.0.0:14540", "MAVLink connection: udpin:/udpout:/tcp:/tcpin:HOST:PORT, "
              "serial:/dev/DEVICE[:BAUD] or a device path", **FIXED),
    ParamSpec("baud", 921600, "serial baud rate (bit/s)", 1200, 4000000, **FIXED),
    ParamSpec("source_system", 1, "our MAVLink system id", 1, 255, **FIXED),
    ParamSpec("source_component", 191, "our MAVLink component id (191 = onboard computer)", 1, 255, **FIXED),
    ParamSpec("target_system", 0, "vehicle system id; 0 = first autopilot heard", 0, 255, **FIXED),
    ParamSpec("target_component", 1, "vehicle component id (1 = autopilot)", 0, 255, **FIXED),
    ParamSpec("command_frame_id", "base_link",
              "cmd_vel frame_id accepted besides empty (velocities in the heading frame FLU)", **FIXED),
    ParamSpec("setpoint_rate_hz", 20.0, "setpoint stream rate (Hz); PX4 offboard needs > 2 Hz", 10.0, 100.0, **FIXED),
    ParamSpec("heartbeat_rate_hz", 1.0, "our HEARTBEAT rate (Hz)", 0.5, 5.0, **FIXED),
    ParamSpec("diagnostics_rate_hz", 1.0, "/diagnostics rate (Hz)", 0.2, 10.0, **FIXED),
    ParamSpec("command_timeout_s", 0.5, "cmd_vel older than this -> stream zero velocity (s)", 0.05, 5.0),
    ParamSpec("action_timeout_s", 1.5, "no live policy output this long -> failsafe_action (needs "
              "allow_mode_change and the vehicle in offboard/guided) (s)", 0.2, 60.0),
    ParamSpec("handback_timeout_s", 3.0, "no live policy output this long -> stop streaming setpoints, so the "
              "flight controller's offboard-loss failsafe takes over (PX4 COM_OF_LOSS_T, ArduPilot GUID_TIMEOUT) "
              "(s)", 0.3, 120.0),
    ParamSpec("require_policy_live", True, "count cmd_vel as live only while policy/live says so (false: any valid "
              "cmd_vel is live, for sources without policy/live such as teleop)", **FIXED),
    ParamSpec("failsafe_action", "hover", "mode to switch to when live output stops (needs allow_mode_change)",
              choices=tuple(a.value for a in FailsafeAction)),
    ParamSpec("heartbeat_timeout_s", 3.0, "no vehicle heartbeat for this long -> stop streaming (s)", 0.5, 30.0),
    ParamSpec("max_horizontal_speed_mps", 1.0, "clamp on |(vx, vy)| (m/s)", 0.01, 20.0),
    ParamSpec("max_vertical_speed_mps", 0.5, "clamp on |vz| (m/s)", 0.01, 10.0),
    ParamSpec("max_yaw_rate_radps", 1.0, "clamp on |yaw rate| (rad/s)", 0.01, 6.3),
    ParamSpec("geofence_radius_m", 0.0, "max distance from the first odometry position (m); 0 disables",
              0.0, 10000.0),
    ParamSpec("odom_timeout_s", 1.0, "odometry older than this with the fence on -> hover (s)", 0.05, 10.0),
    ParamSpec("odometry_source", "vehicle", "geofence odometry: vehicle (the FC's LOCAL_POSITION_NED + ATTITUDE) "
              "or topic (nav_msgs/Odometry on odom, e.g. VIO)", choices=("vehicle", "topic"), **FIXED),
    ParamSpec("publish_tf", True, "publish TF odom_frame_id -> base_frame_id from the FC's estimate (turn off when "
              "another node, e.g. MAVROS, publishes it)", **FIXED),
    ParamSpec("odom_frame_id", "odom", "world frame of mavlink/odom and TF (ENU, REP-105)", **FIXED),
    ParamSpec("base_frame_id", "base_link", "body frame of mavlink/odom and TF (FLU, REP-103)", **FIXED),
    ParamSpec("allow_arming", False, "let the mavlink/arm service send arm/disarm commands", **FIXED),
    ParamSpec("allow_mode_change", False, "let failsafes and mavlink/set_offboard change the flight mode", **FIXED),
]


class MavlinkBridgeNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("mavlink_bridge", **node_kwargs)
        self.p = p = declare_parameters_with_ranges(self, PARAMETERS)
        self.failsafe = Failsafe(FailsafeConfig(
            **{field: p[name] for name, field in LIVE_PARAMETERS.items()},
            allow_mode_change=p["allow_mode_change"], require_live=p["require_policy_live"]))
        self.add_on_set_parameters_callback(self.on_set_parameters)
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
        self.create_subscription(Bool, POLICY_LIVE.name, self.on_policy_live, qos_profile(POLICY_LIVE))
        if p["odometry_source"] == "topic":
            self.create_subscription(Odometry, ODOM.name, self.on_odom, qos_profile(ODOM, subscriber=True))
        self.mode_pub = self.create_publisher(String, MAVLINK_MODE.name, qos_profile(MAVLINK_MODE))
        self.armed_pub = self.create_publisher(Bool, MAVLINK_ARMED.name, qos_profile(MAVLINK_ARMED))
        self.connected_pub = self.create_publisher(Bool, MAVLINK_CONNECTED.name, qos_profile(MAVLINK_CONNECTED))
        self.odom_pub = self.create_publisher(Odometry, MAVLINK_ODOM.name, qos_profile(MAVLINK_ODOM))
        self.battery_pub = self.create_publisher(BatteryState, MAVLINK_BATTERY.name, qos_profile(MAVLINK_BATTERY))
        tf_class = tf_message_class() if p["publish_tf"] else None
        self.tf = (tf_class, self.create_publisher(tf_class, TF.name, qos_profile(TF))) if tf_class else None
        self.tf_state = "on" if self.tf else ("off" if not p["publish_tf"] else "unavailable: tf2_msgs not installed")
        if p["publish_tf"] and not self.tf:
            self.get_logger().warning("publish_tf: tf2_msgs is not installed, no TF (install ros-$ROS_DISTRO-tf2-msgs)")
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
                               f"mode changes {'ENABLED' if p['allow_mode_change'] else 'disabled'}; hand-back to "
                               f"the flight controller after {p['handback_timeout_s']} s without live output")

    def on_set_parameters(self, parameters) -> SetParametersResult:
        """Failsafe thresholds and limits take effect at once, if FailsafeConfig accepts them all together."""
        changes = {LIVE_PARAMETERS[q.name]: q.value for q in parameters if q.name in LIVE_PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            config = FailsafeConfig(**{**asdict(self.failsafe.config), **changes})
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.failsafe.config = config
        self.link.config.heartbeat_timeout_s = config.heartbeat_timeout_s
        self.get_logger().warning(f"failsafe settings changed: {changes}")
        return SetParametersResult(successful=True)

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

    def on_policy_live(self, msg: Bool) -> None:
        self.failsafe.on_liveness(msg.data, now_seconds(self))

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
            self.failsafe.on_vehicle_heartbeat(now, offboard_mode(self.link.vehicle))
        self.publish_vehicle_state(self.link.take_updates())
        self.decision = d = self.failsafe.step(now)
        if d.event == "handed_back":
            self.get_logger().error(d.message)
        elif d.event == "resumed":
            self.get_logger().warning("live policy output is back and the vehicle left offboard: streaming resumed")
        if d.stream:
            self._guarded(lambda: self.link.send_velocity(d.setpoint))
        if d.request_action is not None:
            self.get_logger().error(f"{d.message}")
            self._guarded(lambda: self.link.send_mode(self.link.mode_name(d.request_action.value)))
        self.publish_state()

    def publish_vehicle_state(self, updates: set) -> None:
        """mavlink/odom + TF on each new position (with the newest attitude), mavlink/battery on each reading;
        with odometry_source:=vehicle the same pose feeds the geofence."""
        stamp = self.get_clock().now().to_msg()
        position, attitude = self.link.local_position, self.link.attitude
        if "position" in updates and position is not None and attitude is not None:
            odom = vehicle_state.odometry(position, attitude)
            frames = (self.p["odom_frame_id"], self.p["base_frame_id"])
            self.odom_pub.publish(odometry_msg(odom, stamp, *frames))
            if self.tf:
                self.tf[1].publish(self.tf[0](transforms=[transform_msg(odom, stamp, *frames)]))
            if self.p["odometry_source"] == "vehicle":
                self.failsafe.on_odometry(odom.position, odom.orientation, now_seconds(self))
        if "battery" in updates and self.link.battery is not None:
            self.battery_pub.publish(battery_msg(self.link.battery, stamp, self.p["base_frame_id"]))

    def publish_state(self) -> None:
        vehicle, health = self.link.vehicle, self.link.health(now_seconds(self))
        state = (vehicle.mode, vehicle.armed, health.connected)
        if state != self._published_state:  # latched topics: publish on change only
            self.mode_pub.publish(String(data=vehicle.mode))
            self.armed_pub.publish(Bool(data=vehicle.armed))
            self.connected_pub.publish(Bool(data=health.connected))
            self._published_state = state

    def publish_diagnostics(self) -> None:
        now = now_seconds(self)
        d, vehicle, health, cfg = self.decision, self.link.vehicle, self.link.health(now), self.failsafe.config
        values = {"state": d.state.value, "streaming": d.stream, "handed_back": self.failsafe.handed_back,
                  "live_output_age_s": d.live_age_s, "handback_timeout_s": cfg.handback_timeout_s,
                  "action_timeout_s": cfg.action_timeout_s, "failsafe_action": cfg.action.value,
                  "allow_mode_change": cfg.allow_mode_change, "require_policy_live": cfg.require_live,
                  "vehicle_mode": vehicle.mode, "vehicle_armed": vehicle.armed, "autopilot": vehicle.family,
                  "vehicle_system_id": vehicle.system_id, "connected": health.connected,
                  "heartbeat_age_s": health.heartbeat_age_s, "messages_received": health.messages_received,
                  "receive_errors": health.receive_errors, "setpoints_sent": health.setpoints_sent,
                  "tf": self.tf_state, **self.loop.summary(now), **dict(self.failsafe.counters)}
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
