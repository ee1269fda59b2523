"""Inference runtimes the ROS nodes use: `PolicyRuntime` (holds the recurrent state) and
`PerceptionRuntime` (image -> features).

Each loads a model file (``.safetensors``, see models.model_file), an exported ONNX
file (``.onnx``, see export.py) or an in-memory model, and runs it with one of two
backends:

- ``onnxruntime``: the deploy path. Execution providers are chosen in the order
  TensorRT -> CUDA -> CPU among those available (``providers`` overrides this);
  ``fp16`` turns on FP16 in providers that have such a switch (TensorRT). A model
  file is run from its verified ONNX cache (onnx_file: ``NAME.policy.onnx`` /
  ``NAME.perception.onnx`` beside it, written by `liquid-control export`) when the
  cache's recorded SHA-256 matches the model file; then neither torch nor the onnx
  package is imported. A missing or mismatching cache is never used: the model is
  exported and verified again (a few seconds, torch loaded) and the cache rewritten
  where the folder is writable; `cache_note` says so. An in-memory model is exported
  in memory.
- ``torch``: eager PyTorch, for model files and in-memory models only.
- ``auto``: onnxruntime when it is installed, else torch.

Per-step overhead is kept small: inputs and outputs live in pre-allocated numpy
buffers bound to the onnxruntime session once (IOBinding); the state ping-pongs
between two buffers. Measured here (1 thread): a dense 100-unit CfC step took 10.0 us with
IOBinding vs 13.8 us with ``session.run`` and a pre-built input dict; the default wired
policy's full `step` (checks included) 20.9 us vs 23.4 us for a bare ``session.run`` on a
loaded machine (benchmarks/policy_latency.py, docs/BENCHMARKS.md).

Safety semantics: `PolicyRuntime.step` raises ``ValueError`` for bad inputs
(wrong shape, NaN/inf, negative timespan) and for non-finite outputs, and then
leaves the recurrent state unchanged. The caller decides to fail safe (zero
velocity / hover); nothing here ever returns a command it did not compute.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, Union

import numpy as np

from liquid_control.inference import onnx_file
from liquid_control.inference.onnx_file import ExportError
from liquid_control.interfaces.codec import MAX_IMAGE_PIXELS
from liquid_control.util.safe_input import clip, loads_json, short_repr

if TYPE_CHECKING:  # torch is imported only on the paths that need it (torch backend, exports)
    from torch import nn

Backend = Literal["auto", "onnxruntime", "torch"]
BACKENDS = ("auto", "onnxruntime", "torch")
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
Source = Union[str, Path, "nn.Module"]
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_file_source(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model.

    backend: "auto" (onnxruntime if installed, else torch), "onnxruntime" or "torch".
    providers: onnxruntime execution providers to use, in order (None = best available,
        TensorRT -> CUDA -> CPU). CPU is always appended as the last fallback.
    fp16: let providers that support it compute in FP16 (TensorRT's trt_fp16_enable).
        Ignored by CPU/CUDA providers and by the torch backend.
    threads: intra-op threads (onnxruntime session; torch.set_num_threads for torch,
        which is process-wide). Default 1: the control loop runs on one core.
    """

    backend: Backend = "auto"
    providers: Optional[tuple[str, ...]] = None
    fp16: bool = False
    threads: int = 1

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"runtime: unknown backend {self.backend!r}; valid: {BACKENDS}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise ValueError(f"runtime: threads must be a positive integer, got {self.threads!r}")
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))


def select_providers(requested: Optional[Sequence[str]] = None, fp16: bool = False,
                     available: Optional[Sequence[str]] = None) -> list[tuple[str, dict[str, str]]]:
    """onnxruntime providers with options, best first; CPU is always the last fallback.

    `requested` None picks from PROVIDER_PREFERENCE among `available` (default: what
    this onnxruntime build offers). A requested provider that is not available is an
    error naming the ones that are.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = list(available)
    if requested is None:
        chosen = [name for name in PROVIDER_PREFERENCE if name in available]
    else:
        missing = [name for name in requested if name not in available]
        if missing:
            raise ValueError(f"runtime: execution provider(s) {missing} not available in this onnxruntime "
                             f"build; available: {available}")
        chosen = list(dict.fromkeys(requested))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    result = []
    for name in chosen:
        options: dict[str, str] = {}
        if name == "TensorrtExecutionProvider" and fp16:
            options["trt_fp16_enable"] = "True"
        result.append((name, options))
    return result


def _resolve_backend(source: Source, backend: Backend) -> str:
    is_onnx = _is_file_source(source) and Path(source).suffix.lower() == ".onnx"
    if backend == "torch" and is_onnx:
        raise ValueError(f"runtime: {source} is an ONNX file; the torch backend needs a model file "
                         "(.safetensors) or use backend='onnxruntime'")
    if backend != "auto":
        return backend
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if is_onnx:
            raise ValueError(f"runtime: {source} is an ONNX file but onnxruntime is not installed") from None
        return "torch"
    return "onnxruntime"


def _session(model_bytes_or_path: Union[bytes, str], options: RuntimeOptions, source: str) -> Any:
    import onnxruntime as ort

    providers = select_providers(options.providers, options.fp16)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.log_severity_level = 3  # errors only: provider fallbacks are reported via .providers
    try:
        return ort.InferenceSession(model_bytes_or_path, session_options,
                                    providers=[name for name, _ in providers],
                                    provider_options=[opts for _, opts in providers])
    except Exception as error:  # onnxruntime's InvalidProtobuf / Fail / InvalidGraph ... : a bad file or graph
        raise ExportError(f"{source}: not a readable ONNX file (onnxruntime cannot load this graph: "
                          f"{clip(str(error), 300)})") from None


def _open_onnx(data: Union[bytes, str, Path], role: str, options: RuntimeOptions, source: str) -> tuple[Any, dict]:
    """(onnxruntime session, checked metadata) of an ONNX file or serialized model holding a `role` model."""
    if isinstance(data, (str, Path)) and not Path(data).is_file():
        raise ExportError(f"{data}: no such ONNX file")
    session = _session(str(data) if isinstance(data, Path) else data, options, source)
    metadata = onnx_file.check_metadata(session.get_modelmeta().custom_metadata_map, source)
    if metadata.get("role") != role:
        raise ExportError(f"{source}: this ONNX file holds a {short_repr(metadata.get('role'))} model, not a {role!r} model")
    return session, metadata


def _cached_onnx(model_path: Path, role: str, options: RuntimeOptions) -> tuple[Any, dict, str]:
    """(session, metadata, note) for `role` of a model file on onnxruntime, from its ONNX cache when the
    cache matches the model file, else from a fresh verified export (note: why, and what it cost)."""
    cached = onnx_file.cache_path(model_path, role)
    digest = onnx_file.file_sha256(model_path)
    if cached.is_file():
        try:
            session, metadata = _open_onnx(cached, role, options, str(cached))
            problem = onnx_file.cache_problem(metadata, role, digest)
        except ExportError as error:
            problem = f"is unusable ({error})"
        if not problem:
            return session, metadata, ""
    else:
        problem = "is missing"
    try:
        from liquid_control.inference import export as onnx_export  # loads torch: only when the cache fails
    except ImportError as error:  # a deploy install without torch (docs/DEPLOY.md): the cache is the only way
        raise ExportError(f"ONNX cache {cached} {problem}, and exporting it needs {error.name or 'torch'}, which "
                          f"is not installed: run `liquid-control export {model_path.name}` where torch is and copy "
                          f"the .onnx files next to {model_path}") from None

    started = time.perf_counter()
    made = onnx_export.export_cache(model_path, role)  # ValueError if the file holds no such model
    session, metadata = _open_onnx(made.data, role, options, str(model_path))
    where = f"wrote {made.path}" if made.path else f"not cached: {made.write_error}"
    note = (f"ONNX cache {cached} {problem}: exported and verified at start in "
            f"{time.perf_counter() - started:.1f} s ({where}); `liquid-control export {model_path}` ahead of "
            "time makes start-up only load")
    return session, metadata, note


def _check_graph(session: Any, source: str, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> None:
    """Names and non-batch dims of the graph's inputs/outputs must be exactly as expected."""
    for kind, declared, expected in (("input", session.get_inputs(), inputs),
                                     ("output", session.get_outputs(), outputs)):
        found = {arg.name: tuple(arg.shape) for arg in declared}
        if set(found) != set(expected):
            raise ExportError(f"{source}: graph {kind}s are {sorted(found)}, expected {sorted(expected)}")
        for name, dims in expected.items():
            shape = found[name]
            if len(shape) != len(dims) + 1 or tuple(shape[1:]) != dims:
                raise ExportError(f"{source}: {kind} {name!r} has shape {list(shape)}, expected "
                                  f"[batch, {', '.join(map(str, dims))}] (from the file's metadata)")


def _bind(session: Any, binding: Any, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    """Bind host numpy buffers once; onnxruntime then reads/writes them in place every run."""
    for name, array in inputs.items():
        binding.bind_input(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
    for name, array in outputs.items():
        binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)


@dataclass
class _Loaded:
    """A model ready for a runtime: a torch module (torch backend, or to export in memory) or an onnxruntime
    session with its file's metadata."""

    source: str
    module: Any = None
    session: Any = None
    metadata: Optional[dict] = None
    cache_note: str = ""


def _load(source: Source, role: str, backend: str, options: RuntimeOptions) -> _Loaded:
    """What a policy/perception runtime runs, from a module, an ONNX file or a model file (see module doc)."""
    if not _is_file_source(source):
        return _Loaded(type(source).__name__, module=source)
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        session, metadata = _open_onnx(path, role, options, str(path))
        return _Loaded(str(path), session=session, metadata=metadata)
    if backend == "onnxruntime":
        if not path.is_file():
            from liquid_control.models.errors import ModelFileError

            raise ModelFileError(path, "no such file")
        session, metadata, note = _cached_onnx(path, role, options)
        return _Loaded(str(path), session=session, metadata=metadata, cache_note=note)
    from liquid_control.models.model_file import load_model

    bundle = load_model(path)
    module = getattr(bundle, role)
    if module is None:
        raise ValueError(f"{path}: the model file holds no {role} model")
    return _Loaded(str(path), module=module)


def _session_for_module(module: Any, role: str, options: RuntimeOptions) -> Any:
    """An onnxruntime session of an in-memory torch module, exported in memory (loads torch)."""
    from liquid_control.inference import export as onnx_export

    model = onnx_export.policy_onnx(module) if role == "policy" else onnx_export.perception_onnx(module)
    return _session(model.SerializeToString(), options, type(module).__name__)


def _metadata_size(metadata: dict[str, str], key: str) -> int:
    """A positive size from ONNX metadata (text), bounded like a model file's configs."""
    from liquid_control.models.limits import MAX_WIDTH

    text = metadata[key]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 2 * MAX_WIDTH:  # an LSTM state is 2 x hidden size
        raise ValueError(f"{key} {short_repr(text)} is not an integer in [1, {2 * MAX_WIDTH}]")
    return int(text)


def _metadata_frame_period(metadata: dict[str, str]) -> float:
    from liquid_control.models.limits import FRAME_PERIOD_RANGE_S

    value = float(metadata["frame_period_s"])
    low, high = FRAME_PERIOD_RANGE_S
    if not low <= value <= high:  # also refuses NaN
        raise ValueError(f"frame_period_s {short_repr(metadata['frame_period_s'])} is not in [{low:g}, {high:g}] s")
    return value


class PolicyRuntime:
    """Runs the policy one step at a time and holds its recurrent state.

    Not thread-safe: one caller at a time (the policy node's single-threaded executor).

    ``step(features (F,), timespan) -> command (4,)``: `timespan` is the time since the
    previous step's features in nominal frame periods (1.0 = on time; see DESIGN.md
    "Timespans"); the command is [vx, vy, vz (m/s), yaw rate (rad/s)] in the heading frame FLU
    (yaw-only: x forward and y left stay level).
    """

    def __init__(self, source: Source, options: Optional[RuntimeOptions] = None, **option_overrides: Any) -> None:
        if options is not None and option_overrides:
            raise ValueError("runtime: pass either options= or keyword options, not both")
        self.options = options or RuntimeOptions(**option_overrides)
        self.backend = _resolve_backend(source, self.options.backend)
        loaded = _load(source, "policy", self.backend, self.options)
        self.source, self.cache_note = loaded.source, loaded.cache_note
        model = loaded.module
        if model is not None:
            import torch

            model = model.eval().float()
            self.feature_size = int(model.config.feature_size)
            self.state_size = int(model.state_size)
            self.frame_period_s = float(model.config.frame_period_s)
            with torch.inference_mode():
                initial = model.initial_state(1).float().numpy().reshape(-1)
        else:
            metadata = loaded.metadata
            try:
                self.feature_size = _metadata_size(metadata, "feature_size")
                self.state_size = _metadata_size(metadata, "state_size")
                self.frame_period_s = _metadata_frame_period(metadata)
                initial = np.asarray(loads_json(metadata["initial_state"]), dtype=np.float32)
            except (KeyError, TypeError, ValueError, OverflowError) as error:
                raise ExportError(f"{self.source}: policy metadata is incomplete or invalid "
                                  f"({clip(repr(error))}); re-export the model") from None
            if initial.shape != (self.state_size,) or not np.isfinite(initial).all():
                raise ExportError(f"{self.source}: initial_state metadata must be {self.state_size} "
                                  f"finite numbers (state_size), got shape {initial.shape}")
        self._initial_state = initial.astype(np.float32)
        # Pre-allocated buffers: the only memory a step touches. Outputs share one array laid
        # out [state A | command | state B], so "command and the state just written are finite"
        # is one check over a contiguous view whichever way the state ping-pongs.
        size = self.state_size
        self._features = np.zeros((1, self.feature_size), np.float32)
        self._timespan = np.ones((1, 1), np.float32)
        self._outputs = np.zeros(2 * size + 4, np.float32)
        self._states = (self._outputs[:size].reshape(1, size), self._outputs[size + 4:].reshape(1, size))
        self._command = self._outputs[size:size + 4].reshape(1, 4)
        self._written = (self._outputs[size:], self._outputs[:size + 4])  # by a step from state 0 / 1
        for buffer in self._states:
            buffer[0] = self._initial_state
        self._current = 0  # index of the buffer holding the current state
        self._model: Optional[nn.Module] = None
        self.providers: list[str] = []
        if self.backend == "torch":
            import torch

            self._torch = torch
            torch.set_num_threads(self.options.threads)
            self._model = model
            self._torch_inputs = (torch.from_numpy(self._features), torch.from_numpy(self._timespan))
            self._torch_states = tuple(torch.from_numpy(buffer) for buffer in self._states)
        else:
            self._session = loaded.session if model is None else _session_for_module(model, "policy", self.options)
            self.providers = list(self._session.get_providers())
            _check_graph(self._session, self.source,
                         {"features": (self.feature_size,), "state": (self.state_size,), "timespan": (1,)},
                         {"command": (4,), "new_state": (self.state_size,)})
            self._bindings = []
            for src, dst in ((0, 1), (1, 0)):  # state ping-pong: step k reads states[k%2], writes the other
                binding = self._session.io_binding()
                _bind(self._session, binding,
                      {"features": self._features, "state": self._states[src], "timespan": self._timespan},
                      {"command": self._command, "new_state": self._states[dst]})
                self._bindings.append(binding)

    @property
    def state(self) -> np.ndarray:
        """A copy of the current recurrent state (state_size,)."""
        return self._states[self._current][0].copy()

    def reset(self) -> None:
        """Back to the initial state (start of an episode, or after a fail-safe)."""
        self._states[self._current][0] = self._initial_state

    def _load_inputs(self, features: Any, timespan: Any) -> None:
        array = features if type(features) is np.ndarray else np.asarray(features)
        if array.shape != (self.feature_size,):
            raise ValueError(f"policy: features must have shape ({self.feature_size},), got {array.shape}")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"policy: features must be numeric, got dtype {array.dtype}")
        buffer = self._features[0]
        if array.dtype == np.float32:
            buffer[:] = array
        else:  # values beyond float32 range become inf (caught next) without a numpy warning
            with np.errstate(over="ignore", invalid="ignore"):
                buffer[:] = array
        # dot(v, v) is NaN/inf iff some entry is NaN/inf (or |v| > ~1e18): 3x cheaper than isfinite().all()
        if not math.isfinite(np.dot(buffer, buffer)):
            bad = np.flatnonzero(~np.isfinite(buffer))[:5].tolist()
            raise ValueError(f"policy: features contain NaN/inf or absurdly large values (indices {bad or 'all'})")
        try:
            value = float(timespan)
        except OverflowError:  # an int beyond float range (10**400): not finite either
            value = math.inf
        except (TypeError, ValueError):
            raise ValueError(f"policy: timespan must be a number, got {short_repr(timespan)}") from None
        if not 0.0 <= value <= _FLOAT32_MAX:  # also NaN; beyond float32 the graph would see inf
            raise ValueError(f"policy: timespan must be finite and >= 0 (nominal frame periods), got {value}")
        self._timespan[0, 0] = value

    def step(self, features: Any, timespan: float) -> np.ndarray:
        """One policy step; returns the command (4,) [vx, vy, vz m/s, yaw rate rad/s], heading frame FLU.

        Raises ValueError (state unchanged) for bad inputs or a non-finite result.
        """
        self._load_inputs(features, timespan)
        current = self._current
        if self._model is not None:
            features_t, timespan_t = self._torch_inputs
            with self._torch.inference_mode():
                command, new_state = self._model.step(features_t, self._torch_states[current], timespan_t)
            self._command[:] = command.numpy()
            self._states[1 - current][:] = new_state.numpy()
        else:
            try:
                self._session.run_with_iobinding(self._bindings[current])
            except Exception as error:  # a graph that loads but fails at run time: bad input, state unchanged
                raise ValueError(f"policy: onnxruntime failed: {clip(str(error))}") from None
        written = self._written[current]
        if not math.isfinite(np.dot(written, written)):
            raise ValueError("policy: the model produced a non-finite command or state; state left unchanged")
        self._current = 1 - current
        return self._command[0].copy()


class PerceptionRuntime:
    """Runs the perception model: ``features(image uint8 (H, W[, C]), encoding) -> (N,)``.

    Images of up to `max_image_pixels` (H * W; default 4096 x 4096) are resized/converted by
    models.perception.preprocess (OpenCV) to the model's input; a larger one is a ValueError, so a
    corrupt or hostile frame cannot stall the caller. Encodings are those of sensor_msgs/Image
    (rgb8, bgr8, mono8, ...).
    """

    def __init__(self, source: Source, options: Optional[RuntimeOptions] = None, *,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, **option_overrides: Any) -> None:
        from liquid_control.models.perception_input import PerceptionConfig

        if options is not None and option_overrides:
            raise ValueError("runtime: pass either options= or keyword options, not both")
        if not isinstance(max_image_pixels, int) or isinstance(max_image_pixels, bool) or max_image_pixels < 1:
            raise ValueError(f"runtime: max_image_pixels must be a positive integer, got {max_image_pixels!r}")
        self.max_image_pixels = max_image_pixels
        self.options = options or RuntimeOptions(**option_overrides)
        self.backend = _resolve_backend(source, self.options.backend)
        loaded = _load(source, "perception", self.backend, self.options)
        self.source, self.cache_note = loaded.source, loaded.cache_note
        model = loaded.module
        if model is not None:
            model = model.eval().float()
            self.config = model.config
        else:
            try:
                self.config = PerceptionConfig.from_dict(loads_json(loaded.metadata["perception_config"]))
            except (KeyError, TypeError, ValueError, OverflowError) as error:
                raise ExportError(f"{self.source}: perception metadata is incomplete or invalid "
                                  f"({clip(repr(error))}); re-export the model") from None
        self.feature_size = int(self.config.feature_size)
        height, width = int(self.config.height), int(self.config.width)
        self._image = np.zeros((1, 3, height, width), np.float32)
        self._features = np.zeros((1, self.feature_size), np.float32)
        self._model: Optional[nn.Module] = None
        self.providers: list[str] = []
        if self.backend == "torch":
            import torch

            self._torch = torch
            torch.set_num_threads(self.options.threads)
            self._model = model
            self._image_t = torch.from_numpy(self._image)
        else:
            self._session = loaded.session if model is None else \
                _session_for_module(model, "perception", self.options)
            self.providers = list(self._session.get_providers())
            _check_graph(self._session, self.source, {"image": (3, height, width)},
                         {"features": (self.feature_size,)})
            self._binding = self._session.io_binding()
            _bind(self._session, self._binding, {"image": self._image}, {"features": self._features})

    def features(self, image: np.ndarray, encoding: str) -> np.ndarray:
        """Features (N,) of one camera image. Raises ValueError for unusable images or non-finite output."""
        from liquid_control.models.perception_input import preprocess

        self._image[0] = preprocess(image, encoding, self.config, self.max_image_pixels)
        if self._model is not None:
            with self._torch.inference_mode():
                np.copyto(self._features, self._model(self._image_t).numpy())
        else:
            try:
                self._session.run_with_iobinding(self._binding)
            except Exception as error:
                raise ValueError(f"perception: onnxruntime failed: {clip(str(error))}") from None
        if not np.isfinite(self._features).all():
            raise ValueError("perception: the model produced non-finite features")
        return self._features[0].copy()


def check_pair(perception: PerceptionRuntime, policy: PolicyRuntime) -> None:
    """Raise ValueError unless the perception's features fit the policy's input."""
    if perception.feature_size != policy.feature_size:
        raise ValueError(f"perception ({perception.source}) outputs {perception.feature_size} features but the "
                         f"policy ({policy.source}) expects {policy.feature_size}")
