"""`liquid-control record`: record topics into a rosbag2 MCAP bag, or repair a killed recording.

    liquid-control record [-o DIR] [--topics T ...] [--types T:=pkg/msg/Type ...] [--compress]
    liquid-control record --repair BAG

Recording runs the recorder node in this process (Ctrl-C or SIGTERM close the
bag); without --topics it records every topic it discovers.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="", help="bag directory to create (default rosbag2_<date-time>)")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="topics to record (default: all)")
    parser.add_argument("--types", nargs="+", default=[], metavar="TOPIC:=TYPE",
                        help="type of a topic not yet in the graph, e.g. cmd_vel:=geometry_msgs/msg/TwistStamped")
    parser.add_argument("--compress", action="store_true", help="zstd-compress MCAP chunks")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: never)")
    parser.add_argument("--flush-period", type=float, default=1.0, help="seconds between forced flushes (default 1)")
    parser.add_argument("--repair", metavar="BAG", help="rebuild the summary of a bag whose recorder was killed")
    parser.add_argument("--ros-args", nargs=argparse.REMAINDER, default=None, help="passed on to rclpy")


def run(args: argparse.Namespace) -> int:
    if args.repair is not None:  # `--repair ""` is a (bad) path, not "no repair"
        from liquid_control.bags.writer import repair_bag

        result = repair_bag(args.repair)  # a BagError reaches cli.main: one line on stderr, exit status 2
        if result.messages < 0:
            print(f"{args.repair} is complete; nothing to repair")
        else:
            print(f"repaired {args.repair}: kept {result.messages} messages on {len(result.topics)} topics "
                  f"(original kept as *.mcap.truncated)")
        return 0

    from rclpy.parameter import Parameter

    from liquid_control.nodes import recorder_node

    overrides = [Parameter("output", value=args.output), Parameter("compression", value="zstd" if args.compress
                                                                     else "none"),
                 Parameter("max_duration_s", value=float(args.duration)),
                 Parameter("flush_period_s", value=float(args.flush_period))]
    if args.topics:
        overrides.append(Parameter("topics", Parameter.Type.STRING_ARRAY, list(args.topics)))
    if args.types:
        overrides.append(Parameter("types", Parameter.Type.STRING_ARRAY, list(args.types)))
    # Explicit argv: rclpy would otherwise parse our own "a:=b" arguments as remap rules.
    ros_args = ["liquid-control", *(["--ros-args", *args.ros_args] if args.ros_args else [])]
    return recorder_node.main(ros_args, parameter_overrides=overrides)
