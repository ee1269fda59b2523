"""Which model file a node loads, and the runtime options it runs it with (no ROS)."""
from __future__ import annotations

from pathlib import Path

from liquid_control.inference.runtime import RuntimeOptions
from liquid_control.util.paths import share_path

DEFAULT_MODEL = ("models", "default_cfc.safetensors")
PROVIDER_SHORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                        "tensorrt": "TensorrtExecutionProvider"}


def default_model_path() -> Path:
    """The shipped policy + perception model file (models/default_cfc.safetensors)."""
    return share_path(*DEFAULT_MODEL)


def resolve_model_path(value: str) -> Path:
    """`value` (a .safetensors model file or an .onnx export), or the shipped default when empty.

    Raises FileNotFoundError with a hint when the file does not exist.
    """
    path = Path(value).expanduser() if value else default_model_path()
    if not path.is_file():
        hint = (" (the shipped default model has not been trained yet: pass a model file, e.g. "
                "model_path:=/path/to/model.safetensors)") if not value else ""
        raise FileNotFoundError(f"model file {path} does not exist{hint}")
    if path.suffix.lower() not in (".safetensors", ".onnx"):
        raise ValueError(f"model file {path}: expected a .safetensors model file or an .onnx export")
    return path


def runtime_options(backend: str, providers: str, threads: int, fp16: bool = False) -> RuntimeOptions:
    """RuntimeOptions from node parameters; `providers` is a comma list ('' = best available),
    full onnxruntime names or the short names cpu, cuda, tensorrt."""
    names = [PROVIDER_SHORT_NAMES.get(p.strip().lower(), p.strip()) for p in providers.split(",") if p.strip()]
    return RuntimeOptions(backend=backend, providers=tuple(names) if names else None, fp16=fp16, threads=threads)


def load_runtime(kind: type, value: str, options: RuntimeOptions):
    """`kind(path, options)` (PolicyRuntime or PerceptionRuntime) for a model parameter value.

    Every way a model can fail to load (missing file, bad model file, wrong ONNX role,
    unavailable provider) becomes a ValueError naming the file, so a node reports it in one
    line and exits instead of printing a traceback.
    """
    from liquid_control.models.errors import ModelFileError  # torch-free (the onnxruntime path loads no torch)

    path = resolve_model_path(value)
    try:
        return kind(path, options)
    except (ModelFileError, RuntimeError, OSError, KeyError) as error:
        raise ValueError(f"cannot load {path}: {error}") from None
