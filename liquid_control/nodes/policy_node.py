"""ROS 2 node: stamped features -> CfC policy at a fixed rate -> cmd_vel (heading frame FLU).

Subscribes `features` (sensor_msgs/Image 1xN 32FC1 from the perception node,
sensor-data QoS depth 1); publishes `cmd_vel` (geometry_msgs/TwistStamped,
frame_id `base_link`, reliable depth 1) on every timer tick, just after
`policy/live` (std_msgs/Bool: true when that command came from the model on fresh
features, false for the watchdog's / a fault's hover; the MAVLink bridge hands
control back to the flight controller when it stays false) and `/diagnostics`;
serves `policy/reset` (std_srvs/Trigger) to reset the hidden state.

The loop logic (liquid_control.inference.loop) steps the network only on a new feature
frame and otherwise holds the last command; timespans come from feature stamps.
By default (`step_on_arrival:=true`) the CfC steps and publishes as soon as the features
arrive and the timer republishes/hovers at `rate_hz`; `step_on_arrival:=false` steps only at
the next timer tick (commands leave at a fixed rate, waiting on average half a period:
capture->command median 9.3 ms against 4.2 ms at 100 Hz, docs/BENCHMARKS.md "Node loop").
Safety semantics: no new features for `watchdog_timeout_s` -> zero velocity (hover)
and ERROR on /diagnostics, hidden state reset when features return; a failed or
non-finite step -> hover; outputs beyond the limits -> clamped (or hover with
`out_of_range:=hover`); malformed feature messages are counted and ignored.

Timing (benchmarks/node_loop.py, docs/BENCHMARKS.md "Node loop"): /diagnostics is published from the
tail of a control tick (right after its command, so it never delays the next tick) rather than from a
second timer that fires together with a control tick once a second; with step_on_arrival a frame that
arrives less than ARRIVAL_GUARD_S before the next tick is left for that tick (PolicyLoop.frame_arrived),
so inference never runs across a tick's due time; spin_node (nodes/common.py) freezes the start-up objects out of the garbage
collector (a full collection over torch/onnxruntime's objects took ~80 ms here).
"""
# No `from __future__ import annotations`: rclpy finds the TimerInfo argument of a timer callback
# by comparing the real annotation object.
import sys

from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

try:
    from rclpy.timer import TimerInfo  # Kilted and later: expected vs actual call time
except ImportError:  # older rclpy: lateness against previous tick + period
    TimerInfo = None

from liquid_control.inference.loop import OUT_OF_RANGE_ACTIONS, PolicyLoop, PolicyLoopConfig
from liquid_control.inference.model_source import load_runtime, runtime_options
from liquid_control.inference.runtime import PolicyRuntime
from liquid_control.interfaces.codec import features_from_payload
from liquid_control.interfaces.topics import CMD_VEL, FEATURES, POLICY_LIVE, POLICY_RESET
from liquid_control.nodes.common import (EXECUTORS, DiagnosticsPublisher, ParamSpec, qos_profile,
                                         configure_scheduling, declare_parameters_with_ranges, inference_parameters,
                                         make_status, now_seconds, runtime_hardware_id, scheduling_parameters,
                                         spin_node, stamp_to_seconds)

LOOP = PolicyLoopConfig()  # the loop's defaults = config/policy.yaml (tests/test_policy_loop.py checks)

PARAMETERS = inference_parameters("policy") + scheduling_parameters() + [
    ParamSpec("rate_hz", LOOP.rate_hz, "control loop rate (Hz); the CfC steps only on new features", 1.0, 200.0,
              read_only=True),
    ParamSpec("watchdog_timeout_s", LOOP.watchdog_timeout_s, "no new features for this long -> hover + ERROR (s)",
              0.02, 10.0, read_only=True),
    ParamSpec("min_timespan", LOOP.min_timespan, "lower clip of the CfC timespan (nominal frame periods)", 0.0, 10.0,
              read_only=True),
    ParamSpec("max_timespan", LOOP.max_timespan, "upper clip of the CfC timespan (nominal frame periods)", 0.1, 100.0,
              read_only=True),
    ParamSpec("max_speed_xy_mps", LOOP.max_speed_xy_mps, "limit on |vx| and |vy| (m/s)", 0.0, 20.0, read_only=True),
    ParamSpec("max_speed_z_mps", LOOP.max_speed_z_mps, "limit on |vz| (m/s)", 0.0, 10.0, read_only=True),
    ParamSpec("max_yaw_rate_radps", LOOP.max_yaw_rate_radps, "limit on |yaw rate| (rad/s)", 0.0, 6.3, read_only=True),
    ParamSpec("out_of_range", LOOP.out_of_range, "outputs beyond the limits: clamp per axis, or hover",
              choices=OUT_OF_RANGE_ACTIONS, read_only=True),
    ParamSpec("step_on_arrival", LOOP.step_on_arrival, "also step the CfC and publish at once when features arrive "
              "(saves the wait for the next tick, up to one period of latency); the timer still publishes at rate_hz; "
              "false: step only at ticks", read_only=True),
    ParamSpec("executor", "events", "rclpy executor: events (rclpy.experimental.EventsExecutor, lower timer "
              "lateness; before Kilted: single, with a warning) or single (SingleThreadedExecutor)",
              choices=EXECUTORS, read_only=True),
    ParamSpec("command_frame_id", "base_link", "frame_id of cmd_vel (its velocities are in the heading frame FLU: "
              "yaw-only)", read_only=True),
    ParamSpec("diagnostics_rate_hz", LOOP.diagnostics_rate_hz, "/diagnostics rate (Hz); published after a control "
              "tick, so at most rate_hz", 0.2, 20.0, read_only=True),
]


class PolicyNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("policy", **node_kwargs)
        p = declare_parameters_with_ranges(self, PARAMETERS)
        self.runtime = load_runtime(PolicyRuntime, p["model_path"],
                                    runtime_options(p["backend"], p["providers"], p["threads"], p["fp16"]))
        if self.runtime.cache_note:  # exported at start: slow, torch loaded (the ONNX cache was missing or stale)
            self.get_logger().warning(self.runtime.cache_note)
        self.loop = PolicyLoop(PolicyLoopConfig.from_mapping(p), self.runtime)
        self.frame_id = p["command_frame_id"]
        self.executor_kind = p["executor"]  # read by spin_node
        self.bad_inputs = 0
        self.last_error = ""
        self.publisher = self.create_publisher(TwistStamped, CMD_VEL.name, qos_profile(CMD_VEL))
        self.live_publisher = self.create_publisher(Bool, POLICY_LIVE.name, qos_profile(POLICY_LIVE))
        self.create_subscription(Image, FEATURES.name, self.on_features, qos_profile(FEATURES))
        self.create_service(Trigger, POLICY_RESET.name, self.on_reset)
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(self.loop.config.period_s, self.on_timer)
        self.scheduling = configure_scheduling(self, p)
        self.get_logger().info(f"policy: {self.runtime.source} on {self.runtime.backend} at {p['rate_hz']} Hz, "
                               f"nominal frame period {self.runtime.frame_period_s * 1e3:.1f} ms")

    def on_features(self, msg: Image) -> None:
        try:
            features = features_from_payload(msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian),
                                             msg.data, self.runtime.feature_size)
        except ValueError as error:
            self.bad_inputs += 1
            self.last_error = str(error)
            self.get_logger().error(f"bad features ignored: {error}", throttle_duration_sec=1.0)
            return
        received = self.get_clock().now()
        result = self.loop.frame_arrived(stamp_to_seconds(msg.header.stamp), features, received.nanoseconds * 1e-9)
        if result is not None:
            self.publish(result, received)

    def on_timer(self, info: TimerInfo = None) -> None:
        started = self.get_clock().now()  # the command's stamp: when this control tick began
        now_s = started.nanoseconds * 1e-9
        if info is None:
            result = self.loop.on_timer(now_s)
        else:
            result = self.loop.on_timer(now_s, info.expected_call_time.nanoseconds * 1e-9,
                                        info.actual_call_time.nanoseconds * 1e-9)
        self.publish(result, started)
        # Diagnostics after the command: the slack until the next tick absorbs their ~1 ms.
        if self.loop.diagnostics_due(now_s):
            self.publish_diagnostics()

    def publish(self, result, started) -> None:
        """Send `result`'s command (TwistStamped stamped `started`, rclpy Time)."""
        msg = TwistStamped()
        msg.header.stamp = started.to_msg()
        msg.header.frame_id = self.frame_id
        vx, vy, vz, yaw_rate = (float(v) for v in result.command)
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z, msg.twist.angular.z = vx, vy, vz, yaw_rate
        # Liveness first: the bridge then never counts a watchdog hover as live (TickResult.is_live).
        self.live_publisher.publish(Bool(data=result.is_live))
        self.publisher.publish(msg)
        if result.stepped:
            self.loop.command_sent(result, now_seconds(self))

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.reset_state()
        response.success, response.message = True, "policy hidden state reset"
        return response

    def publish_diagnostics(self) -> None:
        values = {**self.loop.diagnostic_values(now_seconds(self)), "bad_inputs": self.bad_inputs,
                  "backend": self.runtime.backend, "scheduling": self.scheduling, "last_error": self.last_error}
        level, message = self.loop.status()
        self.diagnostics.publish(make_status("policy", level, message, values,
                                             hardware_id=runtime_hardware_id(self.runtime)))


def main(args: list[str] | None = None) -> int:
    return spin_node(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main())
