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
    from liquid_control.util.safe_input import short_repr

    lines = []
    for key, value in config.items():
        if key == "wiring" and isinstance(value, dict):
            # ONNX metadata is not validated like a model file: count only well-formed rows.
            matrices = [value.get(name) for name in ("sensory_to_inter", "inter_to_command", "command_to_command",
                                                     "command_to_motor")]
            synapses = sum(int(v != 0) for matrix in matrices if isinstance(matrix, list)
                           for row in matrix if isinstance(row, list) for v in row)
            value = (f"NCP inter/command/motor = {short_repr(value.get('inter_neurons'), 20)}/"
                     f"{short_repr(value.get('command_neurons'), 20)}/{short_repr(value.get('motor_neurons'), 20)}, "
                     f"{synapses} synapses, seed {short_repr(value.get('seed'), 30)}")
        lines.append(f"  {str(key):22s} {value if isinstance(value, str) else short_repr(value, 120)}")
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

    from liquid_control.inference.export import ExportError, load_onnx, metadata_of
    from liquid_control.util.safe_input import InputError, clip, loads_json, short_repr

    model = load_onnx(path)
    metadata = metadata_of(model, str(path))
    role = metadata.get("role", "?")

    def shape(value: Any) -> str:
        dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
        return f"{value.name}[{', '.join(dims)}]"

    def count(key: str) -> str:
        """A parameter count from the metadata (text); a missing or non-integer entry is shown as unknown."""
        text = metadata.get(key, "")
        return f"{int(text):,}" if text.isascii() and text.isdigit() and len(text) < 20 else \
            f"unknown ({short_repr(text, 40)})"

    def config(text: str) -> Optional[dict[str, Any]]:
        try:
            value = loads_json(text)
        except InputError as error:
            raise ExportError(f"{path}: {role}_config metadata is {error}") from None
        if value is not None and not isinstance(value, dict):
            raise ExportError(f"{path}: {role}_config metadata is not a mapping: {short_repr(value)}")
        return value

    def names(text: str) -> str:
        try:
            value = loads_json(text)
        except InputError as error:
            raise ExportError(f"{path}: command_names metadata is {error}") from None
        return ", ".join(map(str, value)) if isinstance(value, list) else short_repr(value)

    opsets = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
    lines = [f"ONNX file {path} (format version {metadata['format_version']}, opset "
             f"{max(opsets) if opsets else '?'}, "
             f"exported with torch {short_repr(metadata.get('torch_version', '?'), 40)})",
             f"{clip(str(role), 40)}: {count('trainable_parameters')} trainable parameters, "
             f"{count('effective_parameters')} effective after masks",
             f"  graph                  {', '.join(map(shape, model.graph.input))} -> "
             f"{', '.join(map(shape, model.graph.output))} ({len(model.graph.node)} nodes, "
             f"{sum(onnx.numpy_helper.to_array(t).size for t in model.graph.initializer):,} stored values)"]
    if "frame_period_s" in metadata:
        lines.append(f"  frame_period_s         {short_repr(metadata['frame_period_s'], 40)}")
    if "command_names" in metadata:
        lines.append(f"  command_names          {names(metadata['command_names'])}")
    lines += _config_lines(config(metadata.get(f"{role}_config", "null")))
    return lines


def run(args: argparse.Namespace) -> int:
    for name, version in versions().items():
        print(f"{name:24s} {version}")
    if args.model is None:
        return 0
    path = Path(args.model)
    print()
    # Errors (ExportError, ModelFileError) reach cli.main: one line on stderr, exit status 2.
    lines = describe_onnx(path) if path.suffix.lower() == ".onnx" else describe_model_file(path)
    print("\n".join(lines))
    return 0
