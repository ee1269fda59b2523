"""ONNX export of policies (every kind) and perception: numerics, metadata, error cases."""
import copy
import json

import numpy as np
import onnx
import pytest
import torch

from liquid_control.inference import export
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
from liquid_control.models.policy import PolicyConfig, PolicyModel, count_effective, count_trainable

# Every kind and CfC variant, small where size does not matter (export time is mostly fixed cost).
POLICY_CASES = {
    "cfc_ncp_default": PolicyConfig(),
    "cfc_ncp_no_gate": PolicyConfig(cfc_mode="no_gate", feature_size=8, cfc_units=20, cfc_motor_neurons=4),
    "cfc_ncp_pure": PolicyConfig(cfc_mode="pure", feature_size=8, cfc_units=20, cfc_motor_neurons=4),
    "cfc_dense_default": PolicyConfig(cfc_wiring="dense", feature_size=8, cfc_units=12, cfc_backbone_units=16),
    "cfc_dense_no_backbone": PolicyConfig(cfc_wiring="dense", feature_size=8, cfc_units=12, cfc_backbone_layers=0),
    "cfc_dense_pure": PolicyConfig(cfc_wiring="dense", cfc_mode="pure", feature_size=8, cfc_units=12),
    "lstm": PolicyConfig(kind="lstm", feature_size=8, rnn_hidden_size=16),
    "gru": PolicyConfig(kind="gru", feature_size=8, rnn_hidden_size=16),
    "gru_time_input": PolicyConfig(kind="gru", feature_size=8, rnn_hidden_size=16, rnn_time_input=True),
    "mlp": PolicyConfig(kind="mlp", feature_size=8, mlp_hidden_sizes=(16, 16)),
}


def _policy(config: PolicyConfig, seed: int = 0) -> PolicyModel:
    torch.manual_seed(seed)
    model = PolicyModel(config).eval()
    # Non-trivial normalisation and scaling: the export must carry these buffers.
    rng = np.random.default_rng(seed)
    model.set_normalization(rng.normal(size=config.feature_size), rng.uniform(0.5, 2.0, config.feature_size))
    model.set_command_scale([2.0, 1.5, 1.0, 0.8])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model, ONNX path), each exported once per module (an export takes ~1-3 s)."""
    folder = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(name):
        if name not in cache:
            model = _policy(POLICY_CASES[name])
            cache[name] = (model, export.export_policy(model, folder / f"{name}.onnx"))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(POLICY_CASES))
def test_policy_export_matches_torch_for_every_kind(name, exported):
    model, path = exported(name)
    diff = export.verify_policy(model, path)  # batches 1 and 3 (dynamic batch)
    assert diff <= 1e-5
    metadata = export.read_metadata(path)
    assert metadata["role"] == "policy"
    assert int(metadata["feature_size"]) == model.config.feature_size
    assert int(metadata["state_size"]) == model.state_size
    assert int(metadata["trainable_parameters"]) == count_trainable(model)
    assert int(metadata["effective_parameters"]) == count_effective(model)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["features", "state", "timespan"]
    assert [o.name for o in graph.output] == ["command", "new_state"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis


def test_policy_export_is_sensitive_to_timespan_for_cfc_and_time_aware_baselines_only(exported):
    """The exported CfC and time-aware GRU use the timespan input; the LSTM baseline ignores it (but keeps
    the input)."""
    import onnxruntime as ort

    for name, should_depend in (("cfc_ncp_default", True), ("gru_time_input", True), ("lstm", False)):
        model, path = exported(name)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        features = np.ones((1, model.config.feature_size), np.float32)
        state = np.full((1, model.state_size), 0.3, np.float32)
        out = [session.run(None, {"features": features, "state": state, "timespan": np.full((1, 1), t, np.float32)})
               for t in (0.5, 2.0)]
        changed = np.abs(out[0][1] - out[1][1]).max() > 1e-4
        assert changed == should_depend, name


def test_verify_detects_a_graph_that_differs_from_the_model(exported):
    model, path = exported("gru")
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.readout.bias.add_(1e-3)  # the file no longer matches the model
    with pytest.raises(export.ExportError, match="differs from PyTorch"):
        export.verify_policy(model, path)
    # readout bias +1e-3, times the largest command scale (2.0)
    assert export.verify_policy(model, path, tolerance=None) == pytest.approx(2e-3, rel=1e-2)


def test_policy_metadata_round_trips_the_config(exported):
    model, path = exported("cfc_ncp_default")
    metadata = export.read_metadata(path)
    rebuilt = PolicyConfig.from_dict(json.loads(metadata["policy_config"]))
    assert rebuilt.to_dict() == model.config.to_dict()  # wiring included: the same network
    assert float(metadata["frame_period_s"]) == model.config.frame_period_s
    assert json.loads(metadata["command_names"]) == ["vx", "vy", "vz", "yaw_rate"]
    assert len(json.loads(metadata["feature_names"])) == model.config.feature_size
    assert json.loads(metadata["initial_state"]) == [0.0] * model.state_size
    assert metadata["format_version"] == str(export.FORMAT_VERSION)


@pytest.mark.parametrize("input_norm, keypoint_strength", [("none", False), ("channel", False), ("image", True)])
def test_perception_export_matches_torch_and_round_trips_config(tmp_path, input_norm, keypoint_strength):
    config = PerceptionConfig(height=48, width=64, conv_channels=(8, 16), keypoints=4, feature_size=12,
                              input_norm=input_norm, keypoint_strength=keypoint_strength)
    torch.manual_seed(1)
    model = FeatureExtractor(config).eval()
    path = export.export_perception(model, tmp_path / "perception.onnx")
    assert export.verify_perception(model, path) <= 1e-5
    metadata = export.read_metadata(path)
    assert metadata["role"] == "perception"
    assert PerceptionConfig.from_dict(json.loads(metadata["perception_config"])) == config
    assert int(metadata["trainable_parameters"]) == count_trainable(model)
    graph = onnx.load(str(path)).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 48, 64]


def test_read_metadata_rejects_foreign_missing_and_future_files(tmp_path):
    with pytest.raises(export.ExportError, match="no such ONNX file"):
        export.read_metadata(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(export.ExportError, match="not a readable ONNX file"):
        export.read_metadata(garbage)
    # A valid ONNX file from elsewhere (no liquid_control metadata).
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    foreign = onnx.helper.make_model(graph)
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(export.ExportError, match="not exported by liquid_control"):
        export.read_metadata(tmp_path / "foreign.onnx")
    for key, value_ in (("format", "liquid_control"), ("format_version", "999")):
        entry = foreign.metadata_props.add()
        entry.key, entry.value = key, value_
    onnx.save(foreign, str(tmp_path / "future.onnx"))
    with pytest.raises(export.ExportError, match="version '999' is not supported"):
        export.read_metadata(tmp_path / "future.onnx")


@pytest.mark.parametrize("name", ["cfc_ncp_default", "cfc_ncp_pure", "cfc_dense_no_backbone"])
def test_folded_cfc_graph_equals_the_plain_export_with_fewer_nodes(name, exported, tmp_path):
    """CfC policies without backbone export in the folded deploy form (normalisation, masks and
    command scale folded into weights); it computes what the plain PolicyModel.step graph does."""
    import onnxruntime as ort

    model, folded_path = exported(name)
    plain_path = export.export_policy(model, tmp_path / "plain.onnx", fold=False)
    assert export.read_metadata(folded_path)["graph_form"] == "folded"
    assert export.read_metadata(plain_path)["graph_form"] == "plain"
    assert export.verify_policy(model, plain_path) <= 1e-5
    nodes = {path: len(onnx.load(str(path)).graph.node) for path in (folded_path, plain_path)}
    assert nodes[folded_path] < nodes[plain_path]
    rng = np.random.default_rng(9)
    feed = {"features": rng.normal(size=(4, model.config.feature_size)).astype(np.float32) * 3,
            "state": rng.uniform(-1, 1, (4, model.state_size)).astype(np.float32),
            "timespan": rng.uniform(0.1, 3.0, (4, 1)).astype(np.float32)}
    folded, plain = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)
                     for p in (folded_path, plain_path))
    for a, b in zip(folded, plain):
        assert np.abs(a - b).max() <= 1e-5


def test_discrete_baselines_and_backbone_cfc_export_plain(exported):
    for name in ("lstm", "cfc_dense_default"):
        assert export.read_metadata(exported(name)[1])["graph_form"] == "plain"
