"""Neural network models of the stack (plain PyTorch, no ROS): CfC core, policies, perception,
and the model file format."""
from .cfc import CfC, CfCCell, normalize_timespans
from .wiring import Wiring

__all__ = ["CfC", "CfCCell", "Wiring", "normalize_timespans"]
