"""Neural network models of the stack (plain PyTorch, no ROS): the CfC core and its NCP wiring,
policies with one interface for every kind, perception, and the model file format."""
from .cfc import CfC, CfCCell, normalize_timespans
from .policy import (COMMAND_AXES, KINDS, PolicyConfig, PolicyModel, count_effective, count_trainable,
                     expected_trainable, policy_for_budget)
from .model_file import ModelBundle, ModelFileError, load_model, save_model
from .perception import FeatureExtractor, PerceptionConfig, count_macs, preprocess
from .wiring import Wiring

__all__ = [
    "CfC", "CfCCell", "normalize_timespans", "Wiring",
    "COMMAND_AXES", "KINDS", "PolicyConfig", "PolicyModel", "count_effective", "count_trainable",
    "expected_trainable", "policy_for_budget",
    "FeatureExtractor", "PerceptionConfig", "count_macs", "preprocess",
    "ModelBundle", "ModelFileError", "load_model", "save_model",
]
