"""Neural network models of the stack (plain PyTorch, no ROS): the CfC core and its NCP wiring,
policies with one interface for every kind, perception, and the model file format.

Names are imported on first use (PEP 562): the torch-free modules (`perception_input`, `errors`,
`limits`, `wiring`) can be imported without loading torch, which the deploy nodes on the onnxruntime path
never do (docs/BENCHMARKS.md "Node start-up").
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CfC": "cfc", "CfCCell": "cfc", "normalize_timespans": "cfc",
    "COMMAND_AXES": "policy", "KINDS": "policy", "PolicyConfig": "policy", "PolicyModel": "policy",
    "count_effective": "policy", "count_trainable": "policy", "expected_trainable": "policy",
    "policy_for_budget": "policy",
    "ModelBundle": "model_file", "load_model": "model_file", "save_model": "model_file",
    "ModelFileError": "errors",
    "FeatureExtractor": "perception",
    "PerceptionConfig": "perception_input", "count_macs": "perception_input", "preprocess": "perception_input",
    "Wiring": "wiring",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
