"""Regression tests for issue 13: each class of crashing, hanging or silently wrong input found by fuzzing
now gives a clear project error (or, for truncated bags, a flagged partial result) quickly.

Property tests over random mutations of the same inputs: tests/test_fuzz.py.
"""
import json
import struct
import time

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

import bag_fixtures as bf
import fuzz_targets as ft
from liquid_control import cli
from liquid_control.bags import BagError
from liquid_control.config import ConfigError
from liquid_control.evaluation.bag import EvaluationConfig, evaluate_bag
from liquid_control.inference.export import ExportError
from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime
from liquid_control.learning.recipe import load_config
from liquid_control.models.model_file import DIGEST_KEY, ModelFileError, content_digest, load_model
from liquid_control.models.perception import PerceptionConfig, preprocess
from liquid_control.simulation.scenario import ScenarioError, load_scenario
from liquid_control.util.safe_input import InputError, load_yaml_text, loads_json, short_repr


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return ft.build_context(tmp_path_factory.mktemp("bad_input"), onnx_policy="handmade", perception_onnx=False)


def edit_model(src, dst, header=None, tensors=None, sign=True):
    """Copy a model file with header entries (JSON values) / tensors replaced; sign: a matching digest."""
    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
    meta.update({key: json.dumps(value) if not isinstance(value, str) else value
                 for key, value in (header or {}).items()})
    stored.update(tensors or {})
    if sign:
        meta[DIGEST_KEY] = json.dumps(content_digest(stored, meta))
    save_file(stored, str(dst), metadata=meta)
    return dst


def header_of(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: json.loads(v) for k, v in handle.metadata().items()}


def refused(path, pattern):
    started = time.perf_counter()
    with pytest.raises(ModelFileError, match=pattern):
        load_model(path)
    assert time.perf_counter() - started < 5.0


# ---------------------------------------------------------------------------------------------- model header

def test_deeply_nested_header_json_is_a_model_file_error(ctx, tmp_path):
    deep = "[" * 50_000 + "]" * 50_000
    refused(edit_model(ctx.model_path, tmp_path / "deep.safetensors", {"training": deep}), "nested deeper")
    with pytest.raises(InputError, match="nested deeper"):
        loads_json('{"a": ' * 100 + "1" + "}" * 100)
    inside = "[" * 100
    assert loads_json(json.dumps({"a": inside, "b": "\\\"[["})) == {"a": inside, "b": '\\"[['}  # strings do not count


@pytest.mark.parametrize("value, pattern", [
    ([1, 2, 3], "input_normalization must be"),
    ({"mean": [0.0] * 3, "std": [1.0] * 3}, r"input_normalization.mean must be 8 finite numbers"),
    ({"mean": "abc", "std": [1.0] * 8}, r"input_normalization.mean must be 8"),
    ({"mean": [True] * 8, "std": [1.0] * 8}, r"input_normalization.mean must be 8"),
    ({"mean": [10 ** 400] * 8, "std": [1.0] * 8}, r"input_normalization.mean must be 8"),
    ({"mean": [0.0] * 8, "std": [1.0] * 8}, r"input_normalization.mean in the header disagrees"),
])
def test_input_normalization_is_validated(ctx, tmp_path, value, pattern):
    refused(edit_model(ctx.model_path, tmp_path / "n.safetensors", {"input_normalization": value}), pattern)


@pytest.mark.parametrize("field, value", [("height", 10 ** 6), ("width", 10 ** 12), ("keypoints", 10 ** 9),
                                          ("conv_channels", [10 ** 6, 8]), ("feature_size", 10 ** 7)])
def test_absurd_perception_sizes_are_refused_before_allocating(ctx, tmp_path, field, value):
    config = header_of(ctx.model_path)["perception_config"]
    config[field] = value
    refused(edit_model(ctx.model_path, tmp_path / "p.safetensors", {"perception_config": config}),
            "invalid perception_config")


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16, torch.float64])
def test_every_tensor_dtype_is_checked(ctx, tmp_path, dtype):
    weight = header_of(ctx.model_path) and load_model(ctx.model_path).policy.readout.weight.detach()
    refused(edit_model(ctx.model_path, tmp_path / "d.safetensors", tensors={"policy.readout.weight": weight.to(dtype)}),
            r"policy.readout.weight has dtype")


def test_a_relabelled_dtype_in_the_raw_header_is_refused(ctx, tmp_path):
    """The fuzzed case: F32 -> I32 in the safetensors header (same byte size) used to load weights of 1e9."""
    data = ctx.model_bytes
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header["policy.readout.weight"]["dtype"] = "I32"
    for sign in (False, True):
        tensors_header = dict(header)
        path = tmp_path / f"i32_{sign}.safetensors"
        text = json.dumps(tensors_header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
        if sign:
            with safe_open(str(path), framework="pt") as handle:
                stored = {key: handle.get_tensor(key) for key in handle.keys()}
            tensors_header["__metadata__"] = dict(header["__metadata__"])
            tensors_header["__metadata__"][DIGEST_KEY] = json.dumps(content_digest(stored, tensors_header["__metadata__"]))
            text = json.dumps(tensors_header).encode()
            path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
        refused(path, "dtype" if sign else DIGEST_KEY)


def test_a_flipped_weight_bit_is_refused(ctx, tmp_path):
    data = bytearray(ctx.model_bytes)
    data[-10] ^= 0x40  # inside the last tensor's bytes
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(data))
    refused(path, "corrupt or was edited")


def test_output_scaling_header_must_match_the_stored_tensor(ctx, tmp_path):
    scaling = header_of(ctx.model_path)["output_scaling"]
    scaling["scale"][0] = 1e6
    refused(edit_model(ctx.model_path, tmp_path / "s.safetensors", {"output_scaling": scaling}),
            "output_scaling.scale .* disagrees with the stored tensor policy.command_scale")
    # ... and the other way round: a stored scale of 1e6 while the header says 1.5.
    policy = load_model(ctx.model_path).policy
    scale = policy.command_scale.clone()
    scale[0] = 1e6
    refused(edit_model(ctx.model_path, tmp_path / "t.safetensors", tensors={"policy.command_scale": scale}),
            "disagrees with the stored tensor policy.command_scale")


@pytest.mark.parametrize("value", [True, 1.5, 1e6, 0, -0.03, "0.033", None])
def test_frame_period_type_and_range(ctx, tmp_path, value):
    config = header_of(ctx.model_path)["policy_config"]
    config["frame_period_s"] = value
    refused(edit_model(ctx.model_path, tmp_path / "f.safetensors", {"policy_config": config, "frame_period_s": value}),
            "frame_period_s")
    # The header's own entry must agree with the config's.
    refused(edit_model(ctx.model_path, tmp_path / "g.safetensors", {"frame_period_s": 0.05}), "frame_period_s 0.05")


def test_the_unmodified_file_still_loads(ctx):
    bundle = load_model(ctx.model_path)
    assert bundle.policy is not None and bundle.perception is not None


# ---------------------------------------------------------------------------------------------- ONNX / CLI

def test_info_on_onnx_with_bad_metadata(ctx, tmp_path, capsys):
    import onnx

    model = onnx.load_model(str(ctx.onnx_path))
    for entry in model.metadata_props:
        if entry.key == "trainable_parameters":
            entry.value = "many"
        if entry.key == "policy_config":
            entry.value = "[" * 10_000
    path = tmp_path / "meta.onnx"
    path.write_bytes(model.SerializeToString())
    assert cli.main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "policy_config metadata is JSON nested deeper" in err and "Traceback" not in err


def test_evaluate_bag_with_a_bad_policy_onnx_is_one_line_exit_2(ctx, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(ctx.onnx_bytes[: len(ctx.onnx_bytes) // 2])
    assert cli.main(["evaluate-bag", str(ctx.bag_file), "--policy", str(bad), "--model", str(ctx.model_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "ONNX" in err
    with pytest.raises(ExportError, match="onnxruntime cannot load this graph"):
        import onnx

        model = onnx.load_model(str(ctx.onnx_path))
        model.graph.node[0].op_type = "NoSuchOp"
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(model.SerializeToString())
        PolicyRuntime(broken, backend="onnxruntime")


def test_export_to_an_unwritable_folder(ctx, capsys):
    assert cli.main(["export", str(ctx.model_path), "--out", "/proc/nope"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "cannot write" in err and "Traceback" not in err


@pytest.mark.parametrize("content", ["utf16", "latin1", "deep", "laughs", "list"])
def test_train_config_that_is_not_a_recipe(tmp_path, capsys, content):
    path = tmp_path / "recipe.yaml"
    path.write_bytes({"utf16": "optim: {epochs: 1}\n".encode("utf-16"), "latin1": "name: caf\xe9\n".encode("latin-1"),
                      "deep": b"optim: " + b"[" * 5000 + b"]" * 5000, "laughs": (ft._laughs(9) + "optim: *a8\n").encode(),
                      "list": b"- 1\n- 2\n"}[content])
    started = time.perf_counter()
    with pytest.raises(ConfigError):
        load_config(path)
    assert time.perf_counter() - started < 5.0
    assert cli.main(["train", "--config", str(path), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: training config")


def test_config_fields_are_type_checked(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("optim: {epochs: '3'}\ndata: {sources: [x]}\n")
    with pytest.raises(ConfigError, match=r"optim.epochs: got '3'; expected an integer"):
        load_config(path)
    path.write_text("optim:\ndata: {sources: [x]}\n")  # an empty section: its defaults
    assert load_config(path).optim.epochs >= 1


# ---------------------------------------------------------------------------------------------- scenarios

def write_scenario(path, text):
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


@pytest.mark.parametrize("text, pattern", [
    ("task: fly_to_target\nduration_s: " + "9" * 400 + "\n", r"duration_s: got 99999.*allowed: a number"),
    ("task: fly_to_target\ntarget: {range_m: " + "1" * 400 + "}\n", "target.range_m: got"),
    ("task: fly_to_target\n1: a\nzz: b\n", "unknown key"),
    ("task: fly_to_target\ntarget: {3: a, zz: b, null: c}\n", "unknown key"),
    ("task: fly_to_target\ntarget: {range_m: " + "[" * 5000 + "]" * 5000 + "}\n", "nested deeper"),
    ("task: fly_to_target\nstart: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "nested deeper"),
])
def test_scenario_values_that_crashed(tmp_path, text, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        load_scenario(write_scenario(tmp_path / "s.yaml", text))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "latin-1"])
def test_scenario_that_is_not_utf8(tmp_path, encoding):
    text = "task: fly_to_target\ndescription: café\n".encode(encoding)
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(write_scenario(tmp_path / "s.yaml", text))


def test_billion_laughs_is_refused_quickly_and_error_messages_are_bounded(tmp_path):
    text = ft._laughs(9) + "task: fly_to_target\nstart: {height_m: *a8}\n"
    started = time.perf_counter()
    with pytest.raises(ScenarioError, match="expands") as error:
        load_scenario(write_scenario(tmp_path / "s.yaml", text))
    assert time.perf_counter() - started < 2.0 and len(str(error.value)) < 500
    # A value that expands to ~10^5 elements passes the parser; its error message stays short.
    anchors = ", ".join(line.split(": ", 1)[1] for line in ft._laughs(5).splitlines())
    text = f"task: fly_to_target\nstart: {{height_m: [{anchors}]}}\n"
    started = time.perf_counter()
    with pytest.raises(ScenarioError, match="start.height_m") as error:
        load_scenario(write_scenario(tmp_path / "t.yaml", text))
    assert time.perf_counter() - started < 2.0 and len(str(error.value)) < 500
    with pytest.raises(InputError, match="infinite value"):
        load_yaml_text("a: &a [*a]\n")
    laughs = [1]
    for _ in range(30):
        laughs = [laughs] * 9
    assert len(short_repr(laughs)) <= 200


def test_long_and_circular_extends_chains(tmp_path):
    for i in range(1200):
        (tmp_path / f"c{i}.yaml").write_text(f"extends: c{i + 1}.yaml\n" if i < 1199 else "task: fly_to_target\n")
    started = time.perf_counter()
    with pytest.raises(ScenarioError, match="extends chain is longer than 16"):
        load_scenario(tmp_path / "c0.yaml")
    assert time.perf_counter() - started < 2.0
    (tmp_path / "x.yaml").write_text("extends: y.yaml\n")
    (tmp_path / "y.yaml").write_text("extends: x.yaml\n")
    with pytest.raises(ScenarioError, match="circular extends"):
        load_scenario(tmp_path / "x.yaml")
    (tmp_path / "ok.yaml").write_text("extends: train_fly_to_target\nduration_s: 7\n")
    assert load_scenario(tmp_path / "ok.yaml").duration_s == 7.0


def test_targets_must_fit_in_the_arena(tmp_path):
    text = "task: fly_to_target\narena_half_size_m: 2\ntarget: {range_m: [3, 8]}\n"
    with pytest.raises(ScenarioError, match="target.range_m.*outside the arena"):
        load_scenario(write_scenario(tmp_path / "s.yaml", text))
    text = "task: fly_to_target\narena_max_height_m: 1.5\ntarget: {height_m: [1, 2]}\n"
    with pytest.raises(ScenarioError, match="target.height_m"):
        load_scenario(write_scenario(tmp_path / "t.yaml", text))


# ---------------------------------------------------------------------------------------------- runtimes

@pytest.mark.parametrize("timespan", [10 ** 400, -(10 ** 400), 1e39, float("nan"), float("inf"), "x", None])
def test_absurd_timespans_are_value_errors_and_leave_the_state(ctx, timespan):
    for runtime in (PolicyRuntime(ctx.model_path, backend="torch"), PolicyRuntime(ctx.onnx_path, backend="onnxruntime")):
        runtime.step(np.zeros(runtime.feature_size), 1.0)
        before = runtime.state
        with pytest.raises(ValueError, match="timespan"):
            runtime.step(np.zeros(runtime.feature_size), timespan)
        assert np.array_equal(runtime.state, before)


def test_image_size_is_bounded_by_a_parameter(ctx):
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10000, 20000, 3))  # no 600 MB allocation
    runtime = PerceptionRuntime(ctx.model_path, backend="torch")
    started = time.perf_counter()
    with pytest.raises(ValueError, match="exceeds the limit of 16777216 pixels"):
        runtime.features(huge, "rgb8")
    assert time.perf_counter() - started < 1.0
    small = PerceptionRuntime(ctx.model_path, backend="torch", max_image_pixels=100)
    with pytest.raises(ValueError, match="exceeds the limit of 100 pixels"):
        small.features(np.zeros((11, 10, 3), np.uint8), "rgb8")
    assert small.features(np.zeros((10, 10, 3), np.uint8), "rgb8").shape == (small.feature_size,)
    with pytest.raises(ValueError, match="max_image_pixels"):
        PerceptionRuntime(ctx.model_path, backend="torch", max_image_pixels=0)
    with pytest.raises(ValueError, match="exceeds"):
        preprocess(np.zeros((20, 20), np.uint8), "mono8", PerceptionConfig(height=16, width=16, conv_channels=(4,)),
                   max_pixels=399)


def test_perception_node_declares_the_image_limit(repo_root):
    from liquid_control.nodes.perception_node import PARAMETERS

    spec = {p.name: p for p in PARAMETERS}["max_image_pixels"]
    config = yaml.safe_load((repo_root / "config" / "perception.yaml").read_text())
    assert spec.default == config["perception"]["ros__parameters"]["max_image_pixels"] == 4096 * 4096


# ---------------------------------------------------------------------------------------------- truncated bags

@pytest.fixture(scope="module")
def truncated_bag(tmp_path_factory):
    """A 40-frame MCAP bag cut in the middle (its writer killed): a repairable prefix."""
    root = tmp_path_factory.mktemp("truncated")
    full = ft.write_chunked_mcap(root / "full.mcap", bf.standard_entries(40, height=12, width=16))
    data = full.read_bytes()
    cut = root / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])
    return full, cut


def test_evaluate_bag_flags_a_truncated_bag(ctx, truncated_bag, tmp_path, capsys):
    full, cut = truncated_bag
    perception = PerceptionRuntime(ctx.model_path, backend="torch")
    policy = PolicyRuntime(ctx.model_path, backend="torch")
    whole = evaluate_bag(full, perception, policy).report()
    assert whole["repaired"] is False and whole["frames"] == 40
    part = evaluate_bag(cut, perception, policy).report()
    assert part["repaired"] is True and 0 < part["frames"] < 40
    assert part["time_range"]["first_image_stamp_ns"] == whole["time_range"]["first_image_stamp_ns"]
    assert part["time_range"]["last_image_stamp_ns"] < whole["time_range"]["last_image_stamp_ns"]
    with pytest.raises(BagError, match="truncated.*strict"):
        evaluate_bag(cut, perception, policy, EvaluationConfig(strict=True))

    out = tmp_path / "eval"
    assert cli.main(["evaluate-bag", str(cut), "--model", str(ctx.model_path), "--backend", "torch",
                     "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and f"only the {part['frames']} frames" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["repaired"] is True and report["frames"] == part["frames"]
    assert cli.main(["evaluate-bag", str(cut), "--model", str(ctx.model_path), "--backend", "torch",
                     "-o", str(out), "--strict"]) == 2
    assert "strict" in capsys.readouterr().err


def test_cli_bad_input_is_one_line_on_stderr(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("description: x\nscenarios: " + "[" * 5000 + "]" * 5000 + "\n")
    assert cli.main(["collect", "--suite", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.splitlines()) == 1 and len(err) < 1100
    assert cli.main(["record", "--repair", ""]) == 2
    assert "error:" in capsys.readouterr().err
