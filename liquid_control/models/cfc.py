"""Closed-form Continuous-time (CfC) cells, fused for fast single-step inference.

Equations (DESIGN.md, "The liquid core"), for input I, state x, timespan t:

    z      = backbone([I, x])           (Linear + activation layers; identity if none)
    f1, f2 = tanh(W1 z), tanh(W2 z)
    gate   = sigmoid(Wa z * t + Wb z)
    default: x' = f1 * (1 - gate) + gate * f2
    no_gate: x' = f1 + gate * f2
    pure   : x' = -A * exp(-t * (|w_tau| + |f1|)) * f1 + A      (f1 here is W1 z, no tanh)

These are the semantics of ncps 1.0.1 (``ncps.torch.CfCCell``/``WiredCfCCell``),
which tests/test_cfc_parity.py checks to 1e-5. Differences on purpose:

- W1, W2, Wa, Wb are ONE fused ``nn.Linear`` (``head``, rows [W1; W2; Wa; Wb]):
  one matmul per step instead of four.
- Sparse NCP masks are registered buffers (not frozen parameters), so
  ``parameters()`` counts only what trains.
- Timespans are always broadcast as (B, 1): per-sample, per-step timespans work
  for any batch size (ncps squeezes them to (B,) and mis-broadcasts, issues #81-#83).
- No data-dependent Python control flow in ``step``: it traces/exports to ONNX and
  compiles with ``torch.jit.script``.

Timespan units are whatever the caller uses consistently (the policy uses
multiples of the nominal frame period, so 1.0 = one nominal frame).
"""

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .wiring import Wiring

MODES = ("default", "no_gate", "pure")


class LeCunTanh(nn.Module):
    """1.7159 * tanh(0.666 x): ncps's default backbone activation (LeCun 1998 scaled tanh)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(0.666 * x)


ACTIVATIONS = {"lecun_tanh": LeCunTanh, "tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


class CfCCell(nn.Module):
    """One CfC layer: state (B, hidden_size), fused heads, optional backbone and input mask.

    Args:
        input_size: features I per step.
        hidden_size: neurons (state size).
        mode: "default", "no_gate" or "pure".
        backbone_units/backbone_layers/backbone_dropout/activation: backbone MLP over [I, x];
            backbone_layers=0 means none (heads read [I, x] directly).
        input_mask: optional 0/1 array (hidden_size, input_size + hidden_size) multiplied into
            W1/W2 (and only those, as in ncps); stored as a buffer.
    """

    def __init__(self, input_size: int, hidden_size: int, mode: str = "default",
                 backbone_units: int = 128, backbone_layers: int = 1, backbone_dropout: float = 0.0,
                 activation: str = "lecun_tanh", input_mask: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"CfC: unknown mode {mode!r}; valid modes are {MODES}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"CfC: unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"CfC: input_size and hidden_size must be positive "
                             f"(got {input_size}, {hidden_size})")
        if backbone_layers < 0 or (backbone_layers > 0 and backbone_units < 1):
            raise ValueError(f"CfC: invalid backbone ({backbone_layers} layers of {backbone_units} units)")
        if not 0.0 <= backbone_dropout < 1.0:
            raise ValueError(f"CfC: backbone_dropout must be in [0, 1), got {backbone_dropout}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.mode = mode
        self.is_pure = mode == "pure"
        self.is_no_gate = mode == "no_gate"

        layers: list[nn.Module] = []
        width = input_size + hidden_size
        for _ in range(backbone_layers):
            layers += [nn.Linear(width, backbone_units), ACTIVATIONS[activation]()]
            if backbone_dropout > 0.0:
                layers.append(nn.Dropout(backbone_dropout))
            width = backbone_units
        self.backbone = nn.Sequential(*layers)
        self.has_backbone = backbone_layers > 0

        heads = 1 if self.is_pure else 4
        self.head = nn.Linear(width, heads * hidden_size)
        if self.is_pure:
            self.w_tau = nn.Parameter(torch.zeros(1, hidden_size))
            self.A = nn.Parameter(torch.ones(1, hidden_size))
        else:  # unused placeholders keep one code path for scripting; not parameters
            self.register_buffer("w_tau", torch.zeros(0), persistent=False)
            self.register_buffer("A", torch.zeros(0), persistent=False)

        self.masked = input_mask is not None
        if input_mask is not None:
            mask = torch.as_tensor(input_mask, dtype=torch.float32)
            if mask.shape != (hidden_size, input_size + hidden_size):
                raise ValueError(f"CfC: input_mask has shape {tuple(mask.shape)}, expected "
                                 f"{(hidden_size, input_size + hidden_size)}")
            if backbone_layers > 0:
                raise ValueError("CfC: an input mask needs backbone_layers=0 (it masks the raw [I, x] inputs)")
            # Mask rows for W1 and W2 only; Wa/Wb are dense (ncps semantics).
            rows = [mask] if self.is_pure else [mask, mask, torch.ones_like(mask), torch.ones_like(mask)]
            self.register_buffer("head_mask", torch.cat(rows, dim=0))
        else:
            self.register_buffer("head_mask", torch.zeros(0), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform per head block (fan-out = hidden_size, as four separate Linears would
        have); masked-out weights are zeroed so they never look like live synapses."""
        for module in self.backbone:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
        with torch.no_grad():
            for block in self.head.weight.split(self.hidden_size, dim=0):
                nn.init.xavier_uniform_(block)
            if self.masked:
                self.head.weight.mul_(self.head_mask)

    def head_weight(self) -> torch.Tensor:
        """Fused head weight with the sparse mask applied (what the step actually uses)."""
        if self.masked:
            return self.head.weight * self.head_mask
        return self.head.weight

    def forward(self, x: torch.Tensor, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One step (same as `step`)."""
        return self.step(x, h, t)

    @torch.jit.export
    def step(self, x: torch.Tensor, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One step. x (B, input_size), h (B, hidden_size), t (B, 1) or broadcastable -> h' (B, hidden_size).

        Called directly (not through ``__call__``) on the deploy path: module-call overhead is
        comparable to the arithmetic at these sizes."""
        z = torch.cat([x, h], dim=1)
        if self.has_backbone:
            z = self.backbone(z)
        heads = F.linear(z, self.head_weight(), self.head.bias)
        if self.is_pure:
            return -self.A * torch.exp(-t * (torch.abs(self.w_tau) + torch.abs(heads))) * heads + self.A
        # Few ops: per-op overhead dominates at these sizes (batch 1, ~100 units), so
        # split the heads with one view + unbind rather than slices and chunks.
        f1, f2, t_a, t_b = heads.view(-1, 4, self.hidden_size).unbind(1)
        f1 = torch.tanh(f1)
        f2 = torch.tanh(f2)
        gate = torch.sigmoid(torch.addcmul(t_b, t_a, t))
        if self.is_no_gate:
            return torch.addcmul(f1, gate, f2)
        # f1 * (1 - gate) + gate * f2, rearranged to one multiply
        return torch.addcmul(f1, gate, f2 - f1)


class CfC(nn.Module):
    """CfC sequence model, dense or NCP-wired.

    ``CfC(input_size, units_or_wiring, mode=..., backbone_units=..., ...)``:
    - ``units_or_wiring`` an int: one dense CfC layer of that many units with a backbone
      (defaults as ncps: 128 units, 1 layer, lecun_tanh); output = the whole state.
    - a `Wiring`: inter -> command -> motor CfC layers without backbone, W1/W2 masked by the
      wiring; state = [inter | command | motor]; output = motor state.

    ``forward(x (B,T,F), hx=None, timespans=None) -> (outputs (B,T,O), h_last (B,H))``;
    ``step(x (B,F), h (B,H), t (B,1)) -> (y (B,O), h_new (B,H))`` is the deploy path.
    """

    def __init__(self, input_size: int, units_or_wiring: Union[int, Wiring], mode: str = "default",
                 backbone_units: Optional[int] = None, backbone_layers: Optional[int] = None,
                 backbone_dropout: Optional[float] = None, activation: str = "lecun_tanh") -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.mode = mode
        cells: list[CfCCell] = []
        if isinstance(units_or_wiring, Wiring):
            wiring = units_or_wiring
            if backbone_units or backbone_layers or backbone_dropout:
                raise ValueError("CfC: wired (NCP) mode has no backbone; leave backbone_* unset")
            if wiring.input_size != input_size:
                raise ValueError(f"CfC: wiring expects {wiring.input_size} inputs but input_size={input_size}")
            self.wiring = wiring
            in_features = input_size
            for size, mask in zip(wiring.layer_sizes, wiring.layer_input_masks()):
                cells.append(CfCCell(in_features, size, mode, backbone_layers=0,
                                     input_mask=torch.from_numpy(mask)))
                in_features = size
            self.output_size = wiring.output_size
        elif isinstance(units_or_wiring, int) and not isinstance(units_or_wiring, bool):
            self.wiring = None
            cells.append(CfCCell(input_size, units_or_wiring, mode,
                                 backbone_units=128 if backbone_units is None else backbone_units,
                                 backbone_layers=1 if backbone_layers is None else backbone_layers,
                                 backbone_dropout=0.0 if backbone_dropout is None else backbone_dropout,
                                 activation=activation))
            self.output_size = int(units_or_wiring)
        else:
            raise TypeError(f"CfC: units_or_wiring must be an int or a Wiring, got {type(units_or_wiring).__name__}")
        self.layers = nn.ModuleList(cells)
        self.layer_sizes = [cell.hidden_size for cell in cells]
        self.state_size = sum(self.layer_sizes)

    @torch.jit.export
    def step(self, x: torch.Tensor, h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step. x (B, input_size), h (B, state_size), t (B, 1) timespans -> (y (B, O), h_new (B, H))."""
        if len(self.layers) == 1:
            h_new = self.layers[0].step(x, h, t)
            return h_new, h_new
        states = torch.split(h, self.layer_sizes, dim=1)
        new_states: list[torch.Tensor] = []
        y = x
        for i, cell in enumerate(self.layers):
            y = cell.step(y, states[i], t)
            new_states.append(y)
        return y, torch.cat(new_states, dim=1)

    @torch.jit.ignore
    def initial_state(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """Zero state (batch, state_size)."""
        return torch.zeros(batch, self.state_size, device=device)

    def forward(self, x: torch.Tensor, hx: Optional[torch.Tensor] = None,
                timespans: Union[None, float, torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run a sequence. x (B, T, F); hx (B, H) or None (zeros); timespans None (1.0), a float,
        or a tensor (B, T) / (B, T, 1). Returns (outputs (B, T, O), h_last (B, H))."""
        h, ts = self._checked_state_and_timespans(x, hx, timespans)
        outputs: list[torch.Tensor] = []
        for k in range(x.shape[1]):
            y, h = self.step(x[:, k], h, ts[:, k])
            outputs.append(y)
        return torch.stack(outputs, dim=1), h

    @torch.jit.ignore
    def _checked_state_and_timespans(self, x: torch.Tensor, hx: Optional[torch.Tensor],
                                     timespans: Union[None, float, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes with clear messages (plain Python, outside the scripted graph)."""
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"CfC: expected input (batch, time, {self.input_size}), got {tuple(x.shape)}")
        batch, steps = x.shape[0], x.shape[1]
        ts = normalize_timespans(timespans, batch, steps, x.dtype, x.device)
        h = torch.zeros(batch, self.state_size, dtype=x.dtype, device=x.device) if hx is None else hx
        if tuple(h.shape) != (batch, self.state_size):
            raise ValueError(f"CfC: hx must have shape {(batch, self.state_size)}, got {tuple(h.shape)}")
        return h, ts


def normalize_timespans(timespans: Union[None, float, torch.Tensor], batch: int, steps: int,
                        dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
    """Timespans as a (B, T, 1) tensor. Accepts None (=1.0), a number, or a tensor (B, T) / (B, T, 1)."""
    if timespans is None:
        return torch.ones(batch, steps, 1, dtype=dtype, device=device)
    if isinstance(timespans, (int, float)):
        return torch.full((batch, steps, 1), float(timespans), dtype=dtype, device=device)
    ts = torch.as_tensor(timespans, dtype=dtype, device=device)
    if ts.dim() == 2:
        ts = ts.unsqueeze(-1)
    if ts.shape != (batch, steps, 1):
        raise ValueError(f"timespans must be a number or have shape ({batch}, {steps}) or "
                         f"({batch}, {steps}, 1); got {tuple(ts.shape)}")
    return ts
