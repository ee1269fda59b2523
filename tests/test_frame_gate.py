"""The perception stage's frame gate (inference/frame_gate.py) with an injected clock: time order,
new timelines, the bad-frame window and its diagnostics levels."""
from __future__ import annotations

import pytest

from liquid_control.inference.frame_gate import TIME_JUMP_BACK_S, FrameGate


def test_older_frames_are_dropped_but_a_new_timeline_is_followed():
    gate = FrameGate()
    assert gate.admit(50.0, now_s=0.0) and gate.admit(50.1, now_s=0.1)
    assert not gate.admit(50.05, now_s=0.2)  # overtaken by 50.1: never act on the past
    assert gate.admit(50.1, now_s=0.25)  # same stamp: not older (the policy loop ignores duplicates)
    assert gate.admit(50.1 - 2 * TIME_JUMP_BACK_S, now_s=0.3)  # bag looped / sim restarted
    assert gate.admit(48.2, now_s=0.35)  # later frames of the new timeline are followed
    assert gate.counts == {"frames_in": 6, "features_out": 0, "bad_frames": 0, "out_of_order_frames": 1,
                           "time_jumps_back": 1}


def test_bad_frames_are_error_while_newest_then_warn_within_the_window():
    gate = FrameGate(bad_frame_window_s=5.0)
    assert gate.status(0.0) == (1, "waiting for images")
    gate.admit(1.0, 1.0)
    gate.frame_rejected(1.0, "unsupported encoding 'yuv422'")
    assert gate.status(1.5) == (2, "newest image rejected: unsupported encoding 'yuv422'")
    gate.admit(1.1, 2.0)
    gate.features_sent(0.004)
    assert gate.status(2.0) == (1, "recent bad image: unsupported encoding 'yuv422'")
    assert gate.status(6.5)[0] == 0
    values = gate.values(6.5)
    assert values["bad_frames"] == 1 and values["features_out"] == 1 and values["process_max_ms"] == pytest.approx(4)
    with pytest.raises(ValueError, match="bad_frame_window_s"):
        FrameGate(bad_frame_window_s=0.0)
