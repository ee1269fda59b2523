"""The perception stage's frame bookkeeping without ROS: time-order gate, bad-frame window, counters.

The perception node (nodes/perception_node.py) and the in-process pipeline of the evaluators
(inference/pipeline.py) both run every incoming image through `FrameGate`:

- `admit(stamp_s, now_s)`: a frame older than the newest one admitted is dropped (an older frame
  overtaken by a newer one: never act on the past), unless it is more than TIME_JUMP_BACK_S older,
  which is a new timeline (bag loop, sim restart) and is followed;
- `frame_rejected(now_s, error)` / `features_sent(process_s)`: the outcome of decoding + perception.

`status(now_s)`: ERROR while the newest frame was bad, WARN while a bad frame is less than
`bad_frame_window_s` old or no image came yet, else OK. Times are float seconds on the caller's clock.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

from liquid_control.util.timing import RateMeter

# A stamp this much older than the newest frame is a new timeline (bag loop, sim restart), not a late frame.
TIME_JUMP_BACK_S = 1.0


class FrameGate:
    """Admits frames in capture-time order and keeps the perception stage's health (see module docstring)."""

    def __init__(self, bad_frame_window_s: float = 5.0) -> None:
        if not bad_frame_window_s > 0:
            raise ValueError(f"bad_frame_window_s must be > 0, got {bad_frame_window_s}")
        self.bad_frame_window_s = float(bad_frame_window_s)
        self.counts = {"frames_in": 0, "features_out": 0, "bad_frames": 0, "out_of_order_frames": 0,
                       "time_jumps_back": 0}
        self.rate = RateMeter()
        self.process_ms: deque[float] = deque(maxlen=300)
        self.last_error = ""
        self._last_bad_s = -math.inf
        self._newest_bad = False
        self._newest_stamp_s = -math.inf

    def admit(self, stamp_s: float, now_s: float) -> bool:
        """Count a frame captured at `stamp_s` that arrived at `now_s`; False: drop it (out of order)."""
        self.counts["frames_in"] += 1
        self.rate.tick(now_s)
        if stamp_s < self._newest_stamp_s - TIME_JUMP_BACK_S:
            self.counts["time_jumps_back"] += 1
        elif stamp_s < self._newest_stamp_s:
            self.counts["out_of_order_frames"] += 1
            return False
        self._newest_stamp_s = stamp_s
        return True

    def frame_rejected(self, now_s: float, error: str) -> None:
        """Decoding or perception refused the admitted frame (nothing is sent for it)."""
        self.counts["bad_frames"] += 1
        self._newest_bad, self._last_bad_s, self.last_error = True, now_s, error

    def features_sent(self, process_s: float) -> None:
        """Features of the admitted frame went out, `process_s` seconds after it arrived."""
        self._newest_bad = False
        self.counts["features_out"] += 1
        self.process_ms.append(process_s * 1e3)

    def status(self, now_s: float) -> tuple[int, str]:
        """(level 0 OK / 1 WARN / 2 ERROR, message)."""
        if self._newest_bad:
            return 2, f"newest image rejected: {self.last_error}"
        if now_s - self._last_bad_s < self.bad_frame_window_s:
            return 1, f"recent bad image: {self.last_error}"
        if self.counts["frames_in"] == 0:
            return 1, "waiting for images"
        return 0, "running"

    def values(self, now_s: float) -> dict[str, Any]:
        """Input rate (Hz), processing time p50/max (ms), counters and the last error."""
        times = sorted(self.process_ms)
        return {"input_rate_hz": self.rate.rate_hz(now_s), "process_p50_ms": times[len(times) // 2] if times else 0.0,
                "process_max_ms": times[-1] if times else 0.0, **self.counts, "last_error": self.last_error}
