"""The model file: ONE safetensors file holding a policy and/or a perception network.

Layout (format "liquid_control.model", format_version 1):

- tensors ``policy.<state_dict key>`` and ``perception.<state_dict key>`` (float32), including
  the policy's buffers: NCP masks, ``feature_mean``/``feature_std``, ``command_scale``;
- safetensors header metadata (string values, JSON where structured):
  ``format``, ``format_version``, ``policy_config``, ``perception_config`` (dataclass dicts,
  the policy's including its exact wiring), ``input_normalization`` ({mean, std}),
  ``output_scaling`` ({axes, scale}), ``frame_period_s`` (nominal, s), ``created`` (UTC ISO 8601),
  ``training`` (free-form dict, e.g. data set, epochs, metrics), ``content_sha256`` (SHA-256 over every
  tensor's name, dtype, shape and bytes and the header entries in `DIGESTED`: safetensors has no checksum
  of its own, so without it a flipped bit in the weights, or an edited input size, would load silently;
  files written before it was added load without the check).

Loading never executes code from the file (safetensors has no pickle). Any wrong,
truncated or mismatched file raises `ModelFileError` naming the problem and the path: header
JSON is parsed with a nesting bound, configs are checked (types and sane sizes) before a network
is built, every tensor's dtype and shape must be the architecture's, and the header's
``input_normalization``, ``output_scaling`` and ``frame_period_s`` must agree with the stored
buffers and the policy config.
Saving writes a temporary file and renames it, so a reader never sees half a file.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from liquid_control.util.safe_input import InputError, loads_json, short_repr

from .errors import ModelFileError
from .perception import FeatureExtractor, PerceptionConfig
from .policy import COMMAND_AXES, PolicyConfig, PolicyModel

FORMAT = "liquid_control.model"
FORMAT_VERSION = 1
EXTENSION = ".safetensors"
PREFIXES = ("policy.", "perception.")


@dataclass
class ModelBundle:
    """What `load_model` returns. Models are in eval mode; either may be None."""

    path: Path
    policy: Optional[PolicyModel]
    perception: Optional[FeatureExtractor]
    policy_config: Optional[PolicyConfig]
    perception_config: Optional[PerceptionConfig]
    frame_period_s: Optional[float]
    created: str
    training: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # every header entry, JSON-decoded


def save_model(path: str | os.PathLike, policy: Optional[PolicyModel] = None,
               perception: Optional[FeatureExtractor] = None,
               training: Optional[dict[str, Any]] = None) -> Path:
    """Write a model file (see module docstring); returns its path."""
    path = Path(path)
    if path.suffix != EXTENSION:
        raise ModelFileError(path, f"the file name must end in {EXTENSION}")
    if policy is None and perception is None:
        raise ModelFileError(path, "nothing to save: give a policy and/or a perception model")
    if policy is not None and perception is not None and \
            policy.config.feature_size != perception.config.feature_size:
        raise ModelFileError(path, f"perception makes {perception.config.feature_size} features but the "
                                   f"policy expects {policy.config.feature_size}")
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("policy.", policy), ("perception.", perception)):
        if module is not None:
            for name, value in module.state_dict().items():
                tensors[prefix + name] = value.detach().to("cpu").contiguous().clone()
    metadata: dict[str, Any] = {
        "format": FORMAT,

        "format_version": FORMAT_VERSION,
        "policy_config": None if policy is None else policy.config.to_dict(),
        "perception_config": None if perception is None else perception.config.to_dict(),
        "input_normalization": None if policy is None else {
            "mean": policy.feature_mean.tolist(), "std": policy.feature_std.tolist()},
        "output_scaling": None if policy is None else {
            "axes": list(COMMAND_AXES), "scale": policy.command_scale.tolist()},
        "frame_period_s": None if policy is None else policy.config.frame_period_s,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "training": training or {},
    }
    try:
        header = {key: json.dumps(value) for key, value in metadata.items()}
    except TypeError as exc:
        raise ModelFileError(path, f"training metadata is not JSON-serialisable ({exc})") from exc
    header[DIGEST_KEY] = json.dumps(content_digest(tensors, header))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


DIGEST_KEY = "content_sha256"
# Header entries that define what the network computes (not format, created, training: informational).
DIGESTED = ("policy_config", "perception_config", "input_normalization", "output_scaling", "frame_period_s")


def content_digest(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """SHA-256 (hex) over the DIGESTED header entries (as stored, JSON text) and the tensors' names,
    dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in DIGESTED:
        digest.update(f"{key}={header.get(key)}\n".encode())
    for key in sorted(tensors):
        value = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise ModelFileError(path, "no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers/data
        raise ModelFileError(path, f"not a readable safetensors file (truncated or another format?): {exc}") from exc
    return header, tensors


def _decode_header(path: Path, header: dict[str, str]) -> dict[str, Any]:
    if "format" not in header:
        raise ModelFileError(path, f"no 'format' entry in the header: not a {FORMAT} file")
    decoded: dict[str, Any] = {}
    for key, text in header.items():
        try:
            decoded[key] = loads_json(text)
        except InputError as exc:
            raise ModelFileError(path, f"header entry {short_repr(key)} is {exc}") from None
    if decoded["format"] != FORMAT:
        raise ModelFileError(path, f"format is {short_repr(decoded['format'])}, expected {FORMAT!r}")
    version = decoded.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(path, f"format_version {short_repr(version)} is not a positive integer")
    if version > FORMAT_VERSION:
        raise ModelFileError(path, f"format_version {version} is newer than this code reads "
                                   f"({FORMAT_VERSION}); update liquid_control")
    return decoded


def _load_module(path: Path, module: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise ModelFileError(path, f"missing tensors for the {prefix[:-1]} config: "
                                   f"{', '.join(prefix + k for k in missing)}")
    if unexpected:
        raise ModelFileError(path, f"tensors the {prefix[:-1]} config does not have: "
                                   f"{', '.join(prefix + k for k in unexpected)}")
    for key, value in state.items():
        if value.dtype != expected[key].dtype:  # e.g. F32 relabelled I32: same bytes, absurd weights
            raise ModelFileError(path, f"tensor {prefix + key} has dtype {value.dtype} but the "
                                       f"config needs {expected[key].dtype}")
        if value.shape != expected[key].shape:
            raise ModelFileError(path, f"tensor {prefix + key} has shape {tuple(value.shape)} but the "
                                       f"config needs {tuple(expected[key].shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelFileError(path, f"tensor {prefix + key} contains NaN or inf")
    module.load_state_dict(state)
    module.eval()


def _numbers(value: Any, size: int) -> Optional[torch.Tensor]:
    """`value` as a float64 tensor if it is a list of `size` finite numbers (not bools), else None."""
    if not isinstance(value, list) or len(value) != size or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    try:
        tensor = torch.tensor([float(v) for v in value], dtype=torch.float64)
    except OverflowError:
        return None
    return tensor if torch.isfinite(tensor).all() else None


def _agrees(stored: torch.Tensor, header: torch.Tensor) -> bool:
    return torch.allclose(stored.double(), header, rtol=1e-5, atol=1e-6)


def _check_policy_header(path: Path, meta: dict[str, Any], policy: PolicyModel) -> None:
    """The header's input_normalization, output_scaling and frame_period_s against the loaded policy.

    They are what tools read without loading the tensors, so a file whose header says one thing
    and whose buffers do another is refused rather than run with the buffers' values.
    """
    size = policy.feature_size
    if not bool((policy.feature_std > 0).all()):
        raise ModelFileError(path, "tensor policy.feature_std must be > 0 everywhere")
    if not bool((policy.command_scale > 0).all()):
        raise ModelFileError(path, "tensor policy.command_scale must be > 0 on every axis")
    normalization = meta.get("input_normalization")
    if normalization is not None:
        if not isinstance(normalization, dict) or set(normalization) != {"mean", "std"}:
            raise ModelFileError(path, f"input_normalization must be {{mean: [...], std: [...]}}, "
                                       f"got {short_repr(normalization)}")
        for name, stored in (("mean", policy.feature_mean), ("std", policy.feature_std)):
            values = _numbers(normalization[name], size)
            if values is None:
                raise ModelFileError(path, f"input_normalization.{name} must be {size} finite numbers, "
                                           f"got {short_repr(normalization[name])}")
            if not _agrees(stored, values):
                raise ModelFileError(path, f"input_normalization.{name} in the header disagrees with the "
                                           f"stored tensor policy.feature_{name}")
    scaling = meta.get("output_scaling")
    if scaling is not None:
        if not isinstance(scaling, dict) or set(scaling) != {"axes", "scale"} or \
                scaling["axes"] != list(COMMAND_AXES):
            raise ModelFileError(path, f"output_scaling must be {{axes: {list(COMMAND_AXES)}, scale: [4 numbers]}}, "
                                       f"got {short_repr(scaling)}")
        values = _numbers(scaling["scale"], len(COMMAND_AXES))
        if values is None:
            raise ModelFileError(path, f"output_scaling.scale must be {len(COMMAND_AXES)} finite numbers, "
                                       f"got {short_repr(scaling['scale'])}")
        if not _agrees(policy.command_scale, values):
            raise ModelFileError(path, f"output_scaling.scale {short_repr(scaling['scale'])} in the header disagrees "
                                       f"with the stored tensor policy.command_scale "
                                       f"{[round(v, 6) for v in policy.command_scale.tolist()]}")
    if "frame_period_s" in meta and meta["frame_period_s"] != policy.config.frame_period_s:
        raise ModelFileError(path, f"frame_period_s {short_repr(meta['frame_period_s'])} in the header disagrees "
                                   f"with policy_config.frame_period_s {policy.config.frame_period_s}")


def load_model(path: str | os.PathLike) -> ModelBundle:
    """Read a model file; raises ModelFileError (naming the problem and the path) if unusable."""
    path = Path(path)
    header, tensors = _read(path)
    meta = _decode_header(path, header)
    expected_digest = meta.get(DIGEST_KEY)
    if expected_digest is not None and expected_digest != content_digest(tensors, header):
        raise ModelFileError(path, f"the tensors and header do not match the header's {DIGEST_KEY}: the file "
                                   "is corrupt or was edited")
    stray = sorted(key for key in tensors if not key.startswith(PREFIXES))
    if stray:
        raise ModelFileError(path, f"unexpected tensors (not policy.* or perception.*): {', '.join(stray[:5])}")

    policy = perception = None
    policy_config = perception_config = None
    if meta.get("policy_config") is not None:
        try:
            policy_config = PolicyConfig.from_dict(meta["policy_config"])
            policy = PolicyModel(policy_config)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ModelFileError(path, f"invalid policy_config: {exc}") from None
        derived_masks = {k: v.clone() for k, v in policy.state_dict().items() if k.endswith("head_mask")}
        _load_module(path, policy, "policy.", tensors)
        for key, mask in derived_masks.items():
            if not torch.equal(policy.state_dict()[key], mask):
                raise ModelFileError(path, f"tensor policy.{key} disagrees with the wiring in policy_config")
        _check_policy_header(path, meta, policy)
    elif any(key.startswith("policy.") for key in tensors):
        raise ModelFileError(path, "policy tensors present but no policy_config in the header")

    if meta.get("perception_config") is not None:
        try:
            perception_config = PerceptionConfig.from_dict(meta["perception_config"])
            perception = FeatureExtractor(perception_config)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ModelFileError(path, f"invalid perception_config: {exc}") from None
        _load_module(path, perception, "perception.", tensors)
    elif any(key.startswith("perception.") for key in tensors):
        raise ModelFileError(path, "perception tensors present but no perception_config in the header")

    if policy is None and perception is None:
        raise ModelFileError(path, "holds neither a policy nor a perception model")
    if policy_config is not None and perception_config is not None and \
            policy_config.feature_size != perception_config.feature_size:
        raise ModelFileError(path, f"perception makes {perception_config.feature_size} features but the "
                                   f"policy expects {policy_config.feature_size}")
    training = meta.get("training") or {}
    return ModelBundle(path=path, policy=policy, perception=perception, policy_config=policy_config,
                       perception_config=perception_config,
                       frame_period_s=None if policy_config is None else policy_config.frame_period_s,
                       created=str(meta.get("created", "")),
                       training=training if isinstance(training, dict) else {"value": training},
                       metadata=meta)
