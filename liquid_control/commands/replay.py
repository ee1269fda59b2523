"""`liquid-control replay BAG`: publish a bag's topics live with their original timing.

    liquid-control replay BAG [--rate R] [--start-offset S] [--loop] [--remap FROM:=TO ...] [--clock]

Runs the bag player node in this process; it exits at the end of the bag
(unless --loop). Nodes that should follow bag time need use_sim_time and --clock.
The bag's /cmd_vel, /features and /diagnostics are played as /recorded/... (as in
config/bag_player.yaml and launch/replay.launch.py), so a live graph never takes
them for its own; --recorded-prefix "" plays them under their own names.
"""
from __future__ import annotations

import argparse

from liquid_control.interfaces.topics import LIVE_GRAPH_TOPICS, RECORDED_PREFIX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory or .mcap/.db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--start-offset", type=float, default=0.0, help="bag seconds to skip (default 0)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before playing (default 0)")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds until every played topic has a subscriber (default: no wait)")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO",
                        help="rename topics (overrides --recorded-prefix for those topics)")
    parser.add_argument("--recorded-prefix", default=RECORDED_PREFIX, metavar="NS",
                        help=f"play the bag's {', '.join(t.absolute for t in LIVE_GRAPH_TOPICS)} under NS "
                             "(default %(default)s), "
                             "apart from a live graph's own; '' for their recorded names")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="play only these topics")
    parser.add_argument("--clock", action="store_true", help="publish /clock from bag time")
    parser.add_argument("--clock-rate", type=float, default=100.0, help="/clock rate in Hz (default 100)")
    parser.add_argument("--ros-args", nargs=argparse.REMAINDER, default=None, help="passed on to rclpy")


def parameter_overrides(args: argparse.Namespace) -> list:
    """The bag player's parameters from the command line."""
    from rclpy.parameter import Parameter

    overrides = [Parameter("bag", value=str(args.bag)), Parameter("rate", value=float(args.rate)),
                 Parameter("recorded_prefix", value=str(args.recorded_prefix)),
                 Parameter("start_offset_s", value=float(args.start_offset)),
                 Parameter("delay_s", value=float(args.delay)),
                 Parameter("wait_for_subscribers_s", value=float(args.wait_for_subscribers)),
                 Parameter("loop", value=bool(args.loop)),
                 Parameter("clock", value=bool(args.clock)), Parameter("clock_rate_hz", value=float(args.clock_rate))]
    if args.remap:
        overrides.append(Parameter("remap", Parameter.Type.STRING_ARRAY, list(args.remap)))
    if args.topics:
        overrides.append(Parameter("topics", Parameter.Type.STRING_ARRAY, list(args.topics)))
    return overrides


def run(args: argparse.Namespace) -> int:
    from liquid_control.nodes import bag_player_node

    overrides = parameter_overrides(args)
    # Explicit argv: rclpy would otherwise parse our own "a:=b" arguments as remap rules.
    ros_args = ["liquid-control", *(["--ros-args", *args.ros_args] if args.ros_args else [])]
    return bag_player_node.main(ros_args, parameter_overrides=overrides)
