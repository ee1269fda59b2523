"""`liquid-control info [MODEL]`: versions of the stack's parts and, given a model file
(.safetensors) or an exported ONNX file, its configs and parameter counts."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
from pathlib import Path
from typing import Any, Optional

import liquid_control

DISTRIBUTIONS = ["torch", "numpy", "onnx", "onnxruntime", "pybullet", "gymnasium",
                 "opencv-python-headless", "rosbags", "pymavlink", "ros-rclpy"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?",
                        help="model file (.safetensors) or exported ONNX file (.onnx) to describe")


def versions() -> dict[str, str]:
    found = {"liquid_control": liquid_control.__version__, "python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _config_lines(config: Optional[dict[str, Any]]) -> list[str]:
    """`key = value` lines; the NCP wiring (every synapse) is summarised, not dumped."""
    if not config:
        return []
    lines = []
    for key, value in config.items():
        if key == "wiring" and isinstance(value, dict):
            synapses = sum(int(v != 0) for name in ("sensory_to_inter", "inter_to_command", "command_to_command",
                                                    "command_to_motor") for row in value.get(name, []) for v in row)
            value = (f"NCP inter/command/motor = {value.get('inter_neurons')}/{value.get('command_neurons')}/"
                     f"{value.get('motor_neurons')}, {synapses} synapses, seed {value.get('seed')}")
        lines.append(f"  {key:22s} {value}")
    return lines


def describe_model_file(path: Path) -> list[str]:
    from liquid_control.models.model_file import load_model
    from liquid_control.models.policy import count_effective, count_trainable

    bundle = load_model(path)
    lines = [f"model file {path}", f"  created                {bundle.created or 'unknown'}"]
    for role, module, config in (("policy", bundle.policy, bundle.policy_config),
                                 ("perception", bundle.perception, bundle.perception_config)):
        if module is None:
            lines.append(f"{role}: none")
            continue
        lines.append(f"{role}: {count_trainable(module):,} trainable parameters, "
                     f"{count_effective(module):,} effective after masks")
        lines += _config_lines(config.to_dict())
    if bundle.training:
        lines.append("training: " + json.dumps(bundle.training, sort_keys=True)[:400])
    return lines


def describe_onnx(path: Path) -> list[str]:
    import onnx

    from liquid_control.inference.export import load_onnx, metadata_of

    model = load_onnx(path)
    metadata = metadata_of(model, str(path))
    role = metadata.get("role", "?")

    def shape(value: Any) -> str:
        dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
        return f"{value.name}[{', '.join(dims)}]"

    lines = [f"ONNX file {path} (format version {metadata['format_version']}, opset "
             f"{max(op.version for op in model.opset_import if op.domain in ('', 'ai.onnx'))}, "
             f"exported with torch {metadata.get('torch_version', '?')})",
             f"{role}: {int(metadata.get('trainable_parameters', 0)):,} trainable parameters, "
             f"{int(metadata.get('effective_parameters', 0)):,} effective after masks",
             f"  graph                  {', '.join(map(shape, model.graph.input))} -> "
             f"{', '.join(map(shape, model.graph.output))} ({len(model.graph.node)} nodes, "
             f"{sum(onnx.numpy_helper.to_array(t).size for t in model.graph.initializer):,} stored values)"]
    if "frame_period_s" in metadata:
        lines.append(f"  frame_period_s         {metadata['frame_period_s']}")
    if "command_names" in metadata:
        lines.append(f"  command_names          {', '.join(json.loads(metadata['command_names']))}")
    lines += _config_lines(json.loads(metadata.get(f"{role}_config", "null")))
    return lines


def run(args: argparse.Namespace) -> int:
    for name, version in versions().items():
        print(f"{name:24s} {version}")
    if args.model is None:
        return 0
    from liquid_control.inference.export import ExportError
    from liquid_control.models.model_file import ModelFileError

    path = Path(args.model)
    print()
    try:
        lines = describe_onnx(path) if path.suffix.lower() == ".onnx" else describe_model_file(path)
    except (ExportError, ModelFileError) as error:
        print(f"error: {error}")
        return 1
    print("\n".join(lines))
    return 0
