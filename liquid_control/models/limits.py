"""Sanity bounds on a policy config read from a file or an ONNX file's metadata, without torch (the
onnxruntime path checks ONNX metadata against them and must not import `models.policy`).

Policies here have ~20K parameters (DESIGN.md), so these are generous, and low enough that building a
network from a corrupt header never allocates gigabytes.
"""
from __future__ import annotations

MAX_WIDTH = 2048  # feature_size, units, hidden sizes
MAX_LAYERS = 16
# Camera frame periods (s) a model may be trained for: 1 ms (1 kHz) to 1 s (1 Hz); the cameras here run 15-60 Hz.
FRAME_PERIOD_RANGE_S = (1e-3, 1.0)
