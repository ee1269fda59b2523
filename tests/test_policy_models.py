"""PolicyModel (common interface of every kind, budgets, normalisation, config round trip) and
perception (FeatureExtractor budget, preprocess)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from liquid_control.models.perception import (FeatureExtractor, PerceptionConfig, count_macs, normalise_input,
                                              preprocess)

from liquid_control.models.policy import (KINDS, PolicyConfig, PolicyModel, count_effective, count_trainable,
                                          expected_trainable, policy_for_budget)


def test_default_policy_is_a_wired_cfc_within_budget():
    model = PolicyModel()
    assert model.config.kind == "cfc" and model.config.cfc_wiring == "ncp"
    trainable = count_trainable(model)
    assert 19_000 <= trainable <= 21_000
    assert trainable == expected_trainable(model.config)
    # Hand count: layers [39, 25, 16] over 32 features, 4 heads each, readout 16 -> 4.
    assert trainable == (4 * 39 * (32 + 39 + 1) + 4 * 25 * (39 + 25 + 1) + 4 * 16 * (25 + 16 + 1) + 17 * 4)
    masked_out = sum(int((cell.head_mask == 0).sum()) for cell in model.core.cfc.layers)
    assert masked_out > 0 and count_effective(model) == trainable - masked_out
    assert model.state_size == 80 and model.frame_period_s == pytest.approx(1 / 30)


@pytest.mark.parametrize("kind", ["lstm", "gru", "mlp"])
@pytest.mark.parametrize("budget", [20_000, 50_000])
def test_baselines_land_within_five_percent(kind, budget):
    config = policy_for_budget(kind, budget, feature_size=32)
    model = PolicyModel(config)
    assert abs(count_trainable(model) - budget) <= 0.05 * budget
    assert count_trainable(model) == expected_trainable(config) == count_effective(model)


@pytest.mark.parametrize("wiring", ["ncp", "dense"])
def test_cfc_budget_sizing(wiring):
    config = policy_for_budget("cfc", 20_000, feature_size=32, cfc_wiring=wiring)
    assert abs(count_trainable(PolicyModel(config)) - 20_000) <= 0.05 * 20_000


def test_budget_errors():
    with pytest.raises(ValueError, match="within"):
        policy_for_budget("lstm", 50, feature_size=32)
    with pytest.raises(ValueError, match="kind"):
        policy_for_budget("transformer", 20_000)


@pytest.mark.parametrize("kind,time_input", [(k, False) for k in KINDS] + [("lstm", True), ("gru", True)])
def test_common_interface(kind, time_input):
    torch.manual_seed(0)
    overrides = {"rnn_time_input": True} if time_input else {}
    model = PolicyModel(policy_for_budget(kind, 20_000, **overrides)).eval()
    assert abs(count_trainable(model) - 20_000) <= 1_000
    assert count_trainable(model) == expected_trainable(model.config)
    expected_state = {"cfc": model.config.cfc_units, "lstm": 2 * model.config.rnn_hidden_size,
                      "gru": model.config.rnn_hidden_size, "mlp": 1}[kind]
    assert model.state_size == expected_state
    state0 = model.initial_state(3)
    assert state0.shape == (3, expected_state) and torch.all(state0 == 0)
    features = torch.randn(3, 6, 32)
    timespans = 0.5 + torch.rand(3, 6, 1)
    commands, final = model(features, timespans)
    assert commands.shape == (3, 6, 4) and final.shape == (3, expected_state)
    state = state0
    for k in range(6):
        command, state = model.step(features[:, k], state, timespans[:, k])
        assert torch.allclose(command, commands[:, k], atol=1e-6)
    assert torch.allclose(state, final, atol=1e-6)
    # Timespans change the CfC's and the time-aware baselines' answer; the others ignore them (documented).
    other, _ = model(features, 2 * timespans)
    if kind == "cfc" or time_input:
        assert (other - commands).abs().max() > 1e-4
    else:
        assert torch.equal(other, commands)
    if kind == "mlp":  # dummy state passes through unchanged
        assert torch.equal(final, state0)


@pytest.mark.parametrize("kind", KINDS)
def test_torchscript_step_matches_eager(kind):
    torch.manual_seed(2)
    model = PolicyModel(policy_for_budget(kind, 20_000)).eval()
    scripted = torch.jit.script(model)
    features, state = torch.randn(2, 32), torch.randn(2, model.state_size)
    timespan = torch.tensor([[1.0], [2.5]])
    for got, want in zip(scripted.step(features, state, timespan), model.step(features, state, timespan)):
        assert torch.allclose(got, want, atol=1e-6)


def test_normalization_and_command_scale_live_inside_the_model():
    torch.manual_seed(1)
    plain = PolicyModel().eval()
    scaled = PolicyModel(plain.config).eval()
    scaled.load_state_dict(plain.state_dict())
    mean, std = torch.randn(32), 0.5 + torch.rand(32)
    scale = torch.tensor([2.0, 1.5, 0.5, 3.0])
    scaled.set_normalization(mean, std)
    scaled.set_command_scale(scale)
    features = torch.randn(2, 5, 32)
    expected, _ = plain((features - mean) / std)
    got, _ = scaled(features)
    assert torch.allclose(got, expected * scale, atol=1e-5)
    state = scaled.state_dict()
    assert torch.equal(state["feature_mean"], mean) and torch.equal(state["command_scale"], scale)
    with pytest.raises(ValueError, match="std must be > 0"):
        scaled.set_normalization(mean, torch.zeros(32))
    with pytest.raises(ValueError, match="shape"):
        scaled.set_normalization(torch.zeros(31), torch.ones(31))
    with pytest.raises(ValueError, match="NaN"):
        scaled.set_normalization(torch.full((32,), float("nan")), torch.ones(32))
    with pytest.raises(ValueError, match="command scale"):
        scaled.set_command_scale([1.0, 1.0, -1.0, 1.0])


def test_config_round_trip_rebuilds_the_same_network():
    model = PolicyModel(PolicyConfig(cfc_seed=5)).eval()
    data = json.loads(json.dumps(model.config.to_dict()))
    # The stored wiring wins over the seed: a changed seed must not change the network.
    data["cfc_seed"] = 6
    rebuilt = PolicyModel(PolicyConfig.from_dict(data)).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.wiring == model.wiring
    features = torch.randn(1, 4, 32)
    assert torch.equal(rebuilt(features)[0], model(features)[0])
    assert PolicyModel(PolicyConfig(cfc_seed=6)).wiring != model.wiring


def test_bad_configs_and_inputs_raise():
    with pytest.raises(ValueError, match="kind"):
        PolicyConfig(kind="rnn")
    with pytest.raises(ValueError, match="cfc_mode"):
        PolicyConfig(cfc_mode="fast")
    with pytest.raises(ValueError, match="rnn_time_input"):
        PolicyConfig(kind="cfc", rnn_time_input=True)
    with pytest.raises(ValueError, match="unknown key"):
        PolicyConfig.from_dict({"kind": "cfc", "colour": "red"})
    with pytest.raises(ValueError, match="feature_size"):
        PolicyModel(dataclasses.replace(PolicyModel().config, feature_size=16))
    with pytest.raises(ValueError, match="disagrees"):  # stored wiring vs the size fields
        PolicyModel(dataclasses.replace(PolicyModel().config, cfc_units=60))
    model = PolicyModel()
    with pytest.raises(ValueError, match="features"):
        model(torch.randn(2, 3, 31))
    with pytest.raises(ValueError, match="timespans"):
        model(torch.randn(2, 3, 32), torch.ones(2, 2, 1))
    with pytest.raises(ValueError, match="state"):
        model(torch.randn(2, 3, 32), state=torch.zeros(2, 3))


# --------------------------------------------------------------------------- perception


def test_feature_extractor_budget_and_shapes():
    config = PerceptionConfig()
    assert (config.height, config.width) == (96, 128)
    net = FeatureExtractor(config).eval()
    assert sum(p.numel() for p in net.parameters()) <= 300_000
    assert count_macs(config) <= 10_000_000
    features = net(torch.rand(2, 3, 96, 128))
    assert features.shape == (2, 32) and torch.isfinite(features).all()
    with pytest.raises(ValueError, match="expected images"):
        net(torch.rand(2, 3, 128, 96))
    with pytest.raises(ValueError, match="too small"):
        PerceptionConfig(height=8, width=8)


def test_feature_extractor_sees_where_things_are():
    """A bright blob on the left vs the right of the image gives different features."""
    torch.manual_seed(0)
    net = FeatureExtractor().eval()
    left, right = torch.zeros(1, 3, 96, 128), torch.zeros(1, 3, 96, 128)
    left[..., 40:56, 10:26] = 1.0
    right[..., 40:56, 102:118] = 1.0
    assert (net(left) - net(right)).abs().max() > 1e-3


def test_keypoint_strength_tells_a_strong_match_from_the_best_of_weak_ones():
    """Without the peak logit, a spatial softmax gives the same keypoint for a bright blob and a faint one
    at the same place (the softmax is shift-invariant in its logits); with it, the head sees the difference."""
    config = PerceptionConfig(height=24, width=32, conv_channels=(4,), keypoints=1, feature_size=3)
    assert config.head_inputs() == 2 + 4 and count_macs(config) > 0
    strong = dataclasses.replace(config, keypoint_strength=True)
    assert strong.head_inputs() == 3 + 4
    assert count_macs(strong) - count_macs(config) == config.feature_size  # one more head input per keypoint
    assert PerceptionConfig.from_dict({"height": 24, "width": 32}).keypoint_strength is False  # older files
    bright, faint = torch.zeros(1, 3, 24, 32), torch.zeros(1, 3, 24, 32)
    bright[..., 8:12, 20:24] = 1.0
    faint[..., 8:12, 20:24] = 0.7  # (0.7 - 0.5) * 4 per channel after the fixed centring: still positive
    for cfg, differs in ((config, False), (strong, True)):
        torch.manual_seed(0)
        net = FeatureExtractor(cfg).eval()
        with torch.no_grad():
            net.trunk[0].weight.zero_()
            net.trunk[0].weight[:, :, 1, 1] = 1.0  # every trunk channel = the pixel's R + G + B
            net.trunk[0].bias.zero_()
            net.keypoint_maps.weight.fill_(10.0)
            net.head.weight.zero_()
            net.head.bias.zero_()
            keypoint_and_strength = slice(0, cfg.head_inputs() - 4)  # everything but the pooled channels
            net.head.weight[:, keypoint_and_strength] = torch.eye(3)[:, :cfg.head_inputs() - 4]
            gap = (net(bright) - net(faint)).abs().max().item()
        assert (gap > 1.0) == differs, (cfg.keypoint_strength, gap)


def test_input_norm_cancels_what_it_promises_and_nothing_more():
    torch.manual_seed(0)
    scene = torch.rand(2, 3, 24, 32) * 0.6 + 0.2
    # "none" is the fixed centring of the models shipped before round 6 (their files carry no input_norm).
    assert torch.equal(normalise_input(scene, "none"), (scene - 0.5) * 4.0)
    assert PerceptionConfig.from_dict({"height": 24, "width": 32}).input_norm == "none"
    # Dim light with some ambient: a gain and an offset on every channel. Cancelled up to the std floor
    # (NORM_STD_FLOOR = 0.02 against this frame's std of ~0.1: a 2% change of scale).
    dim = scene * 0.6 + 0.05
    assert torch.allclose(normalise_input(dim, "image"), normalise_input(scene, "image"), rtol=0.03, atol=1e-3)
    assert not torch.allclose(normalise_input(dim, "none"), normalise_input(scene, "none"), atol=0.1)
    cast = scene * 0.6 + torch.tensor([0.2, 0.05, 0.0]).view(1, 3, 1, 1)  # warm colour cast, darker
    assert torch.allclose(normalise_input(cast, "channel"), normalise_input(scene, "channel"), rtol=0.03,
                          atol=1e-3)
    # "image" keeps colour: a cast changes its output, so a red target stays red against a grey scene.
    assert not torch.allclose(normalise_input(cast, "image"), normalise_input(scene, "image"), atol=0.05)
    for mode in ("image", "channel"):
        out = normalise_input(scene, mode)
        assert torch.allclose(out.pow(2).mean(dim=(1, 2, 3)), torch.ones(2), atol=0.02)
        # A black frame (camera blackout) is zeros, not noise blown up to unit scale.
        black = normalise_input(torch.zeros(1, 3, 24, 32) + torch.rand(1, 3, 24, 32) * 1e-3, mode)
        assert black.abs().max() < 0.1
    with pytest.raises(ValueError, match="input_norm"):
        PerceptionConfig(input_norm="batch")


@pytest.mark.parametrize("height,width", [(97, 131), (480, 640), (7, 5)])
def test_preprocess_encodings_and_odd_sizes(height, width):
    config = PerceptionConfig()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = preprocess(rgb, "rgb8", config)
    assert out.shape == (3, 96, 128) and out.dtype == np.float32 and out.flags.c_contiguous
    assert 0.0 <= out.min() and out.max() <= 1.0
    # bgr8 of the channel-reversed frame is the same picture.
    assert np.allclose(preprocess(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", config), out, atol=1e-6)
    # Non-contiguous views are fine too.
    assert np.allclose(preprocess(rgb[:, :, ::-1], "bgr8", config), out, atol=1e-6)
    gray = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    mono = preprocess(gray, "mono8", config)
    assert mono.shape == (3, 96, 128) and np.array_equal(mono[0], mono[1]) and np.array_equal(mono[1], mono[2])
    assert np.array_equal(preprocess(gray[:, :, None], "mono8", config), mono)


def test_preprocess_known_values():
    config = PerceptionConfig(height=2, width=2, conv_channels=(4,))
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:2, :2] = (255, 0, 0)    # top-left red (RGB)
    image[2:, 2:] = (0, 0, 255)    # bottom-right blue
    out = preprocess(image, "rgb8", config)
    assert np.allclose(out[:, 0, 0], [1, 0, 0]) and np.allclose(out[:, 1, 1], [0, 0, 1])
    assert np.allclose(out[:, 0, 1], 0)
    as_bgr = preprocess(image, "bgr8", config)  # same bytes read as BGR: red and blue swap
    assert np.allclose(as_bgr[:, 0, 0], [0, 0, 1])
    # Area resize averages: a 2x2 block of 0 and 255 pixels becomes 0.5.
    checker = np.zeros((4, 4), dtype=np.uint8)
    checker[::2, ::2] = checker[1::2, 1::2] = 255
    assert np.allclose(preprocess(checker, "mono8", config), 0.5, atol=1 / 255)
    floats = np.full((4, 4, 3), 0.25, dtype=np.float64)
    assert np.allclose(preprocess(floats, "rgb8", config), 0.25)


@pytest.mark.parametrize("image,encoding,message", [
    (np.zeros((10, 10, 3), dtype=np.uint8), "rgba8", "unsupported encoding"),
    (np.zeros((10, 10, 3), dtype=np.uint16), "rgb8", "dtype"),
    (np.zeros((10, 10), dtype=np.uint8), "rgb8", r"must be \(H, W, 3\)"),
    (np.zeros((10, 10, 4), dtype=np.uint8), "bgr8", r"must be \(H, W, 3\)"),
    (np.zeros((10, 10, 3), dtype=np.uint8), "mono8", "mono8 image must be"),
    (np.zeros((0, 10, 3), dtype=np.uint8), "rgb8", "empty image"),
    (np.zeros((10, 0), dtype=np.uint8), "mono8", "empty image"),
    (np.full((10, 10, 3), np.nan, dtype=np.float32), "rgb8", "NaN"),
    (np.full((10, 10, 3), 2.0, dtype=np.float32), "rgb8", r"in \[0, 1\]"),
    ([[0, 1], [2, 3]], "mono8", "numpy array"),
])
def test_preprocess_errors(image, encoding, message):
    with pytest.raises(ValueError, match=message):
        preprocess(image, encoding, PerceptionConfig())
