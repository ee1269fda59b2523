"""`liquid-control info`: versions of the stack's parts."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import platform

import liquid_control

DISTRIBUTIONS = ["torch", "numpy", "onnx", "onnxruntime", "pybullet", "gymnasium",
                 "opencv-python-headless", "rosbags", "pymavlink", "ros-rclpy"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="model file to describe (parameter counts, config)")


def versions() -> dict[str, str]:
    found = {"liquid_control": liquid_control.__version__, "python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def run(args: argparse.Namespace) -> int:
    for name, version in versions().items():
        print(f"{name:24s} {version}")
    return 0
