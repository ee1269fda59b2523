"""ROS 2 node: the PyBullet drone simulation (DroneWorld episodes) on a ROS graph.

Publishes `/clock` (rosgraph_msgs/Clock, session sim time, every control step),
`camera/image_raw` (sensor_msgs/Image rgb8, header.stamp = capture time in sim
time) + `camera/camera_info` (true intrinsics K) at the camera rate, `odom`
(nav_msgs/Odometry, ground truth: pose in `odom`, twist in body FLU `base_link`),
TF (REP-105: `/tf` odom -> base_link with every odometry message, `/tf_static`
base_link -> the camera optical frame (REP-103) from the camera mount, once, latched;
where tf2_msgs is installed: every ROS 2 install has it, the PyPI wheels do not),
`episode/status` (std_msgs/String JSON, reliable + transient local: events
"start", "end" (the task's metrics, success predicate included), "finished",
and "running" progress at `status_rate_hz`) and `/diagnostics`.
Subscribes `cmd_vel` (geometry_msgs/TwistStamped, heading frame: FLU axes turned by the yaw only,
so x forward and y left stay level whatever the roll and pitch) into the flight controller.
Sensor publishers are reliable (REP-2003), so RViz2's default subscriptions receive them.
Serves `episode/reset` (std_srvs/Trigger): restart at the current `scenario` and
`seed` parameters (set them first: `ros2 param set /sim seed 7`).

Time: steps run on a steady (wall) timer at control_hz * real_time_factor;
real_time_factor 0 steps as fast as possible. Other nodes use `use_sim_time:=true`.
Safety semantics: no cmd_vel for `command_timeout_s` of sim time -> hover; a
non-finite command or one in a frame other than `base_frame_id` is rejected and
counted. Logic: liquid_control.simulation.session.
"""
import json
import sys
import time

from geometry_msgs.msg import TransformStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from liquid_control.interfaces.topics import (CAMERA_IMAGE, CAMERA_INFO, CLOCK, CMD_VEL, EPISODE_RESET,
                                              EPISODE_STATUS, ODOM, TF, TF_STATIC)
from liquid_control.nodes.common import (DiagnosticsPublisher, ParamSpec, declare_parameters_with_ranges,
                                         hardware_id, make_status, qos_profile, spin_node, tf_message_class)
from liquid_control.simulation.session import SimSession, SimSessionConfig
from liquid_control.simulation.camera import CameraConfig, intrinsics, mount_transform
from liquid_control.simulation.scenario import load_scenario
from liquid_control.util.timing import RateMeter

TFMessage = tf_message_class()  # None where tf2_msgs is missing (no PyPI wheel)

PARAMETERS = [
    ParamSpec("scenario", "train_fly_to_target", "scenario name (sim/scenarios) or YAML path; used at start "
              "and by episode/reset"),
    ParamSpec("seed", 0, "seed of the first episode (episode k uses seed + k); used at start and by "
              "episode/reset", 0, 2**31 - 1),
    ParamSpec("autostart", True, "start the first episode at once (false: only /clock runs until episode/reset)",
              read_only=True),
    ParamSpec("episodes", 0, "episodes to fly, then idle (0: until stopped)", 0, 1000000, read_only=True),
    ParamSpec("duration_s", 0.0, "episode length override (s, sim time); 0: the scenario's", 0.0, 3600.0,
              read_only=True),
    ParamSpec("control_hz", 120.0, "command/odometry/clock rate (Hz); must divide the 240 Hz physics", 1.0, 240.0,
              read_only=True),
    ParamSpec("real_time_factor", 1.0, "sim seconds per wall second; 0: as fast as possible", 0.0, 100.0,
              read_only=True),
    ParamSpec("command_timeout_s", 0.25, "cmd_vel older than this (sim s) -> hover", 0.01, 10.0, read_only=True),
    ParamSpec("pause_between_episodes_s", 1.0, "sim seconds of clock without images between episodes "
              "(policy watchdogs trip and reset)", 0.0, 60.0, read_only=True),
    ParamSpec("camera_width", 128, "rendered image width (px)", 8, 1920, read_only=True),
    ParamSpec("camera_height", 96, "rendered image height (px)", 8, 1080, read_only=True),
    ParamSpec("camera_fov_deg", 60.0, "vertical field of view (deg)", 1.0, 170.0, read_only=True),
    ParamSpec("camera_rate_hz", 30.0, "camera frame rate (Hz)", 1.0, 240.0, read_only=True),
    ParamSpec("odom_frame_id", "odom", "world frame of odometry (x forward at yaw 0, y left, z up)", read_only=True),
    ParamSpec("base_frame_id", "base_link", "the body frame (odometry child, TF parent of the camera); also the "
              "frame_id cmd_vel must carry (or empty): its velocities are flown in the heading frame (FLU turned by "
              "yaw only)", read_only=True),
    ParamSpec("camera_frame_id", "camera_optical_frame", "frame_id of images and camera info", read_only=True),
    ParamSpec("publish_tf", True, "publish TF: odom -> base_link on /tf, base_link -> camera optical frame on "
              "/tf_static (needs tf2_msgs)", read_only=True),
    ParamSpec("status_rate_hz", 2.0, "episode/status progress rate (Hz, sim time)", 0.1, 50.0, read_only=True),
    ParamSpec("diagnostics_rate_hz", 1.0, "/diagnostics rate (Hz, wall time)", 0.2, 20.0, read_only=True),
]


class SimNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("sim", **node_kwargs)
        p = declare_parameters_with_ranges(self, PARAMETERS)
        self.p = p
        load_scenario(p["scenario"])  # a bad name/file stops the node now, with the reason
        camera = CameraConfig(width=p["camera_width"], height=p["camera_height"], fov_deg=p["camera_fov_deg"],
                              rate_hz=p["camera_rate_hz"])
        self.session = SimSession(SimSessionConfig(
            scenario=p["scenario"], seed=p["seed"], episodes=p["episodes"], duration_s=p["duration_s"],
            control_hz=p["control_hz"], command_timeout_s=p["command_timeout_s"],
            pause_between_s=p["pause_between_episodes_s"], camera=camera, autostart=p["autostart"]))
        self.counts = {"commands": 0, "rejected_commands": 0, "images": 0, "episodes_ended": 0}
        self.rate = RateMeter()
        self.next_status_s = 0.0
        self.clock_pub = self.create_publisher(ClockMsg, CLOCK.name, qos_profile(CLOCK))
        self.image_pub = self.create_publisher(Image, CAMERA_IMAGE.name, qos_profile(CAMERA_IMAGE))
        self.info_pub = self.create_publisher(CameraInfo, CAMERA_INFO.name, qos_profile(CAMERA_INFO))
        self.odom_pub = self.create_publisher(Odometry, ODOM.name, qos_profile(ODOM))
        self.status_pub = self.create_publisher(String, EPISODE_STATUS.name, qos_profile(EPISODE_STATUS))
        self.create_subscription(TwistStamped, CMD_VEL.name, self.on_cmd_vel, qos_profile(CMD_VEL, subscriber=True))
        self.tf_pub = None
        if p["publish_tf"] and TFMessage is None:
            self.get_logger().warning("publish_tf: tf2_msgs is not installed (no PyPI wheel; every ROS 2 install "
                                      "has it): no TF published")
        elif p["publish_tf"]:
            self.tf_pub = self.create_publisher(TFMessage, TF.name, qos_profile(TF))
            self.tf_static_pub = self.create_publisher(TFMessage, TF_STATIC.name, qos_profile(TF_STATIC))
            self.tf_static_pub.publish(TFMessage(transforms=[self.camera_mount_transform(camera)]))
        self.create_service(Trigger, EPISODE_RESET.name, self.on_reset)
        self.diagnostics = DiagnosticsPublisher(self)
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # stepping must not wait for the clock it publishes
        rtf = p["real_time_factor"]
        self.create_timer(1.0 / (p["control_hz"] * rtf) if rtf > 0 else 1e-6, self.on_step, clock=steady)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self.publish_diagnostics, clock=steady)
        self.camera_info = self.make_camera_info(camera)
        self.get_logger().info(f"sim: {p['scenario']} seed {p['seed']} at {p['control_hz']} Hz, real-time factor "
                               f"{rtf or 'as fast as possible'}")

    def make_camera_info(self, camera: CameraConfig) -> CameraInfo:
        k = [float(v) for v in intrinsics(camera).reshape(-1)]
        info = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob",
                          d=[0.0] * 5, k=k, r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                          p=[k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0])
        info.header.frame_id = self.p["camera_frame_id"]
        return info

    def camera_mount_transform(self, camera: CameraConfig):
        """base_link -> camera optical frame (static; stamp 0, as static transforms are valid at all times)."""
        translation, rotation = mount_transform(camera)
        transform = TransformStamped()
        transform.header.frame_id, transform.child_frame_id = self.p["base_frame_id"], self.p["camera_frame_id"]
        t, q = transform.transform.translation, transform.transform.rotation
        t.x, t.y, t.z = (float(v) for v in translation)
        q.x, q.y, q.z, q.w = (float(v) for v in rotation)
        return transform

    def on_cmd_vel(self, msg: TwistStamped) -> None:
        if msg.header.frame_id not in ("", self.p["base_frame_id"]):
            self.counts["rejected_commands"] += 1
            self.get_logger().warning(f"cmd_vel in frame '{msg.header.frame_id}' ignored; expected "
                                      f"'{self.p['base_frame_id']}'", throttle_duration_sec=5.0)
            return
        t = msg.twist
        try:
            self.session.set_command([t.linear.x, t.linear.y, t.linear.z, t.angular.z])
            self.counts["commands"] += 1
        except ValueError as error:
            self.counts["rejected_commands"] += 1
            self.get_logger().error(f"cmd_vel rejected: {error}", throttle_duration_sec=2.0)

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        scenario, seed = self.get_parameter("scenario").value, self.get_parameter("seed").value
        try:
            events = self.session.reset(scenario, seed)
        except (ValueError, OSError) as error:
            response.success, response.message = False, f"reset refused: {error}"
            return response
        for event in events:
            self.publish_event(event)
        response.success, response.message = True, f"episode started: {scenario} seed {seed}"
        return response

    def publish_event(self, event: dict) -> None:
        if event["event"] == "end":
            self.counts["episodes_ended"] += 1
            self.get_logger().info(f"episode {event['episode']} ended: {event.get('reason')} "
                                   f"(success {event.get('success')})")
        self.status_pub.publish(String(data=json.dumps(event)))

    def on_step(self) -> None:
        out = self.session.step()
        stamp = ClockMsg()
        stamp.clock.sec, stamp.clock.nanosec = self.split(out.time_s)
        self.clock_pub.publish(stamp)
        self.rate.tick(time.monotonic())
        for event in out.events:
            self.publish_event(event)
        if out.frame is not None:
            self.publish_frame(out.frame)
        if out.state is not None:
            self.publish_odom(out.state, stamp.clock)
        if out.time_s >= self.next_status_s and self.session.phase == "running":
            self.next_status_s = out.time_s + 1.0 / self.p["status_rate_hz"]
            self.status_pub.publish(String(data=json.dumps(self.session.progress())))

    @staticmethod
    def split(seconds: float) -> tuple[int, int]:
        nanoseconds = int(round(seconds * 1e9))
        return nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000

    def publish_frame(self, frame) -> None:
        image = frame.image
        msg = Image(height=image.shape[0], width=image.shape[1], encoding="rgb8", is_bigendian=0,
                    step=3 * image.shape[1], data=image.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = self.split(frame.capture_time_s)
        msg.header.frame_id = self.p["camera_frame_id"]
        self.image_pub.publish(msg)
        self.camera_info.header.stamp = msg.header.stamp
        self.info_pub.publish(self.camera_info)
        self.counts["images"] += 1

    def publish_odom(self, state, stamp) -> None:
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id, msg.child_frame_id = self.p["odom_frame_id"], self.p["base_frame_id"]
        pose, twist = msg.pose.pose, msg.twist.twist
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in state.position)
        q = pose.orientation
        q.x, q.y, q.z, q.w = (float(v) for v in state.quaternion)
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in state.velocity_body)
        twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in state.angular_velocity_body)
        self.odom_pub.publish(msg)
        if self.tf_pub is not None:
            self.tf_pub.publish(TFMessage(transforms=[self.odom_transform(msg)]))

    @staticmethod
    def odom_transform(odom: Odometry) -> TransformStamped:
        """odom -> base_link as TF carries it (REP-105): the odometry's pose, stamp and frames."""
        transform = TransformStamped(header=odom.header, child_frame_id=odom.child_frame_id)
        pose = odom.pose.pose
        t, q = transform.transform.translation, transform.transform.rotation
        t.x, t.y, t.z = pose.position.x, pose.position.y, pose.position.z
        q.x, q.y, q.z, q.w = pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w
        return transform

    def publish_diagnostics(self) -> None:
        now = time.monotonic()
        session = self.session
        step_rate = self.rate.rate_hz(now)
        values = {"phase": session.phase, "episode": session.episode_index, "sim_time_s": session.time_s,
                  "step_rate_hz": step_rate, "real_time_factor": step_rate / self.p["control_hz"],
                  "stale_command_steps": session.stale_steps, **self.counts,
                  "successes": sum(bool(r.get("success")) for r in session.results)}
        wanted = self.p["real_time_factor"]
        level, message = 0, f"{session.phase}, episode {session.episode_index}"
        if wanted > 0 and step_rate > 0 and step_rate < 0.8 * wanted * self.p["control_hz"]:
            level, message = 1, f"running slower than real_time_factor {wanted} ({message})"
        self.diagnostics.publish(make_status("sim", level, message, values, hardware_id=hardware_id("pybullet")))

    def close(self) -> None:
        self.session.close()


def main(args: list[str] | None = None) -> int:
    return spin_node(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
