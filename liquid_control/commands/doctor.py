"""`liquid-control doctor`: a pre-flight check of a deployment; prints a pass/fail table.

    liquid-control doctor [--model FILE] [--connection URL] [--skip fc ...]

Checks the ROS distro and RMW; the camera topic (rate, encoding, resolution against the model,
field of view against the training camera from camera_info); the model's load and inference
time with the chosen provider; the flight-controller link (heartbeat, mode, armed state, TIMESYNC
round trip and clock offset); the bridge's failsafe settings. The checks live in
liquid_control.inference.preflight; this module gathers the inputs. Run it with the camera
driver up and the bridge NOT running (a serial port has one owner). Exit code 1 if any check FAILs.
"""
from __future__ import annotations

import argparse

PARTS = ("ros", "camera", "model", "fc", "failsafe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from liquid_control.interfaces.topics import CAMERA_IMAGE, CAMERA_INFO

    parser.add_argument("--policy-params", default="", help="policy params file for model_path, backend, providers, "
                        "threads and watchdog_timeout_s (default: the package's config/policy.yaml)")
    parser.add_argument("--bridge-params", default="", help="MAVLink bridge params file for connection and the "
                        "failsafe settings (default: the package's config/mavlink_bridge.yaml)")
    parser.add_argument("--model", default=None, help="model file (default: model_path of the policy params)")
    parser.add_argument("--backend", default=None, help="inference backend (default: from the policy params)")
    parser.add_argument("--providers", default=None, help="onnxruntime providers (default: from the policy params)")
    parser.add_argument("--connection", default=None, help="flight controller, e.g. serial:/dev/ttyTHS1:921600 "
                        "(default: connection of the bridge params)")
    parser.add_argument("--camera-topic", default=CAMERA_IMAGE.name, help="image topic (default %(default)s)")
    parser.add_argument("--camera-info-topic", default=CAMERA_INFO.name, help="camera_info topic (default %(default)s)")
    parser.add_argument("--listen", type=float, default=3.0, help="seconds to measure the camera (default 3)")
    parser.add_argument("--fc-timeout", type=float, default=5.0, help="seconds to wait for a heartbeat (default 5)")
    parser.add_argument("--training-fov-deg", type=float, default=None,
                        help="vertical FOV of the training camera (default: the simulator's camera)")
    parser.add_argument("--skip", nargs="+", default=[], choices=PARTS, help="checks to leave out")


def gather(args: argparse.Namespace) -> list:
    from pathlib import Path

    from liquid_control.inference import preflight as pf
    from liquid_control.simulation.camera import CameraConfig
    from liquid_control.util.paths import share_path

    def params(path: str, node: str) -> dict:
        return pf.node_parameters(Path(path) if path else share_path("config", f"{node}.yaml"), node)

    checks: list[pf.Check] = []
    try:
        policy, bridge = params(args.policy_params, "policy"), params(args.bridge_params, "mavlink_bridge")
    except ValueError as error:
        return [pf.Check("params", pf.FAIL, str(error))]
    if "ros" not in args.skip:
        from liquid_control.nodes.camera_probe import rmw_implementation

        checks.append(pf.check_ros(pf.ros_distro(), rmw_implementation()))
    timing = None
    if "model" not in args.skip:
        model = args.model if args.model is not None else policy.get("model_path", "")
        try:
            timing = pf.time_model(model, args.backend or policy.get("backend", "auto"),
                                   args.providers if args.providers is not None else policy.get("providers", ""),
                                   int(policy.get("threads", 1)))
            checks += pf.check_model(timing)
        except (ValueError, FileNotFoundError) as error:
            checks.append(pf.Check("model load", pf.FAIL, str(error)))
    if "camera" not in args.skip:
        from liquid_control.interfaces.codec import RAW_ENCODINGS
        from liquid_control.nodes.camera_probe import measure_camera

        sample = measure_camera(args.camera_topic, args.camera_info_topic, args.listen)
        fov = args.training_fov_deg if args.training_fov_deg is not None else CameraConfig().fov_deg
        checks += pf.check_camera(sample, timing.frame_period_s if timing else None,
                                  timing.net_size if timing else None, fov, tuple(RAW_ENCODINGS))
    if "fc" not in args.skip:
        connection = args.connection or bridge.get("connection", "")
        checks += pf.check_flight_controller(pf.probe_flight_controller(connection, args.fc_timeout,
                                                                        int(bridge.get("baud", 921600))))
    if "failsafe" not in args.skip:
        checks += pf.check_failsafe(bridge, policy.get("watchdog_timeout_s"))
    return checks


def run(args: argparse.Namespace) -> int:
    from liquid_control.inference.preflight import FAIL, render_table, worst

    checks = gather(args)
    print(render_table(checks))
    return 1 if worst(checks) == FAIL else 0
