"""Our CfC cell and NCP wiring: shapes, timespans, step/forward consistency, masks, round trips."""
import json

import numpy as np
import pytest
import torch

from liquid_control.models import CfC, Wiring
from liquid_control.models.cfc import normalize_timespans

FEATURES = 6


def make(mode="default", wired=True, seed=0):
    torch.manual_seed(seed)
    if wired:
        return CfC(FEATURES, Wiring.auto(FEATURES, 14, 3, sparsity_level=0.5, seed=seed), mode=mode).eval()
    return CfC(FEATURES, 9, mode=mode, backbone_units=11, backbone_layers=1).eval()


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
@pytest.mark.parametrize("wired", [True, False])
def test_shapes_and_step_matches_forward(mode, wired):
    model = make(mode, wired)
    x = torch.randn(3, 8, FEATURES)
    ts = 0.5 + torch.rand(3, 8, 1)
    out, h = model(x, timespans=ts)
    assert out.shape == (3, 8, model.output_size) and h.shape == (3, model.state_size)
    assert model.output_size == (3 if wired else 9)
    state = torch.zeros(3, model.state_size)
    for k in range(8):
        y, state = model.step(x[:, k], state, ts[:, k])
        assert torch.allclose(y, out[:, k], atol=1e-6)
    assert torch.allclose(state, h, atol=1e-6)
    if wired:  # output = motor neurons = the last block of the state
        assert torch.equal(out[:, -1], h[:, -model.output_size:])


def test_timespan_forms_agree():
    model = make()
    x = torch.randn(2, 5, FEATURES)
    reference, _ = model(x)
    for ts in (1.0, 1, torch.ones(2, 5), torch.ones(2, 5, 1)):
        assert torch.allclose(model(x, timespans=ts)[0], reference)
    scalar, _ = model(x, timespans=2.0)
    assert torch.allclose(scalar, model(x, timespans=torch.full((2, 5), 2.0))[0])
    assert not torch.allclose(scalar, reference)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_per_sample_timespans_in_a_batch(mode):
    """The ncps #81-#83 case: same inputs, different per-sample timespans, batch > 1."""
    model = make(mode, wired=True, seed=3)
    x = torch.randn(1, 10, FEATURES).expand(4, 10, FEATURES).contiguous()
    ts = torch.stack([torch.full((10,), v) for v in (0.25, 1.0, 2.0, 4.0)]).unsqueeze(-1)
    ts[2, 3] = 7.0  # one sample also has a long gap mid-sequence (a dropped burst)
    out, h = model(x, timespans=ts)
    for i in range(4):
        for j in range(i + 1, 4):
            assert (out[i] - out[j]).abs().max() > 1e-4
        alone, h_alone = model(x[i:i + 1], timespans=ts[i:i + 1])
        assert torch.allclose(alone[0], out[i], atol=1e-6)
        assert torch.allclose(h_alone[0], h[i], atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    model = make()
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(2, 5, FEATURES + 1))
    with pytest.raises(ValueError, match="timespans"):
        model(torch.randn(2, 5, FEATURES), timespans=torch.ones(2, 4))
    with pytest.raises(ValueError, match="hx"):
        model(torch.randn(2, 5, FEATURES), hx=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="mode"):
        CfC(FEATURES, 8, mode="fast")
    with pytest.raises(ValueError, match="activation"):
        CfC(FEATURES, 8, activation="swish")
    with pytest.raises(ValueError, match="backbone"):
        CfC(FEATURES, Wiring.auto(FEATURES, 14, 3), backbone_layers=1)
    with pytest.raises(ValueError, match="inputs"):
        CfC(FEATURES + 1, Wiring.auto(FEATURES, 14, 3))
    with pytest.raises(ValueError, match="shape"):
        normalize_timespans(torch.ones(3), 2, 5)


def test_masks_are_buffers_and_counts_match_hand_computation():
    wiring = Wiring.auto(FEATURES, 14, 3, seed=1)
    inter, command, motor = wiring.layer_sizes
    model = CfC(FEATURES, wiring)
    # default mode, per layer: 4 heads x hidden x (inputs + hidden + 1 bias)
    expected = (4 * inter * (FEATURES + inter + 1) + 4 * command * (inter + command + 1)
                + 4 * motor * (command + motor + 1))
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(not name.endswith("mask") for name, _ in model.named_parameters())
    state = model.state_dict()
    assert all(f"layers.{i}.head_mask" in state for i in range(3))
    # Masked-out synapses never learn: their gradient is exactly zero.
    out, _ = model(torch.randn(2, 4, FEATURES))
    out.pow(2).sum().backward()
    for cell, mask in zip(model.layers, wiring.layer_input_masks()):
        grad_w1 = cell.head.weight.grad[: cell.hidden_size]
        assert torch.all(grad_w1[torch.from_numpy(mask) == 0] == 0)
        assert grad_w1[torch.from_numpy(mask) == 1].abs().sum() > 0
        # and they start at zero, so they never look like live synapses
        assert torch.all(cell.head.weight[: cell.hidden_size][torch.from_numpy(mask) == 0] == 0)


def test_dense_without_backbone_count():
    model = CfC(FEATURES, 9, backbone_layers=0)
    assert sum(p.numel() for p in model.parameters()) == 4 * 9 * (FEATURES + 9 + 1)
    pure = CfC(FEATURES, 9, mode="pure", backbone_layers=0)
    assert sum(p.numel() for p in pure.parameters()) == 9 * (FEATURES + 9 + 1) + 2 * 9


def test_wiring_round_trip_and_seed_reproducibility():
    wiring = Wiring.auto(32, 80, 16, sparsity_level=0.5, seed=7)
    assert wiring.layer_sizes == [39, 25, 16] and wiring.units == 80
    restored = Wiring.from_dict(json.loads(json.dumps(wiring.to_dict())))
    assert restored == wiring
    for a, b in zip(restored.layer_input_masks(), wiring.layer_input_masks()):
        assert np.array_equal(a, b)
    assert Wiring.auto(32, 80, 16, sparsity_level=0.5, seed=7) == wiring
    assert Wiring.auto(32, 80, 16, sparsity_level=0.5, seed=8) != wiring
    # Polarity is kept, recurrent command synapses exist, every neuron has an input.
    assert set(np.unique(wiring.sensory_to_inter)) == {-1, 0, 1}
    assert (wiring.command_to_command != 0).sum() > 0
    assert (wiring.sensory_to_inter != 0).any(axis=0).all()
    # Sparser wiring -> fewer synapses.
    assert Wiring.auto(32, 80, 16, sparsity_level=0.8, seed=7).synapse_count() < wiring.synapse_count()
    # Two models built from the same wiring dict have identical masks.
    a, b = CfC(32, wiring), CfC(32, restored)
    for ca, cb in zip(a.layers, b.layers):
        assert torch.equal(ca.head_mask, cb.head_mask)


def test_wiring_rejects_bad_configs():
    with pytest.raises(ValueError, match="output_size"):
        Wiring.auto(8, 10, 8)
    with pytest.raises(ValueError, match="sparsity"):
        Wiring.auto(8, 20, 4, sparsity_level=0.95)
    data = Wiring.auto(8, 20, 4).to_dict()
    with pytest.raises(ValueError, match="type"):
        Wiring.from_dict({**data, "type": "random"})
    with pytest.raises(ValueError, match="lacks"):
        Wiring.from_dict({k: v for k, v in data.items() if k != "command_to_motor"})
    with pytest.raises(ValueError, match="shape"):
        Wiring.from_dict({**data, "inter_neurons": data["inter_neurons"] + 1})
    bad = dict(data)
    bad["sensory_to_inter"] = [[2] * data["inter_neurons"]] * 8
    with pytest.raises(ValueError, match="-1, 0 or"):
        Wiring.from_dict(bad)
    dead = dict(data)
    dead["command_to_motor"] = [[0] * 4 for _ in range(data["command_neurons"])]
    with pytest.raises(ValueError, match="no synapse"):
        Wiring.from_dict(dead)


def test_torchscript_step_matches_eager():
    model = make("default", wired=True)
    scripted = torch.jit.script(model)
    x = torch.randn(2, FEATURES)
    h = torch.randn(2, model.state_size)
    t = torch.tensor([[0.5], [3.0]])
    for a, b in zip(scripted.step(x, h, t), model.step(x, h, t)):
        assert torch.allclose(a, b, atol=1e-6)
    seq = torch.randn(2, 4, FEATURES)
    assert torch.allclose(scripted(seq)[0], model(seq)[0], atol=1e-6)
