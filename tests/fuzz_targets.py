"""Fuzz targets shared by the property tests (tests/test_fuzz.py, hypothesis) and benchmarks/fuzz.py.

Each target takes a `FuzzContext` (real inputs built once: a model file, its ONNX export, a bag, a
scenario, a training recipe) and a `random.Random`, mutates a real input, feeds it to one public entry
point and classifies what happened as an `Outcome`:

- "ok": a correct result (checked against what the unmutated input gives, or against invariants:
  finite commands, targets inside the arena, every frame of the bag);
- "handled": the entry point's own clear error (ModelFileError, ExportError, BagError, ScenarioError,
  ConfigError, ValueError) with a non-empty, bounded message;
- "crash": any other exception, or an error message longer than MAX_MESSAGE characters;
- "silent": a result that is wrong or partial without a word (e.g. a truncated bag read as if whole);
- "hang": classified by the runner (`run_case`) when a case takes longer than its time limit.
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import signal
import struct
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

MAX_MESSAGE = 2000  # characters; error messages quote inputs only through bounded reprs
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    kind: str  # ok, handled, crash, silent, hang
    detail: str = ""


@dataclass(repr=False)
class FuzzContext:
    root: Path
    model_path: Path
    model_bytes: bytes
    onnx_path: Path
    onnx_bytes: bytes
    perception_onnx_path: Path | None  # None: CLI cases never pass --perception ONNX
    bag_file: Path  # a bare .mcap with images and commands
    bag_bytes: bytes
    bag_frames: int
    scenario: dict[str, Any]
    recipe_text: str
    state: dict[str, Any] = field(default_factory=dict)  # lazily built runtimes, reference results

    def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing example: keep it short
        return f"FuzzContext({self.root})"

    def scratch(self, name: str) -> Path:
        path = self.root / "cases" / name
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def handmade_policy_onnx(feature_size: int, state_size: int) -> Any:
    """A policy graph as export.policy_onnx lays it out (inputs features/state/timespan, outputs
    command/new_state, batch axis "batch", the same metadata): new_state = tanh(features A + state B +
    timespan), command = new_state C."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from liquid_control.inference.export import POLICY_INPUTS, POLICY_OUTPUTS, _common_metadata, _set_metadata

    rng = np.random.default_rng(0)
    weights = {"A": (feature_size, state_size), "B": (state_size, state_size), "C": (state_size, 4)}
    initializers = [numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)
                    for name, shape in weights.items()]
    nodes = [helper.make_node("MatMul", ["features", "A"], ["fa"]), helper.make_node("MatMul", ["state", "B"], ["sb"]),
             helper.make_node("Add", ["fa", "sb"], ["pre"]), helper.make_node("Add", ["pre", "timespan"], ["pre_t"]),
             helper.make_node("Tanh", ["pre_t"], ["new_state"]), helper.make_node("MatMul", ["new_state", "C"], ["command"])]
    sizes = {"features": feature_size, "state": state_size, "timespan": 1, "command": 4, "new_state": state_size}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", sizes[n]]) for n in POLICY_INPUTS]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", sizes[n]]) for n in POLICY_OUTPUTS]
    graph = helper.make_graph(nodes, "handmade_policy", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    metadata = _common_metadata("policy")
    metadata.update({"graph_form": "plain", "policy_config": json.dumps({"kind": "handmade"}),
                     "feature_size": str(feature_size), "state_size": str(state_size),
                     "initial_state": json.dumps([0.0] * state_size), "frame_period_s": repr(1 / 30),
                     "feature_names": json.dumps([f"feature_{i}" for i in range(feature_size)]),
                     "command_names": json.dumps(["vx", "vy", "vz", "yaw_rate"]),
                     "trainable_parameters": "100", "effective_parameters": "100"})
    _set_metadata(model, metadata)
    onnx.checker.check_model(model)
    return model


def write_chunked_mcap(path: Path, entries: list, chunk_size: int = 1500) -> Path:
    """A bare .mcap (mcap + mcap-ros2-support) in small chunks, as a recorder that flushes often leaves it:
    a cut file keeps whole chunks before the cut, which BagReader repairs into a readable prefix."""
    import bag_fixtures as bf
    from mcap_ros2.writer import Writer

    with open(path, "wb") as handle:
        writer = Writer(handle, chunk_size=chunk_size)
        schemas = {}
        for entry in entries:
            if entry.msgtype not in schemas:
                text, _ = bf.TYPESTORE.generate_msgdef(entry.msgtype, ros_version=2)
                schemas[entry.msgtype] = writer.register_msgdef(entry.msgtype, text)
            writer.write_message(entry.topic, schemas[entry.msgtype], bf._as_plain(entry.msg),
                                 log_time=entry.log_time_ns, publish_time=entry.log_time_ns)
        writer.finish()
    return path


def build_context(root: Path, onnx_policy: str = "cfc", perception_onnx: bool = True) -> FuzzContext:
    """Real inputs to mutate: a tiny model file, a policy ONNX export, a 12-frame bag, a shipped scenario
    and training recipe.

    onnx_policy: "cfc" exports the model file's wired CfC policy (the deploy graph; ~10-50 s on a loaded
    2-core machine); "handmade" writes a small recurrent graph with the exporter's inputs, outputs and
    metadata, built with onnx.helper in milliseconds (for the tests: what is fuzzed is how the runtime
    treats the file, not the exporter).
    perception_onnx: also export the perception (another ~20 s), for CLI cases with ONNX files only.
    """
    import bag_fixtures as bf
    from liquid_control.inference.export import export_perception, export_policy
    from liquid_control.models import FeatureExtractor, PerceptionConfig, PolicyConfig, PolicyModel, save_model

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    policy = PolicyModel(PolicyConfig(kind="cfc", feature_size=8, cfc_units=12, cfc_motor_neurons=4)).eval()
    policy.set_normalization(torch.randn(8), 0.5 + torch.rand(8))
    policy.set_command_scale([1.5, 1.0, 0.5, 2.0])
    perception = FeatureExtractor(PerceptionConfig(height=24, width=32, conv_channels=(4, 8), keypoints=4,
                                                   feature_size=8)).eval()
    model_path = save_model(root / "model.safetensors", policy, perception, training={"epochs": 1})
    if onnx_policy == "cfc":
        onnx_path = export_policy(policy, root / "policy.onnx")
    else:
        onnx_path = root / "policy.onnx"
        onnx_path.write_bytes(handmade_policy_onnx(feature_size=8, state_size=6).SerializeToString())
    perception_onnx_path = export_perception(perception, root / "perception.onnx") if perception_onnx else None
    frames = 12
    bag_file = write_chunked_mcap(root / "bag.mcap", bf.standard_entries(frames, height=12, width=16))
    scenario = yaml.safe_load((REPO / "sim" / "scenarios" / "train_fly_to_target.yaml").read_text())
    recipe_text = (REPO / "config" / "train_tiny.yaml").read_text()
    return FuzzContext(root, model_path, model_path.read_bytes(), onnx_path, onnx_path.read_bytes(),
                       perception_onnx_path, bag_file, bag_file.read_bytes(), frames, scenario, recipe_text)


# ---------------------------------------------------------------------------------------------- helpers

def _handled(error: BaseException) -> Outcome:
    message = str(error)
    if not message.strip():
        return Outcome("crash", f"{type(error).__name__} with an empty message")
    if len(message) > MAX_MESSAGE:
        return Outcome("crash", f"{type(error).__name__} message of {len(message)} characters")
    return Outcome("handled", f"{type(error).__name__}: {message[:160]}")


def _crash(error: BaseException) -> Outcome:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return Outcome("crash", f"{type(error).__name__} at {where}: {str(error)[:160]}")


def weird_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON/YAML-able value of the kinds that broke loaders: huge, non-finite, wrong type, deep, mixed."""
    kind = rng.randrange(16)
    if kind == 0:
        return 10 ** rng.choice([19, 40, 400])
    if kind == 1:
        return rng.choice([float("inf"), float("-inf"), float("nan"), 1e308, -1e-320])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice(["", "x" * rng.choice([1, 100, 100_000]), "ünïcödé", "\x00", "1.5"])
    if kind == 4:
        return rng.uniform(-1e6, 1e6)
    if kind == 5:
        return rng.randrange(-5, 5)
    if kind == 6:
        value: Any = 0
        for _ in range(rng.choice([10, 70, 500])):
            value = [value]
        return value
    if kind == 7 and depth < 3:
        return [weird_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if kind == 8 and depth < 3:
        return {rng.choice(["a", "mean", "std", "scale", "axes", "type", 1, 2.5, "kind"]) if rng.random() < 0.5
                else "k": weird_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    if kind == 9:
        return [rng.uniform(-2, 2) for _ in range(rng.choice([0, 3, 4, 8, 9]))]
    if kind == 10:
        return [rng.randrange(0, 3) for _ in range(rng.choice([0, 4, 8]))]
    if kind == 11:
        return rng.choice([1e6, 1e9, 10 ** 6, 10 ** 12, -1, 0, 2 ** 31])
    if kind == 12:
        return rng.choice([1.5, 0.5, 1e-9, 1e6, 30.0, 0.0333])
    if kind == 13:
        return [[rng.choice([-1, 0, 1, 2]) for _ in range(rng.randrange(1, 5))] for _ in range(rng.randrange(1, 5))]
    return rng.choice(["cfc", "lstm", "ncp", "dense", "rgb8", "sphere", "fly_to_target"])


def _flip(data: bytes, rng: random.Random, count: int, start: int = 0, end: int | None = None) -> bytes:
    buf = bytearray(data)
    end = len(buf) if end is None else min(end, len(buf))
    for _ in range(count):
        if end > start:
            buf[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
    return bytes(buf)


# ---------------------------------------------------------------------------------------------- model file

def _split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join_safetensors(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _resign(header: dict[str, Any], body: bytes, path: Path) -> bytes:
    """Give a mutated file a matching content_sha256 (a consistent but wrong file, as a buggy tool writes)."""
    from safetensors import safe_open

    from liquid_control.models.model_file import DIGEST_KEY, content_digest

    path.write_bytes(_join_safetensors(header, body))
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception:  # not readable at all: nothing to re-sign
        return path.read_bytes()
    header.setdefault("__metadata__", {})[DIGEST_KEY] = json.dumps(content_digest(tensors, header["__metadata__"]))
    return _join_safetensors(header, body)


def mutate_model(ctx: FuzzContext, rng: random.Random, path: Path) -> tuple[str, bool]:
    """Write a mutated copy of the model file to `path`; returns (mutation name, re-signed)."""
    data = ctx.model_bytes
    header, body = _split_safetensors(data)
    kind = rng.choice(["truncate", "flip", "flip_header", "meta", "meta_field", "dtype", "shape", "offsets",
                       "deep_json", "drop"])
    resign = kind not in ("truncate", "flip", "flip_header") and rng.random() < 0.7
    meta = header["__metadata__"]
    tensor_keys = [k for k in header if k != "__metadata__"]
    if kind == "truncate":
        path.write_bytes(data[:rng.randrange(0, len(data))])
        return kind, False
    if kind == "flip":
        path.write_bytes(_flip(data, rng, rng.randrange(1, 5)))
        return kind, False
    if kind == "flip_header":
        (length,) = struct.unpack("<Q", data[:8])
        path.write_bytes(_flip(data, rng, rng.randrange(1, 4), 0, 8 + length))
        return kind, False
    if kind == "meta":
        key = rng.choice(list(meta) + ["extra"])
        meta[key] = json.dumps(weird_value(rng), allow_nan=True) if rng.random() < 0.9 else "{not json"
    elif kind == "meta_field":
        key = rng.choice(["policy_config", "perception_config", "input_normalization", "output_scaling"])
        value = json.loads(meta[key])
        if isinstance(value, dict) and value:
            field_name = rng.choice(list(value) + ["unknown_field"])
            value[field_name] = weird_value(rng)
        meta[key] = json.dumps(value, allow_nan=True)
    elif kind == "deep_json":
        depth = rng.choice([100, 1000, 50_000])
        meta[rng.choice(list(meta))] = "[" * depth + "]" * depth
    elif kind == "dtype":
        key = rng.choice(tensor_keys)
        header[key]["dtype"] = rng.choice(["I32", "U32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "I8"])
    elif kind == "shape":
        key = rng.choice(tensor_keys)
        shape = header[key]["shape"]
        header[key]["shape"] = list(reversed(shape)) if rng.random() < 0.5 else \
            [max(1, d + rng.choice([-1, 1])) for d in shape] or [1]
    elif kind == "offsets":
        key = rng.choice(tensor_keys)
        begin, end = header[key]["data_offsets"]
        delta = rng.choice([-4, 4, 8, -8])
        header[key]["data_offsets"] = [max(0, begin + delta), max(0, end + delta)]
    elif kind == "drop":
        key = rng.choice(tensor_keys + ["__metadata__"])
        if key == "__metadata__":
            meta.pop(rng.choice(list(meta)))
        else:
            del header[key]
    out = _resign(header, body, path) if resign else _join_safetensors(header, body)
    path.write_bytes(out)
    return kind, resign


def _reference(ctx: FuzzContext) -> Any:
    if "model" not in ctx.state:
        from liquid_control.models.model_file import load_model

        ctx.state["model"] = load_model(ctx.model_path)
    return ctx.state["model"]


def _state_equal(a: Any, b: Any) -> bool:
    if (a is None) != (b is None):
        return False
    if a is None:
        return True
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def target_model_file(ctx: FuzzContext, rng: random.Random) -> Outcome:
    from liquid_control.models.model_file import ModelFileError, load_model

    path = ctx.scratch("model.safetensors")
    kind, resigned = mutate_model(ctx, rng, path)
    try:
        bundle = load_model(path)
    except ModelFileError as error:
        return _handled(error)
    except Exception as error:  # noqa: BLE001 - anything else is what the fuzzing looks for
        return _crash(error)
    reference = _reference(ctx)
    if not resigned:
        # Unsigned mutations must not change what the network computes (only informational entries).
        same = _state_equal(bundle.policy, reference.policy) and _state_equal(bundle.perception, reference.perception) \
            and bundle.policy_config == reference.policy_config \
            and bundle.perception_config == reference.perception_config
        return Outcome("ok") if same else Outcome("silent", f"{kind}: loaded a different network without an error")
    # A consistent (re-signed) file: what loaded must be exactly what the file declares.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    for prefix, module in (("policy.", bundle.policy), ("perception.", bundle.perception)):
        if module is None:
            continue
        for name, value in module.state_dict().items():
            if name in ("grid_x", "grid_y"):
                continue
            if prefix + name not in stored:
                continue  # derived (non-persistent) buffer
            file_value = stored[prefix + name]
            if file_value.dtype != value.dtype or not torch.equal(file_value, value):
                return Outcome("silent", f"{kind}: {prefix}{name} loaded differs from the file's tensor")
    if bundle.policy is not None:
        scale = meta.get("output_scaling")
        if scale is not None and not torch.allclose(bundle.policy.command_scale.double(),
                                                    torch.tensor(scale["scale"], dtype=torch.float64)):
            return Outcome("silent", f"{kind}: output_scaling header differs from command_scale")
        period = bundle.policy_config.frame_period_s
        if not (isinstance(period, (int, float)) and not isinstance(period, bool) and 1e-3 <= period <= 1.0):
            return Outcome("silent", f"{kind}: frame_period_s {period!r} accepted")
    return Outcome("ok")


# ---------------------------------------------------------------------------------------------- ONNX

def target_onnx(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """A mutated policy ONNX export (bytes or metadata) through PolicyRuntime and one step."""
    import onnx

    from liquid_control.inference.export import ExportError
    from liquid_control.inference.runtime import PolicyRuntime

    path = ctx.scratch("policy.onnx")
    kind = rng.choice(["truncate", "flip", "metadata", "metadata", "role"])
    if kind == "truncate":
        path.write_bytes(ctx.onnx_bytes[:rng.randrange(0, len(ctx.onnx_bytes))])
    elif kind == "flip":
        path.write_bytes(_flip(ctx.onnx_bytes, rng, rng.randrange(1, 6)))
    else:
        model = onnx.load_model_from_string(ctx.onnx_bytes)
        entries = {p.key: p for p in model.metadata_props}
        key = rng.choice(list(entries)) if kind == "metadata" else "role"
        value = weird_value(rng)
        entries[key].value = value if isinstance(value, str) else json.dumps(value, allow_nan=True)
        path.write_bytes(model.SerializeToString())
    try:
        runtime = PolicyRuntime(path, backend="onnxruntime")
        command = runtime.step(np.zeros(runtime.feature_size, np.float32), 1.0)
    except (ExportError, ValueError) as error:
        return _handled(error)
    except Exception as error:  # noqa: BLE001
        return _crash(error)
    if command.shape != (4,) or not np.isfinite(command).all():
        return Outcome("silent", f"{kind}: command {command!r}")
    if not 1e-3 <= runtime.frame_period_s <= 1.0:
        return Outcome("silent", f"{kind}: frame_period_s {runtime.frame_period_s} accepted")
    return Outcome("ok")


# ---------------------------------------------------------------------------------------------- images

def _perception(ctx: FuzzContext) -> Any:
    if "perception" not in ctx.state:
        from liquid_control.inference.runtime import PerceptionRuntime

        ctx.state["perception"] = PerceptionRuntime(ctx.model_path, backend="torch")
    return ctx.state["perception"]


def target_image(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """Raw / compressed image payloads with random headers and data, decoded and run through perception."""
    from liquid_control.interfaces.codec import compressed_image_to_rgb, raw_image_view

    runtime = _perception(ctx)
    kind = rng.choice(["raw", "compressed", "array", "valid"])
    try:
        if kind == "raw":
            encoding = rng.choice(["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "16UC1", "", "yuv422"])
            height, width = rng.choice([0, 1, 7, 24, 5000, 2 ** 31]), rng.choice([0, 1, 9, 32, 5000, 2 ** 31])
            channels = {"mono8": 1, "rgba8": 4, "bgra8": 4}.get(encoding, 3)
            step = width * channels + rng.choice([0, 0, 0, 1, -1, 3])
            size = max(0, step * height + rng.choice([0, 0, -1, 1, -step]))
            size = min(size, 1 << 20)
            data = bytes(rng.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1)
            image, enc = raw_image_view(encoding, height, width, step, rng.random() < 0.5, data[:size])
        elif kind == "compressed":
            ok, buf = __import__("cv2").imencode(rng.choice([".png", ".jpg"]),
                                                 np.random.default_rng(rng.randrange(1000)).integers(
                                                     0, 256, (10, 14, 3), dtype=np.uint8))
            data = buf.tobytes()
            data = _flip(data, rng, rng.randrange(0, 6)) if rng.random() < 0.5 else data[:rng.randrange(len(data))]
            image, enc = compressed_image_to_rgb(rng.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", "tiff"]),
                                                 data)
            enc = "rgb8"
        elif kind == "valid":  # a well-formed frame of any size: features must come out finite
            height, width = rng.randrange(1, 300), rng.randrange(1, 300)
            enc = rng.choice(["rgb8", "bgr8", "mono8"])
            pixels = np.random.default_rng(rng.randrange(1000)).integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = pixels[:, :, 0] if enc == "mono8" else pixels
        else:
            shape = rng.choice([(24, 32, 3), (24, 32), (24, 32, 1), (0, 3, 3), (10000, 20000, 3), (5, 5, 4), (3,)])
            dtype = rng.choice([np.uint8, np.float32, np.float64, np.int16, np.bool_])
            with np.errstate(invalid="ignore"):
                image = np.broadcast_to(np.asarray(rng.choice([0, 1, 0.5, 255, float("nan"), 2.0])).astype(dtype),
                                        shape)
            enc = rng.choice(["rgb8", "bgr8", "mono8", "jpeg"])
        features = runtime.features(image, enc)
    except ValueError as error:
        return _handled(error)
    except Exception as error:  # noqa: BLE001
        return _crash(error)
    if features.shape != (runtime.feature_size,) or not np.isfinite(features).all():
        return Outcome("silent", f"{kind}: features {features.shape}")
    return Outcome("ok")


# ---------------------------------------------------------------------------------------------- bags

def target_bag(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """A bag with truncations, flipped bytes or a wrong schema, read frame by frame.

    Correct: a BagError; or every frame and command, identical to the original; or, for a truncated
    file, `repaired` set (what evaluate-bag reports and --strict refuses) and a prefix of the original.
    """
    from liquid_control.bags import BagError
    from liquid_control.bags.reader import BagReader

    path = ctx.scratch("bag.mcap")
    data = ctx.bag_bytes
    kind = rng.choice(["truncate", "truncate", "flip", "schema", "flip_many"])
    if kind == "truncate":
        data = data[:rng.randrange(0, len(data))]
    elif kind == "flip":
        data = _flip(data, rng, 1)
    elif kind == "flip_many":
        data = _flip(data, rng, rng.randrange(2, 20))
    else:
        old = b"sensor_msgs/msg/Image"
        new = rng.choice([b"sensor_msgs/msg/Imagf", b"sensor_msgs/msg/Illum", b"std_msgs/msg/String!!"])
        data = data.replace(old, new[:len(old)].ljust(len(old), b"_"), rng.choice([1, 2, 5]))
    path.write_bytes(data)
    reference = ctx.state.get("bag_reference")
    if reference is None:
        with BagReader(ctx.bag_file) as reader:
            reference = ([(f.stamp_ns, f.image.copy()) for f in reader.images()],
                         [(c.stamp_ns, c.command.copy()) for c in reader.commands()])
        ctx.state["bag_reference"] = reference
    try:
        with BagReader(path) as reader:
            images = [(f.stamp_ns, f.image.copy()) for f in reader.images()]
            commands = [(c.stamp_ns, c.command.copy()) for c in reader.commands()]
            repaired = reader.repaired
    except BagError as error:
        return _handled(error)
    except Exception as error:  # noqa: BLE001
        return _crash(error)

    def same(got: list, want: list) -> bool:
        return all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(got, want))

    if not (same(images, reference[0]) and same(commands, reference[1])):
        return Outcome("silent", f"{kind}: frames differ from the recorded ones without an error")
    if len(images) < len(reference[0]) or len(commands) < len(reference[1]):
        return Outcome("ok") if repaired else \
            Outcome("silent", f"{kind}: {len(images)} of {len(reference[0])} frames, not flagged as repaired")
    return Outcome("ok")


# ---------------------------------------------------------------------------------------------- scenarios

def _laughs(levels: int) -> str:
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


def scenario_text(ctx: FuzzContext, rng: random.Random, folder: Path) -> bytes:
    """A mutated scenario file's bytes (may write base files for `extends` into `folder`)."""
    data = json.loads(json.dumps(ctx.scenario))
    kind = rng.choice(["value", "value", "value", "keys", "laughs", "deep", "encoding", "extends", "arena"])
    if kind == "value":
        section = rng.choice(list(data) + ["target", "start", "timing"])
        if isinstance(data.get(section), dict) and rng.random() < 0.8:
            key = rng.choice(list(data[section]) + ["range_m", "xy_m"])
            data[section][key] = weird_value(rng)
        else:
            data[section] = weird_value(rng)
    elif kind == "keys":  # YAML keys of mixed types (JSON would turn them into strings)
        data[rng.choice([1, 2.5, None, True, "zzz"])] = 1
        data["target"][rng.choice([3, "bogus", None])] = 1
        return yaml.safe_dump(data).encode()
    elif kind == "arena":
        data["arena_half_size_m"] = rng.choice([2, 3, 5, 8, 12])
        data.setdefault("target", {})["range_m"] = [rng.uniform(1, 4), rng.uniform(4, 12)]
    elif kind == "laughs":
        levels = rng.choice([3, 6, 9])
        return (_laughs(levels) + f"task: fly_to_target\nstart: {{height_m: *a{levels - 1}}}\n").encode()
    elif kind == "deep":
        depth = rng.choice([50, 500, 5000])
        return ("task: fly_to_target\ntarget: {range_m: " + "[" * depth + "1" + "]" * depth + "}\n").encode()
    elif kind == "encoding":
        text = yaml.safe_dump(data)
        return text.encode(rng.choice(["utf-16", "utf-32", "latin-1"])) if rng.random() < 0.7 else \
            b"\xff\xfe\x00task: \xc3\x28\n"
    elif kind == "extends":
        length = rng.choice([2, 5, 20, 40])  # 1200 files: tests/test_bad_input.py (writing them dominates a case)
        names = [f"chain_{i}" for i in range(length)]
        for i, name in enumerate(names):
            body = {"task": "fly_to_target"} if i == length - 1 else {"extends": f"{names[i + 1]}.yaml"}
            if rng.random() < 0.1:
                body = {"extends": f"{names[0]}.yaml"}  # a cycle
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(body))
        return yaml.safe_dump({"extends": f"{names[0]}.yaml", "duration_s": 10}).encode()
    return json.dumps(data, allow_nan=True).encode()  # JSON is YAML, and dumps deep values without recursing in Python


def target_scenario(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """A mutated scenario file through load_scenario; a loaded one must sample targets inside the arena."""
    from liquid_control.simulation.sampling import sample_episode
    from liquid_control.simulation.scenario import ScenarioError, load_scenario

    folder = ctx.scratch("scenario")
    folder.mkdir(parents=True)
    path = folder / "fuzzed.yaml"
    path.write_bytes(scenario_text(ctx, rng, folder))
    try:
        scenario = load_scenario(path)
        spec = sample_episode(scenario, rng.randrange(1000))
    except ScenarioError as error:
        return _handled(error)
    except Exception as error:  # noqa: BLE001
        return _crash(error)
    half = scenario.arena_half_size_m
    for target in spec.targets:
        if max(abs(float(target[0])), abs(float(target[1]))) >= half:
            return Outcome("silent", f"target {list(target)} outside the arena (half size {half})")
    return Outcome("ok")


def target_recipe(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """A mutated training recipe through load_config (what `train --config` reads first)."""
    from liquid_control.config import ConfigError
    from liquid_control.learning.recipe import load_config

    folder = ctx.scratch("recipe")
    folder.mkdir(parents=True)
    path = folder / "recipe.yaml"
    data = yaml.safe_load(ctx.recipe_text)
    kind = rng.choice(["value", "value", "section", "deep", "encoding", "laughs", "top"])
    if kind == "value":
        section = rng.choice(list(data))
        if isinstance(data[section], dict) and data[section]:
            data[section][rng.choice(list(data[section]) + ["unknown"])] = weird_value(rng)
        text = json.dumps(data, allow_nan=True).encode()
    elif kind == "section":
        data[rng.choice(list(data) + ["5", "null"])] = weird_value(rng)
        text = json.dumps(data, allow_nan=True).encode()
    elif kind == "deep":
        depth = rng.choice([100, 5000])
        text = ("optim: " + "{a: " * depth + "1" + "}" * depth + "\n").encode()
    elif kind == "encoding":
        text = ctx.recipe_text.encode("utf-16")
    elif kind == "laughs":
        text = (_laughs(9) + "optim: {epochs: *a8}\n").encode()
    else:
        text = json.dumps(weird_value(rng), allow_nan=True).encode()
    path.write_bytes(text)
    try:
        config = load_config(path, {"data.sources": [str(folder)]} if rng.random() < 0.5 else None)
    except ConfigError as error:
        return _handled(error)
    except Exception as error:  # noqa: BLE001
        return _crash(error)
    optim = config.optim
    if not (isinstance(optim.epochs, int) and optim.epochs >= 1 and optim.learning_rate > 0):
        return Outcome("silent", f"{kind}: accepted optim {optim}")
    return Outcome("ok")


# ---------------------------------------------------------------------------------------------- runtime

def _policy(ctx: FuzzContext, backend: str) -> Any:
    """The model file's policy on torch, or the ONNX export on onnxruntime (the deploy path)."""
    if backend not in ctx.state:
        from liquid_control.inference.runtime import PolicyRuntime

        source = ctx.model_path if backend == "torch" else ctx.onnx_path
        ctx.state[backend] = PolicyRuntime(source, backend=backend)
    return ctx.state[backend]


def target_runtime(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """PolicyRuntime.step with absurd features and timespans: ValueError with the state unchanged, or a
    finite command."""
    runtime = _policy(ctx, rng.choice(["torch", "onnxruntime"]))
    size = runtime.feature_size
    features: Any = rng.choice([
        lambda: np.random.default_rng(rng.randrange(100)).normal(size=size) * rng.choice([1, 1e3, 1e30, 1e300]),
        lambda: np.full(size, rng.choice([np.nan, np.inf, -np.inf, 0.0])),
        lambda: np.zeros(rng.choice([0, size - 1, size + 1, 3 * size])),
        lambda: np.zeros((1, size)),
        lambda: [rng.uniform(-1, 1) for _ in range(size)],
        lambda: ["a"] * size,
        lambda: np.zeros(size, dtype=rng.choice([np.int64, np.uint8, np.float16, np.complex64, np.bool_, object])),
        lambda: None,
    ])()
    timespan: Any = rng.choice([1.0, 0.0, -1.0, 1e-30, 4.0, 1e30, 10 ** 400, -(10 ** 400), float("nan"),
                                float("inf"), "1.0", "abc", None, [1.0], np.float64(2.0), True, 2 ** 64])
    before = runtime.state
    try:
        command = runtime.step(features, timespan)
    except ValueError as error:
        if not np.array_equal(runtime.state, before):
            return Outcome("silent", "a refused step changed the recurrent state")
        return _handled(error)
    except Exception as error:  # noqa: BLE001
        return _crash(error)
    if command.shape != (4,) or not np.isfinite(command).all() or not np.isfinite(runtime.state).all():
        return Outcome("silent", f"non-finite command {command!r}")
    if rng.random() < 0.05:
        runtime.reset()
    return Outcome("ok")


# ---------------------------------------------------------------------------------------------- CLI

def target_cli(ctx: FuzzContext, rng: random.Random) -> Outcome:
    """`liquid-control` arguments (in-process cli.main): exit status 0 or 2 (argparse's usage errors are
    2 as well) with a one-line `error:` message on stderr, never a traceback."""
    from liquid_control import cli

    folder = ctx.scratch("cli")
    folder.mkdir(parents=True)
    bad_model = folder / "bad.safetensors"
    mutate_model(ctx, rng, bad_model)
    bad_onnx = folder / "bad.onnx"
    bad_onnx.write_bytes(_flip(ctx.onnx_bytes, rng, 3) if rng.random() < 0.5 else ctx.onnx_bytes[:200])
    truncated = folder / "truncated.mcap"
    truncated.write_bytes(ctx.bag_bytes[:rng.randrange(len(ctx.bag_bytes) // 3, len(ctx.bag_bytes))])
    weird_yaml = folder / "weird.yaml"
    weird_yaml.write_bytes(rng.choice([b"\xff\xfe\x00\x01", "a: b".encode("utf-16"), b"[" * 3000,
                                       (_laughs(9) + "optim: {epochs: *a8}\n").encode(), b"- 1\n- 2\n"]))
    paths = [str(p) for p in (bad_model, bad_onnx, truncated, weird_yaml, ctx.model_path, ctx.onnx_path)] + \
        ["/proc/nope", str(folder / "missing.safetensors"), str(folder), "", "-", "\x7f", "é" * 300]
    command = rng.choice(["info", "export", "evaluate-bag", "train", "evaluate", "record", "bench", "nosuch",
                          "--help", "collect", "expert"])
    pick = rng.choice
    if command == "info":
        argv = ["info"] + ([pick(paths)] if rng.random() < 0.9 else [])
    elif command == "export":
        # Not the good model: exporting and verifying it takes seconds (tests/test_bad_input.py covers
        # `export GOOD --out /proc/nope`).
        argv = ["export", pick([p for p in paths if p != str(ctx.model_path)]), "--out",
                pick(["/proc/nope", str(folder / "out"), str(bad_model)])]
        if rng.random() < 0.3:
            argv += ["--tolerance", pick(["nan", "-1", "abc", "1e400"])]
    elif command == "evaluate-bag":
        argv = ["evaluate-bag", pick([str(truncated), str(ctx.bag_file), pick(paths)]), "--backend", "torch",
                "--model", pick([str(ctx.model_path), pick(paths)]), "-o", str(folder / "eval")]
        if rng.random() < 0.5:  # ONNX files: onnxruntime (a model file would be exported first: seconds)
            if ctx.perception_onnx_path is not None:
                argv += ["--policy", pick([str(bad_onnx), str(ctx.onnx_path)]),
                         "--perception", str(ctx.perception_onnx_path)]
            else:  # the policy loads first, so a bad one is refused before any perception export
                argv += ["--policy", str(bad_onnx)]
            argv[argv.index("torch")] = "onnxruntime"
        if rng.random() < 0.3:
            argv += ["--max-match-gap", pick(["0", "-1", "nan", "inf", "1e400", "x"])]
        if rng.random() < 0.4:
            argv.append("--strict")
    elif command == "train":
        argv = ["train", "--config", pick([str(weird_yaml), pick(paths)]), "--no-progress"]
        if rng.random() < 0.4:
            argv += ["--set", pick(["optim.epochs", "optim.epochs=[[[[", "a.b.c=1", "=1", "optim=5",
                                    "optim.epochs.x=1"])]
    elif command == "evaluate":
        argv = ["evaluate", "--model", pick(paths), "--suite", pick(["no_such_suite", str(weird_yaml)]),
                "--episodes", pick(["1", "0", "-3", "x"]), "--no-progress"]
    elif command == "record":
        argv = ["record", "--repair", pick(paths)]
    elif command == "bench":
        argv = ["bench", pick(["no_such_benchmark", "../etc/passwd"])]
    elif command == "collect":
        argv = ["collect", "--suite", pick(["no_such_suite", str(weird_yaml)]), "--out", str(folder / "c"),
                "--episodes", pick(["1", "0", "x"]), "--no-progress"]
    elif command == "expert":
        argv = ["expert", "--suite", pick(["no_such_suite", str(weird_yaml), "train"]), "--no-progress",
                "--set", pick(["nope=1", "forward_gain=x", "forward_gain=nan", "yaw_gain=-1", "=", "forward_gain",
                               "chase_forward_gain=1e999", "chase_forward_gain=\x00"])]  # none valid: never flies
    else:
        argv = [command] + [pick(paths) for _ in range(rng.randrange(3))]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as stop:  # argparse: usage errors exit 2, --help exits 0
        code = stop.code
    except Exception as error:  # noqa: BLE001
        return _crash(error)
    stderr = err.getvalue()
    if "Traceback" in stderr or "Traceback" in out.getvalue():
        return Outcome("crash", f"{argv[:2]}: traceback printed")
    if code not in (0, 1, 2):
        return Outcome("crash", f"{argv[:2]}: exit status {code!r}")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if code == 2 and errors and max(len(line) for line in errors) > MAX_MESSAGE:
        return Outcome("crash", f"{argv[:2]}: error line of {max(len(line) for line in errors)} characters")
    if code == 0 and command == "evaluate-bag" and Path(argv[1]) == truncated:
        report = json.loads((folder / "eval" / "report.json").read_text())
        if not report.get("repaired") or "warning:" not in stderr or "--strict" in argv:
            return Outcome("silent", "evaluate-bag read a truncated bag without repaired/warning (or despite --strict)")
    return Outcome("handled" if code else "ok", f"{argv[:2]} -> {code}")


TARGETS: dict[str, Callable[[FuzzContext, random.Random], Outcome]] = {
    "model_file": target_model_file,
    "onnx": target_onnx,
    "image": target_image,
    "bag": target_bag,
    "scenario": target_scenario,
    "recipe": target_recipe,
    "runtime": target_runtime,
    "cli": target_cli,
}


class _Timeout(BaseException):  # not an Exception: a target's `except Exception` must not swallow it
    pass


def run_case(target: Callable[[FuzzContext, random.Random], Outcome], ctx: FuzzContext, rng: random.Random,
             limit_s: float, hard_limit_s: float | None = None) -> tuple[Outcome, float]:
    """Run one case; taking over `limit_s` is a hang. hard_limit_s: stop the case with SIGALRM after this
    long (main thread only; the benchmark uses it, the tests leave the alarm to pytest-timeout)."""
    def stop(signum: int, frame: Any) -> None:
        raise _Timeout()

    if hard_limit_s is not None:
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, hard_limit_s)
    started = time.perf_counter()
    try:
        outcome = target(ctx, rng)
    except _Timeout:
        outcome = Outcome("hang", f"stopped after {hard_limit_s} s")
    finally:
        if hard_limit_s is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - started
    if elapsed > limit_s and outcome.kind != "hang":
        outcome = Outcome("hang", f"{elapsed:.1f} s ({outcome.kind}: {outcome.detail[:100]})")
    return outcome, elapsed


def new_context(**options: Any) -> FuzzContext:
    return build_context(Path(tempfile.mkdtemp(prefix="liquid_fuzz_")), **options)


__all__ = ["FuzzContext", "Outcome", "TARGETS", "build_context", "new_context", "run_case", "weird_value"]
