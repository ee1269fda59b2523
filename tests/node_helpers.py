"""Shared helpers for the sim/perception/policy node tests: tiny models and an in-process ROS harness."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from liquid_control.models.model_file import save_model
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
from liquid_control.models.policy import PolicyConfig, PolicyModel

TINY_FEATURES = 8


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """A random perception (32x24 input) + dense CfC policy with 8 features: plumbing, not flying."""
    torch.manual_seed(seed)
    policy = PolicyModel(PolicyConfig(kind="cfc", feature_size=TINY_FEATURES, cfc_wiring="dense", cfc_units=8,
                                      cfc_backbone_units=8))
    perception = FeatureExtractor(PerceptionConfig(height=24, width=32, conv_channels=(4, 8), keypoints=4,
                                                   feature_size=TINY_FEATURES))
    return save_model(path, policy, perception)


def overrides(**values) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


class Harness:
    """One rclpy context with a single-threaded executor; nodes under test and probes share it."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str):
        return self.add(rclpy.create_node(name, context=self.context))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
        end = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        for node in self.nodes:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)


def diagnostic_values(array, name: str) -> tuple[int, str, dict[str, str]] | None:
    """(level, message, key->value) of the status called `name` in a DiagnosticArray, or None."""
    for status in array.status:
        if status.name == name:
            return int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level), \
                status.message, {kv.key: kv.value for kv in status.values}
    return None


def rgb_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
