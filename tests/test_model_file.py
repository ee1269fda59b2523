"""Model file: exact round trips, and a clear ModelFileError for each kind of bad file."""
import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from liquid_control.models import (FeatureExtractor, ModelFileError, PerceptionConfig, PolicyConfig, PolicyModel,
                                   load_model, policy_for_budget, save_model)
from liquid_control.models.model_file import DIGEST_KEY, FORMAT, content_digest


def trained_like_policy(config=None, seed=0):
    torch.manual_seed(seed)
    policy = PolicyModel(config).eval()
    policy.set_normalization(torch.randn(policy.feature_size), 0.5 + torch.rand(policy.feature_size))
    policy.set_command_scale([1.5, 1.0, 0.5, 2.0])
    return policy


def small_perception():
    torch.manual_seed(1)
    return FeatureExtractor(PerceptionConfig(height=48, width=64, conv_channels=(8, 16), keypoints=4)).eval()


def rewrite(src, dst, header_update=None, drop=None, tensor_update=None):
    """Copy a model file, changing header entries / tensors, to make bad files.

    The copy gets a matching content_sha256 (as a tool writing a consistent but wrong file would), so
    the structural checks are what is tested; test_bad_input.py covers the checksum itself.
    """
    with safe_open(str(src), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for key, value in (header_update or {}).items():
        header[key] = value
    if drop:
        del tensors[drop]
    tensors.update(tensor_update or {})
    if DIGEST_KEY not in (header_update or {}):
        header[DIGEST_KEY] = json.dumps(content_digest(tensors, header))
    save_file(tensors, str(dst), metadata=header)
    return dst


def test_round_trip_policy_and_perception(tmp_path):
    policy, perception = trained_like_policy(), small_perception()
    path = save_model(tmp_path / "m.safetensors", policy=policy, perception=perception,
                      training={"dataset": "sim-train", "epochs": 3, "val_loss": 0.12})
    bundle = load_model(path)
    assert bundle.policy_config == policy.config and bundle.perception_config == perception.config
    assert bundle.policy.wiring == policy.wiring
    assert bundle.training == {"dataset": "sim-train", "epochs": 3, "val_loss": 0.12}
    assert bundle.frame_period_s == pytest.approx(1 / 30)
    assert bundle.metadata["format"] == FORMAT and bundle.metadata["format_version"] == 1
    assert bundle.metadata["output_scaling"]["scale"] == [1.5, 1.0, 0.5, 2.0]
    assert bundle.metadata["output_scaling"]["axes"] == ["vx", "vy", "vz", "yaw_rate"]
    assert bundle.created.endswith("+00:00")
    assert not bundle.policy.training and not bundle.perception.training
    images = torch.rand(2, 3, 48, 64)
    features = torch.randn(2, 5, 32)
    ts = 0.5 + torch.rand(2, 5, 1)
    with torch.no_grad():
        assert torch.equal(bundle.perception(images), perception(images))
        assert torch.equal(bundle.policy(features, ts)[0], policy(features, ts)[0])
    # Only safetensors content: the file starts with its 8-byte header length, then JSON.
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header_len])["__metadata__"]["format"] == json.dumps(FORMAT)


@pytest.mark.parametrize("config", [
    policy_for_budget("lstm", 20_000), policy_for_budget("gru", 20_000), policy_for_budget("mlp", 20_000),
    PolicyConfig(cfc_wiring="dense", cfc_mode="pure", cfc_units=24),
    PolicyConfig(cfc_mode="no_gate", cfc_units=30, cfc_motor_neurons=6, feature_size=12),
], ids=["lstm", "gru", "mlp", "cfc-dense-pure", "cfc-ncp-no_gate"])
def test_round_trip_every_policy_kind(tmp_path, config):
    policy = trained_like_policy(config)
    bundle = load_model(save_model(tmp_path / "p.safetensors", policy=policy))
    assert bundle.perception is None and bundle.policy_config == policy.config
    features = torch.randn(3, 4, config.feature_size)
    with torch.no_grad():
        assert torch.equal(bundle.policy(features)[0], policy(features)[0])


def test_perception_only(tmp_path):
    perception = small_perception()
    bundle = load_model(save_model(tmp_path / "f.safetensors", perception=perception))
    assert bundle.policy is None and bundle.frame_period_s is None
    images = torch.rand(1, 3, 48, 64)
    assert torch.equal(bundle.perception(images), perception(images))


def test_save_errors(tmp_path):
    policy = trained_like_policy()
    with pytest.raises(ModelFileError, match=r"m\.pt.*must end in \.safetensors"):
        save_model(tmp_path / "m.pt", policy=policy)
    with pytest.raises(ModelFileError, match="nothing to save"):
        save_model(tmp_path / "m.safetensors")
    mismatched = FeatureExtractor(PerceptionConfig(feature_size=16))
    with pytest.raises(ModelFileError, match="16 features"):
        save_model(tmp_path / "m.safetensors", policy=policy, perception=mismatched)
    with pytest.raises(ModelFileError, match="JSON"):
        save_model(tmp_path / "m.safetensors", policy=policy, training={"when": object()})
    assert list(tmp_path.iterdir()) == []  # no half-written files left behind


@pytest.fixture
def good_file(tmp_path):
    return save_model(tmp_path / "good.safetensors", policy=trained_like_policy(), perception=small_perception())


def expect_error(path, pattern):
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(pattern, message), message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "absent.safetensors", "no such file")


def test_not_safetensors(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"PK\x03\x04 this is a zip, or a pickle, or anything else" * 10)
    expect_error(path, "not a readable safetensors file")


def test_truncated(tmp_path, good_file):
    data = good_file.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "not a readable safetensors file")


def test_plain_safetensors_without_our_header(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    expect_error(path, "no 'format' entry")


def test_wrong_format_tag(tmp_path, good_file):
    expect_error(rewrite(good_file, tmp_path / "b.safetensors", {"format": json.dumps("other.model")}),
                 "format is 'other.model'")


def test_newer_format_version(tmp_path, good_file):
    expect_error(rewrite(good_file, tmp_path / "b.safetensors", {"format_version": "2"}),
                 "format_version 2 is newer")


def test_config_weights_shape_mismatch(tmp_path):
    path = save_model(tmp_path / "lstm.safetensors", policy=trained_like_policy(policy_for_budget("lstm", 20_000)))
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["policy_config"])
    config["rnn_hidden_size"] += 1
    expect_error(rewrite(path, tmp_path / "b.safetensors", {"policy_config": json.dumps(config)}),
                 r"policy\.core\.cell\.\w+ has shape .* but the config needs")


def test_missing_tensor(tmp_path, good_file):
    expect_error(rewrite(good_file, tmp_path / "b.safetensors", drop="policy.readout.bias"),
                 r"missing tensors .*policy\.readout\.bias")
    expect_error(rewrite(good_file, tmp_path / "c.safetensors", drop="perception.head.weight"),
                 r"missing tensors .*perception\.head\.weight")


def test_invalid_config(tmp_path, good_file):
    with safe_open(str(good_file), framework="pt") as handle:
        config = json.loads(handle.metadata()["policy_config"])
    config["kind"] = "transformer"
    expect_error(rewrite(good_file, tmp_path / "b.safetensors", {"policy_config": json.dumps(config)}),
                 "invalid policy_config.*kind")
    expect_error(rewrite(good_file, tmp_path / "c.safetensors", {"policy_config": "{not json"}),
                 "'policy_config' is not valid JSON")


def test_mask_disagreeing_with_wiring(tmp_path, good_file):
    with safe_open(str(good_file), framework="pt") as handle:
        mask = handle.get_tensor("policy.core.cfc.layers.0.head_mask")
    expect_error(rewrite(good_file, tmp_path / "b.safetensors",
                         tensor_update={"policy.core.cfc.layers.0.head_mask": torch.ones_like(mask)}),
                 "disagrees with the wiring")


def test_nan_weights_and_stray_tensors(tmp_path, good_file):
    with safe_open(str(good_file), framework="pt") as handle:
        bias = handle.get_tensor("policy.readout.bias")
    expect_error(rewrite(good_file, tmp_path / "b.safetensors",
                         tensor_update={"policy.readout.bias": torch.full_like(bias, float("nan"))}),
                 "NaN")
    expect_error(rewrite(good_file, tmp_path / "c.safetensors", tensor_update={"optimizer.step": torch.zeros(1)}),
                 r"unexpected tensors.*optimizer\.step")
