"""The ONNX files the runtimes load, read without torch or the onnx package (the deploy path).

- Metadata: every file written by `export` carries ``metadata_props`` (format, version, role,
  configs); `check_metadata` accepts only this package's format at this version.
- The ONNX cache of a model file: ``NAME.policy.onnx`` and ``NAME.perception.onnx`` next to
  ``NAME.safetensors``, written by `liquid-control export NAME.safetensors` (or by a node that had
  to export at start). Each holds the SHA-256 of the model file it was exported from
  (``source_sha256``) and is written only after onnxruntime matched it against PyTorch
  (``verified_max_diff``). A node given the model file loads the cache when that hash matches the
  model file as it is now; any other cache (missing, from another model file, another role or
  format, unreadable) is never used: the node exports again (`cache_problem` says why).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, Union

FORMAT_VERSION = 1
ROLES = ("policy", "perception")

PathLike = Union[str, "os.PathLike[str]"]


class ExportError(RuntimeError):
    """An export failed, the exported graph disagrees with the PyTorch model, or an ONNX file is unusable."""


def check_metadata(metadata: Mapping[str, str], source: str = "ONNX model") -> dict[str, str]:
    """`metadata` as a dict if it is this package's ONNX format at this version (ExportError otherwise)."""
    metadata = dict(metadata)
    if metadata.get("format") != "liquid_control":
        raise ExportError(f"{source}: ONNX file was not exported by liquid_control (no 'format' metadata)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise ExportError(f"{source}: ONNX format version {str(metadata.get('format_version'))[:40]!r} is not supported "
                          f"(this code reads version {FORMAT_VERSION}); re-export the model")
    return metadata


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes (a model file of a few MB hashes in milliseconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path(model_path: PathLike, role: str) -> Path:
    """Where the ONNX cache of `role` for a model file lives: ``NAME.<role>.onnx`` beside ``NAME.safetensors``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.{role}.onnx")


def cache_problem(metadata: Mapping[str, str], role: str, model_sha256: str) -> str:
    """Why a cache file with `metadata` must not stand in for the model file with hash `model_sha256`
    ('' when it may)."""
    if metadata.get("role") != role:
        return f"holds a {metadata.get('role')!r} model, not a {role!r} model"
    if not metadata.get("verified_max_diff"):
        return "was never verified against PyTorch"
    recorded = metadata.get("source_sha256")
    if recorded != model_sha256:
        return (f"was exported from another model file (SHA-256 {str(recorded)[:12]}..., the model file is "
                f"{model_sha256[:12]}...)" if recorded else "does not record the model file it came from")
    return ""
