"""The perception and policy nodes' logic in one process, for evaluation (no ROS).

`DeployedPipeline`: image -> FrameGate -> perception features -> PolicyLoop, the chain the
perception and policy nodes run across DDS. A frame the gate drops or perception rejects never
reaches the loop (the perception node publishes nothing for it), so the loop's watchdog sees the
gap exactly as the policy node would.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from liquid_control.inference.frame_gate import FrameGate
from liquid_control.inference.loop import PolicyLoop, TickResult


class DeployedPipeline:
    """`perception.features(image, encoding)` (PerceptionRuntime) feeding `loop`; see module docstring."""

    def __init__(self, perception: Any, loop: PolicyLoop, gate: Optional[FrameGate] = None) -> None:
        self.perception = perception
        self.loop = loop
        self.gate = gate or FrameGate()

    def on_image(self, stamp_s: float, image: np.ndarray, encoding: str, receive_s: float) -> Optional[TickResult]:
        """An image captured at `stamp_s` arrives at `receive_s`; returns the loop's decision if it stepped now."""
        if not self.gate.admit(stamp_s, receive_s):
            return None
        started = time.perf_counter()
        try:
            features = self.perception.features(image, encoding)
        except ValueError as error:
            self.gate.frame_rejected(receive_s, str(error))
            return None
        self.gate.features_sent(time.perf_counter() - started)
        return self.loop.frame_arrived(stamp_s, features, receive_s)

    def on_timer(self, now_s: float, expected_s: Optional[float] = None) -> TickResult:
        """A control tick of the policy loop at `now_s` (due at `expected_s`)."""
        return self.loop.on_timer(now_s, expected_s)
