"""The verified ONNX cache beside a model file (inference/onnx_file.py): the deploy nodes load it without
torch; a cache that does not match the model file is never used."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from liquid_control.inference import export, onnx_file, runtime
from liquid_control.inference.model_source import default_model_path


def cache_metadata(path) -> dict[str, str]:
    import onnxruntime as ort

    return dict(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                .get_modelmeta().custom_metadata_map)


@pytest.mark.parametrize("role", onnx_file.ROLES)
def test_the_shipped_model_ships_its_matching_verified_cache(role):
    """Whoever replaces models/default_cfc.safetensors runs `liquid-control export` on it too."""
    model = default_model_path()
    cached = onnx_file.cache_path(model, role)
    assert cached.is_file(), f"run `liquid-control export {model}`"
    metadata = cache_metadata(cached)
    assert onnx_file.cache_problem(metadata, role, onnx_file.file_sha256(model)) == "", \
        f"{cached} is stale: run `liquid-control export {model}`"
    assert float(metadata["verified_max_diff"]) <= export.VERIFY_TOLERANCE


NODES_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    started = time.perf_counter()
    import rclpy
    from liquid_control.nodes.perception_node import PerceptionNode
    from liquid_control.nodes.policy_node import PolicyNode
    rclpy.init()
    nodes = [PerceptionNode(), PolicyNode()]  # the shipped model, backend auto = onnxruntime
    result = {"torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules,
              "notes": [node.runtime.cache_note for node in nodes],
              "backends": [node.runtime.backend for node in nodes], "seconds": time.perf_counter() - started}
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps(result))
""")


def test_deploy_nodes_on_onnxruntime_never_import_torch(repo_root):
    proc = subprocess.run([sys.executable, "-c", NODES_SCRIPT], cwd=repo_root, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backends"] == ["onnxruntime", "onnxruntime"]
    assert result["notes"] == ["", ""], result["notes"]  # loaded from the cache, nothing exported
    assert not result["torch"] and not result["onnx"], result


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two different tiny model files (seed 0, seed 1)."""
    from node_helpers import save_tiny_model

    folder = tmp_path_factory.mktemp("cache_models")
    return save_tiny_model(folder / "a.safetensors", seed=0), save_tiny_model(folder / "b.safetensors", seed=1)


def torch_command(model_path, features):
    return runtime.PolicyRuntime(model_path, backend="torch").step(features, 1.0)


def test_a_cache_is_used_only_while_it_matches_the_model_file(two_models, tmp_path):
    model_a, model_b = two_models
    model = shutil.copy(model_a, tmp_path / "m.safetensors")
    made = export.export_cache(model, "policy")
    assert made.path == onnx_file.cache_path(model, "policy") and made.max_diff <= export.VERIFY_TOLERANCE
    features = np.linspace(-1.0, 1.0, 8, dtype=np.float32)
    loaded = runtime.PolicyRuntime(model, backend="onnxruntime")
    assert loaded.cache_note == ""
    assert np.abs(loaded.step(features, 1.0) - torch_command(model_a, features)).max() <= 1e-5

    # The model file is replaced (retrained) but the cache is not: the stale cache must not fly model A.
    shutil.copy(model_b, model)
    rebuilt = runtime.PolicyRuntime(model, backend="onnxruntime")
    assert "exported from another model file" in rebuilt.cache_note and "exported and verified" in rebuilt.cache_note
    want_b = torch_command(model_b, features)
    assert np.abs(rebuilt.step(features, 1.0) - want_b).max() <= 1e-5
    assert np.abs(want_b - torch_command(model_a, features)).max() > 1e-3  # the two models do differ
    # ... and the cache now matches model B: the next start only loads.
    assert cache_metadata(onnx_file.cache_path(model, "policy"))["source_sha256"] == onnx_file.file_sha256(model)
    assert runtime.PolicyRuntime(model, backend="onnxruntime").cache_note == ""


def test_a_wrong_cache_is_rebuilt_not_used(two_models, tmp_path):
    from liquid_control.models.model_file import load_model

    model = shutil.copy(two_models[0], tmp_path / "m.safetensors")
    made = export.export_caches(model)
    assert [item.role for item in made] == ["policy", "perception"] and all(item.path for item in made)
    policy_cache = onnx_file.cache_path(model, "policy")
    export.export_bundle(load_model(model).policy, None, tmp_path / "plain")  # `export --out`: no source hash
    damages = {
        "holds a 'perception' model, not a 'policy' model":
            lambda: shutil.copy(onnx_file.cache_path(model, "perception"), policy_cache),
        "was never verified against PyTorch": lambda: shutil.copy(tmp_path / "plain" / "policy.onnx", policy_cache),
        "is unusable": lambda: policy_cache.write_bytes(b"not an onnx file"),
    }
    for reason, damage in damages.items():
        damage()
        rebuilt = runtime.PolicyRuntime(model, backend="onnxruntime")
        assert reason in rebuilt.cache_note, (reason, rebuilt.cache_note)
        assert onnx_file.cache_problem(cache_metadata(policy_cache), "policy", onnx_file.file_sha256(model)) == ""


def test_cache_of_a_role_the_model_file_lacks_is_a_clear_error(tmp_path):
    import torch

    from liquid_control.models.model_file import save_model
    from liquid_control.models.policy import PolicyConfig, PolicyModel

    torch.manual_seed(0)
    policy_only = save_model(tmp_path / "p.safetensors", policy=PolicyModel(PolicyConfig(kind="mlp", feature_size=8)))
    with pytest.raises(ValueError, match="holds no perception model"):
        runtime.PerceptionRuntime(policy_only, backend="onnxruntime")


NO_TORCH_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # a deploy install without torch
    from liquid_control.inference.model_source import load_runtime, runtime_options
    from liquid_control.inference.runtime import PolicyRuntime
    try:
        load_runtime(PolicyRuntime, sys.argv[1], runtime_options("onnxruntime", "", 1))
    except ValueError as error:
        print("refused:", error)
""")


def test_without_torch_a_missing_cache_is_a_clear_refusal(two_models, tmp_path, repo_root):
    model = shutil.copy(two_models[0], tmp_path / "m.safetensors")  # no cache beside it
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, str(model)], cwd=repo_root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "is missing" in proc.stdout and "liquid-control export" in proc.stdout
