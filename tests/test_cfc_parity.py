"""Numerical parity of our fused CfC with the reference ncps 1.0.1 (the oracle named in DESIGN.md).

Weights are copied from ncps modules into ours; both run the same 50-step rollouts
(batch > 1) and must agree to 1e-5. ncps's sequence `CfC.forward` squeezes per-step
timespans to shape (B,) and mis-broadcasts them for batch > 1 (ncps issues #81-#83),
so timespan parity at batch > 1 drives ncps's cell step by step with (B, 1) timespans,
which is how its cell is meant to be called; its `forward` is compared without
timespans (batch > 1) and with timespans at batch 1 where it works.
"""
import numpy as np
import pytest
import torch

ncps_torch = pytest.importorskip("ncps.torch")
ncps_wirings = pytest.importorskip("ncps.wirings")

from liquid_control.models.cfc import CfC, CfCCell  # noqa: E402
from liquid_control.models.wiring import Wiring  # noqa: E402

TOL = 1e-5
STEPS = 50
BATCH = 3
FEATURES = 7


def copy_cell(ref, ours: CfCCell) -> None:
    """Map an ncps CfCCell's ff1/ff2/time_a/time_b (+ backbone, w_tau, A) into our fused cell."""
    with torch.no_grad():
        ref_linears = [m for m in (ref.backbone or []) if isinstance(m, torch.nn.Linear)]
        our_linears = [m for m in ours.backbone if isinstance(m, torch.nn.Linear)]
        assert len(ref_linears) == len(our_linears)
        for src, dst in zip(ref_linears, our_linears):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        if ref.mode == "pure":
            ours.head.weight.copy_(ref.ff1.weight)
            ours.head.bias.copy_(ref.ff1.bias)
            ours.w_tau.copy_(ref.w_tau)
            ours.A.copy_(ref.A)
        else:
            heads = [ref.ff1, ref.ff2, ref.time_a, ref.time_b]
            ours.head.weight.copy_(torch.cat([h.weight for h in heads], dim=0))
            ours.head.bias.copy_(torch.cat([h.bias for h in heads], dim=0))


def wiring_from_ncps(ncps_wiring) -> Wiring:
    return Wiring.from_adjacency(ncps_wiring.sensory_adjacency_matrix, ncps_wiring.adjacency_matrix,
                                 ncps_wiring.get_neurons_of_layer(0), ncps_wiring.get_neurons_of_layer(1),
                                 ncps_wiring.get_neurons_of_layer(2))


def build_pair(mode: str, wired: bool, backbone_layers: int, seed: int):
    torch.manual_seed(seed)
    if wired:
        ref = ncps_torch.CfC(FEATURES, ncps_wirings.AutoNCP(16, 3, seed=seed), mode=mode)
        ours = CfC(FEATURES, wiring_from_ncps(ref.wiring), mode=mode)
        for i, cell in enumerate(ours.layers):
            ref_cell = getattr(ref.rnn_cell, f"layer_{i}")
            # Both must use the identical sparse pattern on W1 (and W2).
            assert torch.equal(cell.head_mask[: cell.hidden_size], ref_cell.sparsity_mask)
            copy_cell(ref_cell, cell)
    else:
        kwargs = dict(backbone_units=12, backbone_layers=backbone_layers, backbone_dropout=0.0)
        ref = ncps_torch.CfC(FEATURES, 10, mode=mode, **kwargs)
        ours = CfC(FEATURES, 10, mode=mode, **kwargs)
        copy_cell(ref.rnn_cell, ours.layers[0])
    return ref.eval(), ours.eval()


CASES = [(mode, wired, layers) for mode in ("default", "no_gate", "pure")
         for wired, layers in ((True, 0), (False, 0), (False, 1), (False, 2))]


@pytest.mark.parametrize("mode,wired,backbone_layers", CASES)
def test_parity_with_ncps(mode, wired, backbone_layers):
    ref, ours = build_pair(mode, wired, backbone_layers, seed=11)
    assert ours.state_size == ref.state_size and ours.output_size == ref.output_size
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(BATCH, STEPS, FEATURES, generator=gen)
    h0 = 0.3 * torch.randn(BATCH, ref.state_size, generator=gen)
    # Jittered per-sample, per-step timespans, as with dropped/late frames.
    ts = 0.5 + 1.5 * torch.rand(BATCH, STEPS, 1, generator=gen)
    with torch.no_grad():
        # 1) ncps's own sequence API, no timespans (works for batch > 1).
        ref_out, ref_h = ref(x, h0)
        out, h = ours(x, h0)
        assert (out - ref_out).abs().max() <= TOL
        assert (h - ref_h).abs().max() <= TOL
        # 2) per-sample timespans: ncps cell stepped with (B, 1) timespans vs our forward.
        ref_h = h0
        ref_outs = []
        for k in range(STEPS):
            y, ref_h = ref.rnn_cell(x[:, k], ref_h, ts[:, k])
            ref_outs.append(y)
        out, h = ours(x, h0, timespans=ts)
        assert (out - torch.stack(ref_outs, 1)).abs().max() <= TOL
        assert (h - ref_h).abs().max() <= TOL
        # Timespans matter: the same rollout with t=1 differs clearly.
        assert (out - ours(x, h0)[0]).abs().max() > 1e-3
        # 3) ncps's sequence API with timespans at batch 1 (where it broadcasts correctly).
        ref_out1, _ = ref(x[:1], h0[:1], timespans=ts[:1])
        out1, _ = ours(x[:1], h0[:1], timespans=ts[:1])
        assert (out1 - ref_out1).abs().max() <= TOL


def test_masks_are_buffers_unlike_ncps():
    ref, ours = build_pair("default", True, 0, seed=2)
    ref_params = sum(p.numel() for p in ref.parameters())
    ours_params = sum(p.numel() for p in ours.parameters())
    mask_elements = sum(getattr(ref.rnn_cell, f"layer_{i}").sparsity_mask.numel() for i in range(3))
    # ncps counts its frozen masks as parameters; ours keeps them out of parameters().
    assert ref_params - ours_params == mask_elements
    assert all("mask" not in name for name, _ in ours.named_parameters())
    assert sum("head_mask" in name for name, _ in ours.named_buffers()) == 3


@pytest.mark.parametrize("mode,wired", [("default", True), ("pure", True), ("no_gate", False)])
def test_gradient_parity_with_ncps(mode, wired):
    """Training uses our cell: its weight gradients must equal ncps's too."""
    ref, ours = build_pair(mode, wired, backbone_layers=1, seed=4)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(BATCH, 20, FEATURES, generator=gen)
    target = torch.randn(BATCH, 20, ref.output_size, generator=gen)
    ((ref(x)[0] - target) ** 2).mean().backward()
    ((ours(x)[0] - target) ** 2).mean().backward()
    ref_cells = [getattr(ref.rnn_cell, f"layer_{i}") for i in range(3)] if wired else [ref.rnn_cell]
    for ref_cell, cell in zip(ref_cells, ours.layers):
        names = ["ff1"] if mode == "pure" else ["ff1", "ff2", "time_a", "time_b"]
        ref_grad = torch.cat([getattr(ref_cell, n).weight.grad for n in names], dim=0)
        assert (cell.head.weight.grad - ref_grad).abs().max() <= TOL
        if mode == "pure":
            assert (cell.w_tau.grad - ref_cell.w_tau.grad).abs().max() <= TOL
            assert (cell.A.grad - ref_cell.A.grad).abs().max() <= TOL
