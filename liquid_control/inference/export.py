"""ONNX export of the liquid core: perception and policy as two separate graphs.

- Policy: ONE recurrent step, inputs ``features`` (B, F), ``state`` (B, S),
  ``timespan`` (B, 1) -> outputs ``command`` (B, 4), ``new_state`` (B, S). The
  caller (runtime.PolicyRuntime) holds the state between steps. ``timespan`` is
  in the policy model's own units (multiples of the nominal frame period).
- Perception: ``image`` (B, 3, H, W) float in [0, 1] -> ``features`` (B, N).

The batch axis is dynamic. Each file carries metadata (``metadata_props``) that
the runtime checks before it trusts the graph: format version, role, configs as
JSON, frame period, feature/command names and parameter counts.

Exporter: torch 2.13's default torch.export-based ("dynamo") exporter, which
needs onnxscript (~1-4 s per graph here). The legacy TorchScript exporter
(``dynamo=False``) still exists in 2.13 but warns that it will be removed, and
it drops unused inputs (``timespan`` of the LSTM/GRU/MLP baselines), which
would break the common signature, so it is not used.

CfC policies without backbone (the wired default) are exported in a folded deploy
form (`_FoldedCfCStep`: masks, normalisation and command scale folded into the
weights, one recurrent matmul), the same function in fewer onnxruntime nodes;
metadata ``graph_form`` says which form a file holds.

Every export is checked with onnxruntime against the PyTorch model on random
inputs (`verify_policy`, `verify_perception` return the max |difference|).

`export_cache` writes the verified ONNX cache of a model file (``NAME.policy.onnx`` /
``NAME.perception.onnx`` beside it, see onnx_file), which the nodes load instead of exporting at
start; reading ONNX files without torch lives in onnx_file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

# Re-exported: the torch-free side of the format (the runtimes read files through onnx_file).
from liquid_control.inference.onnx_file import FORMAT_VERSION, ROLES, ExportError, cache_path, cache_problem, \
    check_metadata, file_sha256

OPSET = 18
POLICY_INPUTS = ("features", "state", "timespan")
POLICY_OUTPUTS = ("command", "new_state")
PERCEPTION_INPUTS = ("image",)
PERCEPTION_OUTPUTS = ("features",)
VERIFY_TOLERANCE = 1e-5
EXAMPLE_BATCH = 2

PathLike = Union[str, Path]


def _config_json(config: Any) -> str:
    """JSON of a config dataclass (nested dataclasses and numpy arrays included)."""
    if config is None:
        return "null"
    if hasattr(config, "to_dict"):  # the models' own serialisation (e.g. PolicyConfig.to_dict)
        config = config.to_dict()
    elif dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)

    def default(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        raise TypeError(f"cannot store {type(value).__name__} in ONNX metadata")

    return json.dumps(config, default=default, sort_keys=True)


def _parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, effective-after-mask) parameter counts, as the models package defines them."""
    from liquid_control.models.policy import count_effective, count_trainable

    return int(count_trainable(model)), int(count_effective(model))


class _PolicyStep(nn.Module):
    """The graph that is exported: one `PolicyModel.step`."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, features: torch.Tensor, state: torch.Tensor,
                timespan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.step(features, state, timespan)


class _FoldedCfCStep(nn.Module):
    """Deploy form of a CfC policy whose cells have no backbone (the wired NCP default, or a
    dense CfC with backbone_layers=0): the same function as `PolicyModel.step`, in fewer ONNX
    nodes, because at batch 1 onnxruntime's cost is per node (~0.4-0.6 us each here), not per FLOP.

    Rewrites, exact up to float32 rounding (`verify_policy` checks 1e-5):
    - sparse masks multiplied into the weights once;
    - input normalisation folded into layer 0's input weights and bias:
      W (f - mean) / std + b = (W / std) f + (b - W (mean / std));
    - command scale folded into the readout: s * (W y + b) = (s W) y + s b;
    - every layer's recurrent term W_h h + b in ONE matmul over the whole state at the start
      (block-diagonal weight), then each layer is one Gemm on its input with that term as C,
      instead of Concat([input, h]) + Gemm per layer;
    - x' = f1 (1 - g) + g f2 computed as f1 + g (f2 - f1).
    The default wired policy goes from 42 to 34 nodes (after onnxruntime's own optimisation).
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        cells = list(policy.core.cfc.layers)
        self.sizes = [int(cell.hidden_size) for cell in cells]
        self.pure = bool(cells[0].is_pure)
        self.no_gate = bool(cells[0].is_no_gate)
        heads = 1 if self.pure else 4
        self.head_widths = [heads * size for size in self.sizes]
        state_size = sum(self.sizes)
        recurrent = torch.zeros(state_size, sum(self.head_widths))
        biases, offset, column = [], 0, 0
        with torch.no_grad():
            mean = policy.feature_mean.detach().float()
            std = policy.feature_std.detach().float()
            for i, cell in enumerate(cells):
                weight = cell.head_weight().detach().float()  # mask applied
                bias = cell.head.bias.detach().float()
                w_input, w_state = weight[:, :cell.input_size], weight[:, cell.input_size:]
                if i == 0:
                    bias = bias - w_input @ (mean / std)
                    w_input = w_input / std
                self.register_buffer(f"input_weight_{i}", w_input.t().contiguous())
                recurrent[offset:offset + cell.hidden_size, column:column + weight.shape[0]] = w_state.t()
                biases.append(bias)
                offset += cell.hidden_size
                column += weight.shape[0]
                if self.pure:
                    self.register_buffer(f"tau_{i}", cell.w_tau.detach().float().abs())
                    self.register_buffer(f"amplitude_{i}", cell.A.detach().float())
            scale = policy.command_scale.detach().float()
            self.register_buffer("recurrent_weight", recurrent)
            self.register_buffer("recurrent_bias", torch.cat(biases))
            self.register_buffer("readout_weight", (policy.readout.weight.detach().float() * scale[:, None]).t().contiguous())
            self.register_buffer("readout_bias", policy.readout.bias.detach().float() * scale)

    @staticmethod
    def applies_to(policy: nn.Module) -> bool:
        config = getattr(policy, "config", None)
        if getattr(config, "kind", None) != "cfc":
            return False
        cells = list(policy.core.cfc.layers)
        return all(len(cell.backbone) == 0 for cell in cells)

    def forward(self, features: torch.Tensor, state: torch.Tensor,
                timespan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recurrent_terms = torch.split(torch.addmm(self.recurrent_bias, state, self.recurrent_weight),
                                      self.head_widths, dim=1)
        y = features
        new_states = []
        for i, size in enumerate(self.sizes):
            heads = torch.addmm(recurrent_terms[i], y, getattr(self, f"input_weight_{i}"))
            if self.pure:
                amplitude = getattr(self, f"amplitude_{i}")
                y = -amplitude * torch.exp(-timespan * (getattr(self, f"tau_{i}") + torch.abs(heads))) * heads + amplitude
            else:
                f1, f2, t_a, t_b = torch.split(heads, size, dim=1)
                f1 = torch.tanh(f1)
                f2 = torch.tanh(f2)
                gate = torch.sigmoid(t_a * timespan + t_b)
                y = f1 + gate * f2 if self.no_gate else f1 + gate * (f2 - f1)
            new_states.append(y)
        new_state = new_states[0] if len(new_states) == 1 else torch.cat(new_states, dim=1)
        return torch.addmm(self.readout_bias, y, self.readout_weight), new_state


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: tuple[str, ...],
            output_names: tuple[str, ...], opset: int) -> "onnx.ModelProto":  # noqa: F821
    """Export `module` with a dynamic batch axis on every input/output; returns the ONNX model."""
    import onnx

    module = module.eval()
    # "torchvision is not installed" notices from the exporter's op registry: irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # The exporter is chatty about deprecations inside torch that do not concern these graphs.
        warnings.simplefilter("ignore")
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                module, example, dynamo=True, input_names=list(input_names),
                output_names=list(output_names), opset_version=opset,
                dynamic_shapes=tuple({0: batch} for _ in example), external_data=False,
                optimize=True, verbose=False)
        except Exception as error:  # exporter internals: re-raise with what was being exported
            raise ExportError(f"ONNX export of {type(module).__name__} failed: {error}") from error
    model = program.model_proto
    onnx.checker.check_model(model)
    return model


def _set_metadata(model: "onnx.ModelProto", metadata: dict[str, str]) -> None:  # noqa: F821
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def _common_metadata(role: str) -> dict[str, str]:
    import liquid_control

    return {"format": "liquid_control", "format_version": str(FORMAT_VERSION), "role": role,
            "exporter": "torch.onnx.export(dynamo=True)", "torch_version": torch.__version__,
            "liquid_control_version": liquid_control.__version__}


def policy_onnx(policy: nn.Module, *, fold: bool = True, opset: int = OPSET) -> "onnx.ModelProto":  # noqa: F821
    """`policy` (a `PolicyModel`) as a one-step ONNX model with metadata, in memory.

    fold: export CfC policies without backbone in the folded deploy form (`_FoldedCfCStep`,
    fewer nodes, same function); other policies, or fold=False, export `PolicyModel.step` as is.

    The graph includes the policy's input normalisation and output scaling (they are
    buffers of the model), so its ``command`` output is in m/s and rad/s, heading frame FLU.
    """
    from liquid_control.models.policy import COMMAND_AXES

    config = policy.config
    feature_size = int(config.feature_size)
    state_size = int(policy.state_size)
    initial_state = policy.initial_state(1).detach().float()
    # Example batch of 2: torch.export specialises dims of size 1, which would fix the batch.
    example = (torch.zeros(EXAMPLE_BATCH, feature_size), initial_state.repeat(EXAMPLE_BATCH, 1),
               torch.ones(EXAMPLE_BATCH, 1))
    folded = fold and _FoldedCfCStep.applies_to(policy)
    module = _FoldedCfCStep(policy) if folded else _PolicyStep(policy)
    model = _export(module, example, POLICY_INPUTS, POLICY_OUTPUTS, opset)
    trainable, effective = _parameter_counts(policy)
    metadata = _common_metadata("policy")
    metadata.update({
        "graph_form": "folded" if folded else "plain",
        "policy_config": _config_json(config),
        "feature_size": str(feature_size), "state_size": str(state_size),
        "initial_state": json.dumps(initial_state[0].tolist()),
        "frame_period_s": repr(float(config.frame_period_s)),
        "feature_names": json.dumps([f"feature_{i}" for i in range(feature_size)]),
        "command_names": json.dumps(list(COMMAND_AXES)),  # heading frame FLU: m/s, m/s, m/s, rad/s
        "trainable_parameters": str(trainable), "effective_parameters": str(effective),
    })
    _set_metadata(model, metadata)
    model.doc_string = ("liquid_control policy step: (features, state, timespan in nominal frame periods)"
                        " -> (command [vx, vy, vz m/s, yaw rate rad/s] heading frame FLU, new_state)")
    return model


def export_policy(policy: nn.Module, path: PathLike, *, fold: bool = True, opset: int = OPSET) -> Path:
    """Write `policy_onnx(policy)` to `path`; returns the path."""
    return _save(policy_onnx(policy, fold=fold, opset=opset), path)


def _save(model: "onnx.ModelProto", path: PathLike) -> Path:  # noqa: F821
    import onnx

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(path))
    except OSError as error:  # e.g. --out under /proc or a read-only disk
        raise ExportError(f"{path}: cannot write the ONNX file ({error.strerror or error})") from None
    return path


def perception_onnx(perception: nn.Module, *, opset: int = OPSET) -> "onnx.ModelProto":  # noqa: F821
    """`perception` (a `FeatureExtractor`) as an ONNX model image -> features with metadata, in memory."""
    config = perception.config
    example = (torch.rand(EXAMPLE_BATCH, 3, int(config.height), int(config.width)),)
    model = _export(perception, example, PERCEPTION_INPUTS, PERCEPTION_OUTPUTS, opset)
    trainable, effective = _parameter_counts(perception)
    metadata = _common_metadata("perception")
    metadata.update({
        "perception_config": _config_json(config),
        "height": str(int(config.height)), "width": str(int(config.width)),
        "feature_size": str(int(config.feature_size)),
        "feature_names": json.dumps([f"feature_{i}" for i in range(int(config.feature_size))]),
        "trainable_parameters": str(trainable), "effective_parameters": str(effective),
    })
    _set_metadata(model, metadata)
    model.doc_string = "liquid_control perception: image (B, 3, H, W) RGB float in [0, 1] -> features (B, N)"
    return model


def export_perception(perception: nn.Module, path: PathLike, *,
                      opset: int = OPSET) -> Path:
    """Write `perception_onnx(perception)` to `path`; returns the path."""
    return _save(perception_onnx(perception, opset=opset), path)


def metadata_of(model: "onnx.ModelProto", source: str = "ONNX model") -> dict[str, str]:  # noqa: F821
    """The metadata_props of an in-memory ONNX model written by this module (ExportError otherwise)."""
    return check_metadata({entry.key: entry.value for entry in model.metadata_props}, source)


def load_onnx(path: PathLike) -> "onnx.ModelProto":  # noqa: F821
    """Read an ONNX file with a clear error for missing or unreadable files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        return onnx.load_model(str(path))
    except Exception as error:
        raise ExportError(f"{path}: not a readable ONNX file ({error})") from error


def read_metadata(path: PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file written by this module (raises ExportError otherwise)."""
    return metadata_of(load_onnx(path), str(path))


def _cpu_session(path: PathLike) -> "onnxruntime.InferenceSession":  # noqa: F821
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_policy(policy: nn.Module, path: PathLike, *, seed: int = 0, batches: tuple[int, ...] = (1, 3),
                  tolerance: Optional[float] = VERIFY_TOLERANCE) -> float:
    """Max |ONNX - torch| over command and new_state on random inputs, for each batch size.

    Inputs: features ~ N(0, 1) in the model's raw units scaled by 3 (so that input
    normalisation is exercised), states uniform in [-1, 1], timespans uniform in
    [0.1, 3] nominal frames. Raises ExportError when `tolerance` is given and exceeded.
    """
    session = _cpu_session(path)
    generator = torch.Generator().manual_seed(seed)
    feature_size, state_size = int(policy.config.feature_size), int(policy.state_size)
    worst = 0.0
    policy = policy.eval()
    for batch in batches:
        features = 3.0 * torch.randn(batch, feature_size, generator=generator)
        state = 2.0 * torch.rand(batch, state_size, generator=generator) - 1.0
        timespan = 0.1 + 2.9 * torch.rand(batch, 1, generator=generator)
        with torch.inference_mode():
            expected = policy.step(features, state, timespan)
        got = session.run(list(POLICY_OUTPUTS), {"features": features.numpy(), "state": state.numpy(),
                                                 "timespan": timespan.numpy()})
        for want, have in zip(expected, got):
            worst = max(worst, float(np.max(np.abs(want.numpy() - have))))
    if tolerance is not None and not worst <= tolerance:  # `not <=` also catches NaN
        raise ExportError(f"{path}: ONNX policy differs from PyTorch by {worst:.3g} (> {tolerance:g})")
    return worst


def verify_perception(perception: nn.Module, path: PathLike, *, seed: int = 0, batches: tuple[int, ...] = (1, 2),
                      tolerance: Optional[float] = VERIFY_TOLERANCE) -> float:
    """Max |ONNX - torch| of the features on random images uniform in [0, 1]."""
    session = _cpu_session(path)
    generator = torch.Generator().manual_seed(seed)
    config = perception.config
    worst = 0.0
    perception = perception.eval()
    for batch in batches:
        image = torch.rand(batch, 3, int(config.height), int(config.width), generator=generator)
        with torch.inference_mode():
            expected = perception(image)
        (got,) = session.run(list(PERCEPTION_OUTPUTS), {"image": image.numpy()})
        worst = max(worst, float(np.max(np.abs(expected.numpy() - got))))
    if tolerance is not None and not worst <= tolerance:
        raise ExportError(f"{path}: ONNX perception differs from PyTorch by {worst:.3g} (> {tolerance:g})")
    return worst


@dataclass(frozen=True)
class ExportReport:
    """What `export_model_file` wrote and how close each graph is to PyTorch (max |diff|)."""

    policy_path: Optional[Path]
    perception_path: Optional[Path]
    policy_max_diff: Optional[float]
    perception_max_diff: Optional[float]


def export_bundle(policy: Optional[nn.Module], perception: Optional[nn.Module], out_dir: PathLike, *,
                  tolerance: Optional[float] = VERIFY_TOLERANCE) -> ExportReport:
    """Export and verify whichever of policy/perception is given into `out_dir`
    (``policy.onnx``, ``perception.onnx``)."""
    out_dir = Path(out_dir)
    try:  # before exporting (seconds of work): an unwritable --out fails at once
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"{out_dir}: cannot write the ONNX files there ({error.strerror or error})") from None
    policy_path = perception_path = None
    policy_diff = perception_diff = None
    if policy is not None:
        policy_path = export_policy(policy, out_dir / "policy.onnx")
        policy_diff = verify_policy(policy, policy_path, tolerance=tolerance)
    if perception is not None:
        perception_path = export_perception(perception, out_dir / "perception.onnx")
        perception_diff = verify_perception(perception, perception_path, tolerance=tolerance)
    return ExportReport(policy_path, perception_path, policy_diff, perception_diff)


def export_model_file(model_path: PathLike, out_dir: PathLike, *,
                      tolerance: Optional[float] = VERIFY_TOLERANCE) -> ExportReport:
    """Load a model file (.safetensors, see models.model_file) and `export_bundle` its parts."""
    from liquid_control.models.model_file import load_model

    bundle = load_model(model_path)
    if bundle.policy is None and bundle.perception is None:
        raise ExportError(f"{model_path}: the model file holds neither a policy nor a perception model")
    return export_bundle(bundle.policy, bundle.perception, out_dir, tolerance=tolerance)


@dataclass(frozen=True)
class CachedExport:
    """What `export_cache` made: the verified ONNX model (`data`) and where it was written (`path`, None
    when the folder is not writable: `write_error` says why)."""

    role: str
    path: Optional[Path]
    data: bytes
    max_diff: float
    write_error: str = ""


def export_cache(model_path: PathLike, role: str, *, tolerance: Optional[float] = VERIFY_TOLERANCE,
                 bundle: Any = None) -> CachedExport:
    """Export `role` of a model file, verify it against PyTorch and write it as the model's ONNX cache
    (onnx_file.cache_path) with the model file's SHA-256; the file appears only complete and verified
    (temporary file + rename). `bundle`: the model file already loaded (models.model_file.load_model)."""
    from liquid_control.models.model_file import load_model

    model_path = Path(model_path)
    digest = file_sha256(model_path)
    bundle = load_model(model_path) if bundle is None else bundle
    module = getattr(bundle, role)
    if module is None:  # ValueError, as the torch path raises for the same file
        raise ValueError(f"{model_path}: the model file holds no {role} model")
    model = policy_onnx(module) if role == "policy" else perception_onnx(module)
    verify = verify_policy if role == "policy" else verify_perception
    with tempfile.TemporaryDirectory() as scratch:
        max_diff = verify(module, _save(model, Path(scratch) / f"{role}.onnx"), tolerance=tolerance)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    metadata.update(source_model=model_path.name, source_sha256=digest, verified_max_diff=repr(max_diff))
    _set_metadata(model, metadata)
    data = model.SerializeToString()
    target = cache_path(model_path, role)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        return CachedExport(role, None, data, max_diff, f"cannot write {target}: {error}")
    return CachedExport(role, target, data, max_diff)


def export_caches(model_path: PathLike, *, tolerance: Optional[float] = VERIFY_TOLERANCE) -> list[CachedExport]:
    """`export_cache` for every model the file holds (policy, perception)."""
    from liquid_control.models.model_file import load_model

    bundle = load_model(model_path)
    roles = [role for role in ROLES if getattr(bundle, role) is not None]
    if not roles:
        raise ExportError(f"{model_path}: the model file holds neither a policy nor a perception model")
    return [export_cache(model_path, role, tolerance=tolerance, bundle=bundle) for role in roles]


def ensure_caches(model_path: PathLike, *, tolerance: Optional[float] = VERIFY_TOLERANCE) -> list[CachedExport]:
    """`export_cache` for each model of the file whose ONNX cache is missing or does not match it (none when
    all match): a graph that starts perception and policy together builds the cache once, before them,
    instead of both nodes exporting at start at the same time."""
    import onnxruntime as ort

    from liquid_control.models.model_file import load_model

    digest = file_sha256(model_path)
    bundle = None
    made = []
    for role in ROLES:
        cached = cache_path(model_path, role)
        if cached.is_file():
            try:
                metadata = ort.InferenceSession(str(cached), providers=["CPUExecutionProvider"]) \
                    .get_modelmeta().custom_metadata_map
                if not cache_problem(metadata, role, digest):
                    continue
            except Exception:  # unreadable: rebuilt below
                pass
        bundle = load_model(model_path) if bundle is None else bundle
        if getattr(bundle, role) is not None:
            made.append(export_cache(model_path, role, tolerance=tolerance, bundle=bundle))
    return made
