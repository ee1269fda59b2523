"""Closed-loop flight demo: the ROS graph flies fly-to-target episodes in simulation with the policy.

Brings up sim + perception + policy + recorder, each node in its own process
(liquid_control.nodes.graph, the same config/*.yaml files as launch/sim.launch.py), all on
sim time. The sim waits (clock only) until perception and policy are up, then this
process starts the run through the sim's `episode/reset` service and follows
`episode/status`. At the end it prints the success table and where the MCAP bag and
the trajectory plot went.

Exit codes: 0 the episodes ran (whatever their success), 1 a node failed or the run
stalled, 2 bad arguments (e.g. no model file), 130 interrupted (Ctrl-C / SIGTERM).
Every node process is stopped in all cases.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from liquid_control.inference.model_source import default_model_path
from liquid_control.interfaces.topics import (CAMERA_IMAGE, CAMERA_INFO, CLOCK, CMD_VEL, DIAGNOSTICS, EPISODE_RESET,
                                              EPISODE_STATUS, FEATURES, ODOM)
from liquid_control.nodes.graph import NodeExited, NodeGraph, sim_graph, terminate_as_interrupt

RECORDED_TOPICS = [t.absolute for t in (CAMERA_IMAGE, CAMERA_INFO, FEATURES, CMD_VEL, ODOM, CLOCK, EPISODE_STATUS,
                                        DIAGNOSTICS)]
# Topics the recorder subscribes before any publisher appears (reliable, so the first command is kept);
# the others are subscribed with the QoS their publishers offer once discovered.
PRE_SUBSCRIBED = [f"{t.absolute}:={t.type}" for t in (CMD_VEL, EPISODE_STATUS)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model file (.safetensors) with perception + policy (default: the shipped "
                             "models/default_cfc.safetensors)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to fly (default %(default)s)")
    parser.add_argument("--scenario", default="train_fly_to_target", help="scenario (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default %(default)s)")
    parser.add_argument("--duration-s", type=float, default=0.0,
                        help="episode length in sim seconds (default: the scenario's)")
    parser.add_argument("--real-time-factor", type=float, default=1.0,
                        help="sim seconds per wall second; lower it on a loaded machine (default %(default)s)")
    parser.add_argument("--policy-rate-hz", type=float, default=None,
                        help="policy timer rate (default: config/policy.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default: ./demo_YYYYmmdd-HHMMSS)")
    parser.add_argument("--no-record", action="store_true", help="do not record a bag")
    parser.add_argument("--startup-timeout-s", type=float, default=180.0,
                        help="wall seconds allowed for the nodes to come up (default %(default)s)")


class Monitor:
    """An rclpy node in this process: counts graph endpoints, follows episode/status and odom, calls
    episode/reset. Its subscriptions are made by `follow()`, once the nodes are up."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from std_srvs.srv import Trigger

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("flight_demo", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.events: list[dict[str, Any]] = []
        self.odometry: list[tuple[float, float, float, float]] = []
        self.last_message_wall = time.monotonic()
        self.reset_client = self.node.create_client(Trigger, EPISODE_RESET.name)
        self.Trigger = Trigger

    def follow(self) -> None:
        from nav_msgs.msg import Odometry
        from std_msgs.msg import String

        from liquid_control.nodes.common import qos_profile

        self.node.create_subscription(String, EPISODE_STATUS.name, self.on_status, qos_profile(EPISODE_STATUS))
        # A deeper queue than the sim offers: the trajectory plot wants every odometry sample.
        self.node.create_subscription(Odometry, ODOM.name, self.on_odom, qos_profile(ODOM, depth=50, subscriber=True))

    def subscribed_by(self, node_name: str, *topics: str) -> bool:
        """Node `node_name` subscribes to every one of `topics`."""
        return all(any(info.node_name == node_name for info in self.node.get_subscriptions_info_by_topic(topic))
                   for topic in topics)

    def on_status(self, msg) -> None:
        self.last_message_wall = time.monotonic()
        event = json.loads(msg.data)
        if event["event"] in ("start", "end", "finished"):
            self.events.append(event)
            if event["event"] == "end":
                print(f"  episode {event['episode']} (seed {event.get('seed')}): {event.get('reason')}, final "
                      f"distance {_fmt(event.get('final_distance_m'))} m", flush=True)

    def on_odom(self, msg) -> None:
        self.last_message_wall = time.monotonic()
        p = msg.pose.pose.position
        self.odometry.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, p.x, p.y, p.z))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def ready(self) -> bool:
        """Perception and policy have loaded their models (their publishers exist) and the sim serves reset."""
        node = self.node
        return (node.count_publishers(FEATURES.name) > 0 and node.count_publishers(CMD_VEL.name) > 0
                and self.reset_client.service_is_ready())

    def start_run(self) -> None:
        future = self.reset_client.call_async(self.Trigger.Request())
        end = time.monotonic() + 30.0
        while not future.done():
            if time.monotonic() > end:
                raise RuntimeError("episode/reset did not answer within 30 s")
            self.spin(0.05)
        if not future.result().success:
            raise RuntimeError(f"episode/reset refused: {future.result().message}")

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()
        self.rclpy.try_shutdown(context=self.context)


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def success_table(ends: list[dict[str, Any]]) -> str:
    rows = [f"{'episode':>7} {'seed':>5} {'result':<11} {'success':<7} {'time to goal s':>14} "
            f"{'final dist m':>12} {'min dist m':>10}"]
    for e in ends:
        rows.append(f"{e['episode']:>7} {e.get('seed', '-'):>5} {str(e.get('reason')):<11} "
                    f"{'yes' if e.get('success') else 'no':<7} {_fmt(e.get('time_to_goal_s')):>14} "
                    f"{_fmt(e.get('final_distance_m')):>12} {_fmt(e.get('min_distance_m')):>10}")
    successes = sum(bool(e.get("success")) for e in ends)
    rows.append(f"success: {successes}/{len(ends)}")
    return "\n".join(rows)


def plot_trajectories(events: list[dict[str, Any]], odometry: list[tuple], path: Path) -> Optional[Path]:
    """Top view (x, y) of each episode's odometry with its start and target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [e for e in events if e["event"] == "start"]
    ends = {e["episode"]: e for e in events if e["event"] == "end"}
    if not starts or not odometry:
        return None
    fig, ax = plt.subplots(figsize=(6, 6))
    for start in starts:
        end_time = ends.get(start["episode"], {}).get("time_s", math.inf)
        track = [(x, y) for t, x, y, _ in odometry if start["time_s"] <= t <= end_time]
        label = f"ep {start['episode']} ({ends.get(start['episode'], {}).get('reason', 'running')})"
        if track:
            line, = ax.plot(*zip(*track), label=label)
            colour = line.get_color()
            ax.plot(*start["start_position"][:2], "o", color=colour)
            for target in start.get("targets", []):
                ax.plot(target[0], target[1], "*", markersize=14, color=colour)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("flight demo: odometry (o start, * target)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def wait_for(condition, monitor: Monitor, graph: NodeGraph, timeout_s: float, what: str) -> None:
    """Spin until `condition()`; NodeExited if a node dies meanwhile, RuntimeError after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        graph.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what} (see the logs)")
        monitor.spin(0.2)


def run(args: argparse.Namespace) -> int:
    model = Path(args.model).expanduser() if args.model else default_model_path()
    if not model.is_file():
        hint = ("the shipped policy models/default_cfc.safetensors does not exist yet (it has not been trained "
                "or installed): pass a model file with --model PATH") if args.model is None else \
            "pass an existing model file (.safetensors) with --model"
        print(f"error: model file {model} not found; {hint}")
        return 2
    if args.episodes < 1:
        print("error: --episodes must be >= 1")
        return 2
    out = Path(args.out or datetime.now().strftime("demo_%Y%m%d-%H%M%S")).resolve()
    bag = out / "bag"
    if bag.exists():
        print(f"error: {bag} already exists; choose another --out")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    sim = {"autostart": False, "episodes": args.episodes, "scenario": args.scenario, "seed": args.seed,
           "real_time_factor": float(args.real_time_factor), "duration_s": float(args.duration_s)}
    policy = {"rate_hz": float(args.policy_rate_hz)} if args.policy_rate_hz else {}
    record = None if args.no_record else {"output": str(bag), "topics": RECORDED_TOPICS, "types": PRE_SUBSCRIBED}
    from liquid_control.models.errors import ModelFileError

    try:  # once here, so perception and policy load the ONNX cache instead of both exporting at start
        from liquid_control.inference.export import ensure_caches

        for made in ensure_caches(model):
            print(f"ONNX cache: {made.path or made.write_error}")
    except (ValueError, RuntimeError, OSError, ModelFileError) as error:
        print(f"error: {model}: {error}")
        return 2
    nodes = sim_graph(str(model), sim=sim, policy=policy, record=record)
    print(f"flight demo: {args.episodes} x {args.scenario} from seed {args.seed} with {model}\n"
          f"  starting {', '.join(n.name for n in nodes)} (logs in {out / 'logs'})", flush=True)
    monitor: Optional[Monitor] = None
    code = 0
    try:
        with terminate_as_interrupt(), contextlib.ExitStack() as stack:
            monitor = Monitor()
            graph = stack.enter_context(NodeGraph(nodes, out / "logs", use_sim_time=True))
            # The sim waits for episode/reset (autostart false): once the recorder has subscribed to what the
            # nodes publish, the bag holds each episode from its first frame.
            recorded = [t.name for t in (CAMERA_IMAGE, ODOM, FEATURES, CMD_VEL)] if record is not None else []
            wait_for(lambda: monitor.ready() and monitor.subscribed_by("recorder", *recorded), monitor, graph,
                     args.startup_timeout_s, f"{', '.join(n.name for n in nodes)} to start")
            monitor.follow()
            print("  nodes up; flying", flush=True)
            monitor.start_run()
            monitor.last_message_wall = time.monotonic()
            while not any(e["event"] == "finished" for e in monitor.events):
                graph.check()
                if time.monotonic() - monitor.last_message_wall > 60.0:
                    raise RuntimeError("no status or odometry from the sim for 60 s: the run stalled")
                monitor.spin(0.2)
    except (NodeExited, RuntimeError) as error:
        print(f"error: {error}")
        code = 1
    except KeyboardInterrupt:
        print("interrupted: nodes stopped")
        code = 130
    finally:
        if monitor is not None:
            monitor.close()
    if monitor is None:
        return code or 1
    ends = [e for e in monitor.events if e["event"] == "end"]
    if ends:
        print("\n" + success_table(ends))
    plot = plot_trajectories(monitor.events, monitor.odometry, out / "trajectories.png")
    if record is not None and bag.exists():
        print(f"bag: {bag}")
    if plot is not None:
        print(f"trajectory plot: {plot}")
    (out / "episodes.json").write_text(json.dumps(ends, indent=2))
    return code
