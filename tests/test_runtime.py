"""PolicyRuntime / PerceptionRuntime: agree with the PyTorch models, hold state, reject bad input."""
import shutil

import numpy as np
import onnx
import pytest
import torch

from liquid_control.inference import export, runtime
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig, preprocess
from liquid_control.models.policy import PolicyConfig, PolicyModel

PERCEPTION_CONFIG = PerceptionConfig(height=48, width=64, conv_channels=(8, 16), keypoints=4, feature_size=32)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(3)
    model = PolicyModel(PolicyConfig()).eval()  # the default: wired NCP CfC, ~20K parameters
    rng = np.random.default_rng(3)
    model.set_normalization(rng.normal(size=32), rng.uniform(0.5, 2.0, 32))
    model.set_command_scale([2.0, 2.0, 1.0, 1.5])
    return model


@pytest.fixture(scope="module")
def policy_onnx(policy, tmp_path_factory):
    return export.export_policy(policy, tmp_path_factory.mktemp("policy") / "policy.onnx")


@pytest.fixture(scope="module")
def perception():
    torch.manual_seed(4)
    return FeatureExtractor(PERCEPTION_CONFIG).eval()


@pytest.fixture(scope="module")
def perception_onnx(perception, tmp_path_factory):
    return export.export_perception(perception, tmp_path_factory.mktemp("perception") / "perception.onnx")


def _torch_rollout(model, features, timespans):
    state = model.initial_state(1)
    commands, states = [], []
    with torch.inference_mode():
        for f, t in zip(features, timespans):
            command, state = model.step(torch.from_numpy(f)[None], state, torch.tensor([[t]], dtype=torch.float32))
            commands.append(command[0].numpy())
            states.append(state[0].numpy())
    return np.array(commands), np.array(states)


def _sequence(steps=60, feature_size=32, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(steps, feature_size)).astype(np.float32)
    # Irregular: jitter around one frame, plus dropped frames (2, 3 periods) and a late burst.
    timespans = rng.choice([0.6, 0.9, 1.0, 1.1, 2.0, 3.0], size=steps).astype(np.float32)
    return features, timespans


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_policy_runtime_matches_torch_over_irregular_sequence(backend, policy, policy_onnx):
    source = policy_onnx if backend == "onnxruntime" else policy
    rt = runtime.PolicyRuntime(source, backend=backend)
    assert rt.backend == backend
    features, timespans = _sequence()
    want_commands, want_states = _torch_rollout(policy, features, timespans)
    got = np.array([rt.step(f, float(t)) for f, t in zip(features, timespans)])
    assert np.abs(got - want_commands).max() <= 1e-5
    assert np.abs(rt.state - want_states[-1]).max() <= 1e-5
    assert np.abs(want_commands).max() > 0.05  # a real signal, not all zeros


def test_policy_runtime_from_in_memory_model_uses_onnxruntime(policy):
    """backend auto + a PyTorch model: exported in memory and run by onnxruntime."""
    small = PolicyModel(PolicyConfig(kind="gru", feature_size=6, rnn_hidden_size=8)).eval()
    rt = runtime.PolicyRuntime(small)
    assert rt.backend == "onnxruntime" and rt.providers == ["CPUExecutionProvider"]
    features, timespans = _sequence(20, 6, seed=1)
    want, _ = _torch_rollout(small, features, timespans)
    got = np.array([rt.step(f, float(t)) for f, t in zip(features, timespans)])
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_reset_returns_to_the_initial_state(backend, policy, policy_onnx):
    rt = runtime.PolicyRuntime(policy_onnx if backend == "onnxruntime" else policy, backend=backend)
    features, timespans = _sequence(10, seed=2)
    first = rt.step(features[0], 1.0)
    for f, t in zip(features[1:], timespans[1:]):
        rt.step(f, float(t))
    assert np.abs(rt.state).max() > 1e-3
    rt.reset()
    assert np.array_equal(rt.state, np.zeros(policy.state_size, np.float32))
    assert np.array_equal(rt.step(features[0], 1.0), first)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_bad_inputs_raise_value_error_and_keep_the_state(backend, policy, policy_onnx):
    rt = runtime.PolicyRuntime(policy_onnx if backend == "onnxruntime" else policy, backend=backend)
    good = np.zeros(32, np.float32)
    rt.step(np.ones(32), 1.0)  # float64 input is accepted (cast)
    state = rt.state
    nan = good.copy()
    nan[5] = np.nan
    inf = good.copy()
    inf[0] = np.inf
    cases = [
        (np.zeros(31, np.float32), 1.0, r"shape \(32,\)"),
        (np.zeros((1, 32), np.float32), 1.0, r"shape \(32,\)"),
        (nan, 1.0, r"NaN/inf.*\[5\]"),
        (inf, 1.0, "NaN/inf"),
        (np.full(32, 1e300), 1.0, "NaN/inf"),  # overflows float32
        (np.array(["a"] * 32), 1.0, "numeric"),
        (good, -0.5, "timespan"),
        (good, float("nan"), "timespan"),
        (good, float("inf"), "timespan"),
        (good, "soon", "timespan"),
    ]
    for features, timespan, message in cases:
        with pytest.raises(ValueError, match=message):
            rt.step(features, timespan)
        assert np.array_equal(rt.state, state)


def test_non_finite_model_output_raises_and_keeps_the_state():
    model = PolicyModel(PolicyConfig(kind="mlp", feature_size=4, mlp_hidden_sizes=(8,))).eval()
    rt = runtime.PolicyRuntime(model, backend="torch")
    rt.step(np.ones(4), 1.0)
    state = rt.state
    with torch.no_grad():
        model.readout.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite command"):
        rt.step(np.ones(4), 1.0)
    assert np.array_equal(rt.state, state)


def test_provider_selection_prefers_tensorrt_then_cuda_and_falls_back_to_cpu():
    all_three = ["AzureExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert runtime.select_providers(available=all_three) == [
        ("TensorrtExecutionProvider", {}), ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    assert runtime.select_providers(available=all_three, fp16=True)[0] == (
        "TensorrtExecutionProvider", {"trt_fp16_enable": "True"})
    assert runtime.select_providers(available=["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        ("CPUExecutionProvider", {})]
    assert runtime.select_providers(["CUDAExecutionProvider"], available=all_three) == [
        ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    with pytest.raises(ValueError, match="TensorrtExecutionProvider.*not available"):
        runtime.select_providers(["TensorrtExecutionProvider"], available=["CPUExecutionProvider"])
    # This machine's onnxruntime build: CPU only, whatever is asked for by default.
    assert runtime.select_providers(fp16=True) == [("CPUExecutionProvider", {})]


def test_options_are_validated():
    with pytest.raises(ValueError, match="backend"):
        runtime.RuntimeOptions(backend="cuda")
    with pytest.raises(ValueError, match="threads"):
        runtime.RuntimeOptions(threads=0)


def test_onnx_loading_errors_are_clear(policy_onnx, perception_onnx, tmp_path):
    with pytest.raises(export.ExportError, match="'perception' model, not a 'policy'"):
        runtime.PolicyRuntime(perception_onnx)
    with pytest.raises(export.ExportError, match="'policy' model, not a 'perception'"):
        runtime.PerceptionRuntime(policy_onnx)
    with pytest.raises(ValueError, match="torch backend needs a model file"):
        runtime.PolicyRuntime(policy_onnx, backend="torch")
    with pytest.raises(export.ExportError, match="no such ONNX file"):
        runtime.PolicyRuntime(tmp_path / "nothing.onnx")
    # Metadata that disagrees with the graph (a hand-edited or mixed-up file).
    model = onnx.load(str(policy_onnx))
    for entry in model.metadata_props:
        if entry.key == "feature_size":
            entry.value = "16"
    onnx.save(model, str(tmp_path / "mismatch.onnx"))
    with pytest.raises(export.ExportError, match=r"input 'features' has shape .*expected \[batch, 16\]"):
        runtime.PolicyRuntime(tmp_path / "mismatch.onnx")
    shutil.copy(policy_onnx, tmp_path / "ok.onnx")
    assert runtime.PolicyRuntime(tmp_path / "ok.onnx").feature_size == 32


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_perception_runtime_matches_torch_on_any_image_size(backend, perception, perception_onnx):
    rt = runtime.PerceptionRuntime(perception_onnx if backend == "onnxruntime" else perception, backend=backend)
    assert rt.feature_size == 32 and rt.config == PERCEPTION_CONFIG
    rng = np.random.default_rng(5)
    for shape, encoding in (((48, 64, 3), "rgb8"), ((120, 160, 3), "bgr8"), ((96, 128), "mono8")):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        with torch.inference_mode():
            want = perception(torch.from_numpy(preprocess(image, encoding, PERCEPTION_CONFIG))[None])[0].numpy()
        got = rt.features(image, encoding)
        assert got.shape == (32,)
        assert np.abs(got - want).max() <= 1e-5
    with pytest.raises(ValueError, match="encoding"):
        rt.features(np.zeros((48, 64, 3), np.uint8), "yuv422")
    with pytest.raises(ValueError, match="shape"):
        rt.features(np.zeros((48, 64, 4), np.uint8), "rgb8")


def test_check_pair_rejects_mismatched_feature_sizes(perception_onnx):
    perception_rt = runtime.PerceptionRuntime(perception_onnx)
    small_policy = runtime.PolicyRuntime(PolicyModel(PolicyConfig(kind="mlp", feature_size=8)), backend="torch")
    with pytest.raises(ValueError, match="outputs 32 features but the policy .* expects 8"):
        runtime.check_pair(perception_rt, small_policy)


def test_runtimes_load_a_model_file(policy, perception, tmp_path):
    from liquid_control.models.model_file import save_model

    path = save_model(tmp_path / "m.safetensors", policy=policy, perception=perception)
    policy_rt = runtime.PolicyRuntime(path, backend="torch")
    features, timespans = _sequence(15, seed=6)
    want, _ = _torch_rollout(policy, features, timespans)
    got = np.array([policy_rt.step(f, float(t)) for f, t in zip(features, timespans)])
    assert np.abs(got - want).max() <= 1e-6
    assert policy_rt.frame_period_s == policy.config.frame_period_s
    perception_rt = runtime.PerceptionRuntime(path, backend="torch")
    runtime.check_pair(perception_rt, policy_rt)
    policy_only = save_model(tmp_path / "p.safetensors", policy=policy)
    with pytest.raises(ValueError, match="holds no perception model"):
        runtime.PerceptionRuntime(policy_only, backend="torch")
