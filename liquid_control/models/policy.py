"""Policy models: features -> heading-frame velocity command, with one interface for every kind.

A `PolicyModel` is a recurrent core (CfC, LSTM, GRU, or a stateless MLP) plus a
linear readout to ``[vx, vy, vz, yaw_rate]`` in the heading frame, FLU axes (REP-103) turned by yaw only:
m/s forward, left, up and rad/s counter-clockwise. Input normalisation
(feature mean/std) and the per-axis command scale are buffers inside the model,
so an ONNX export or a model file carries them.

Common interface (runtime and export treat every kind alike):

- ``state_size`` and ``initial_state(batch) -> (B, state_size)`` zeros;
- ``step(features (B,F), state (B,S), timespan (B,1)) -> (command (B,4), new_state (B,S))``;
- ``forward(features (B,T,F), timespans (B,T,1) | None, state=None) -> (commands (B,T,4), state)``.

Timespans are in units of the nominal frame period (``config.frame_period_s``):
1.0 = one nominal frame; a dropped frame gives 2.0. The CfC integrates over them; the
discrete baselines (LSTM, GRU, MLP) accept and ignore them, which is exactly the
property the comparison measures, except the time-aware LSTM/GRU (``rnn_time_input``),
which get the timespan as one more input: the fair baseline for irregular frame rates. The MLP is stateless but keeps a dummy state of
size 1 (passed through unchanged) so that every exported graph has the same
(features, state, timespan) -> (command, state) signature; zero-size tensors are
avoided because ONNX runtimes handle them unevenly.

Safety: the model itself does not clamp; the policy node clamps commands and
falls back to hover on stale inputs.

Default (``PolicyConfig()``): a wired NCP CfC, AutoNCP-style, 80 neurons
(39 inter, 25 command, 16 motor), sparsity 0.5, 32 features, readout from the 16
motor neurons: 20,488 trainable parameters. Wired, because the MIT drone work
(Chahine et al., Science Robotics 2023) flew an NCP-wired liquid core of a
similar size and credited its sparse, structured wiring for out-of-distribution
robustness; the dense CfC (``cfc_wiring="dense"``) stays available for ablation.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from liquid_control.config import ConfigBase

from .cfc import ACTIVATIONS, CfC, MODES
from .limits import FRAME_PERIOD_RANGE_S, MAX_LAYERS, MAX_WIDTH  # noqa: F401 (re-exported)
from .wiring import Wiring

KINDS = ("cfc", "lstm", "gru", "mlp")
COMMAND_AXES = ("vx", "vy", "vz", "yaw_rate")
COMMAND_SIZE = len(COMMAND_AXES)


@dataclass
class PolicyConfig(ConfigBase):
    """Everything needed to rebuild a policy (stored in model files).

    Attributes:
        kind: "cfc", "lstm", "gru" or "mlp".
        feature_size: length of the feature vector from perception.
        cfc_wiring: "ncp" (sparse inter->command->motor, no backbone) or "dense".
        cfc_units: total neurons (ncp) or state size (dense).
        cfc_motor_neurons: ncp motor (output) neurons feeding the readout.
        cfc_sparsity / cfc_seed: ncp wiring generation (see Wiring.auto).
        cfc_mode: "default", "no_gate" or "pure" (DESIGN.md equations).
        cfc_backbone_*: dense mode backbone (layers=0: none); ignored for ncp.
        wiring: the exact wiring as Wiring.to_dict(); filled in by PolicyModel so a saved
            config rebuilds the identical network whatever the generator does later.
        rnn_hidden_size: LSTM/GRU hidden size.
        mlp_hidden_sizes: MLP hidden layer widths.
        frame_period_s: nominal time between frames (s); timespans are divided by it.
        rnn_time_input: LSTM/GRU only: the timespan is appended to the cell's input (the fair
            "time-aware" discrete baseline: it sees the frame interval the CfC integrates over).
        param_budget: target trainable parameter count (informational; see policy_for_budget).
    """

    kind: str = "cfc"
    feature_size: int = 32
    cfc_wiring: str = "ncp"
    cfc_units: int = 80
    cfc_motor_neurons: int = 16
    cfc_sparsity: float = 0.5
    cfc_seed: int = 22222
    cfc_mode: str = "default"
    cfc_backbone_units: int = 64
    cfc_backbone_layers: int = 1
    cfc_backbone_dropout: float = 0.0
    cfc_activation: str = "lecun_tanh"
    wiring: Optional[dict[str, Any]] = None
    rnn_hidden_size: int = 64
    mlp_hidden_sizes: tuple[int, ...] = (128, 128)
    frame_period_s: float = 1.0 / 30.0
    rnn_time_input: bool = False
    param_budget: int = 20000

    def __post_init__(self) -> None:
        self.mlp_hidden_sizes = tuple(int(v) for v in self.mlp_hidden_sizes)
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {KINDS}")
        if self.feature_size < 1:
            problems.append(f"feature_size must be positive, got {self.feature_size}")
        if self.cfc_wiring not in ("ncp", "dense"):
            problems.append(f"cfc_wiring must be 'ncp' or 'dense', got {self.cfc_wiring!r}")
        if self.cfc_mode not in MODES:
            problems.append(f"cfc_mode {self.cfc_mode!r} is not one of {MODES}")
        if self.cfc_activation not in ACTIVATIONS:
            problems.append(f"cfc_activation {self.cfc_activation!r} is not one of {sorted(ACTIVATIONS)}")
        if self.rnn_hidden_size < 1 or any(v < 1 for v in self.mlp_hidden_sizes):
            problems.append("hidden sizes must be positive")
        if self.rnn_time_input and self.kind not in ("lstm", "gru"):
            problems.append(f"rnn_time_input applies to lstm and gru only, not {self.kind!r}")
        widths = (self.feature_size, self.cfc_units, self.cfc_motor_neurons, self.cfc_backbone_units,
                  self.rnn_hidden_size, *self.mlp_hidden_sizes)
        if any(w > MAX_WIDTH for w in widths) or self.cfc_backbone_layers > MAX_LAYERS or \
                len(self.mlp_hidden_sizes) > MAX_LAYERS:
            problems.append(f"sizes must be <= {MAX_WIDTH} and layer counts <= {MAX_LAYERS}")
        low, high = FRAME_PERIOD_RANGE_S
        if isinstance(self.frame_period_s, bool) or not isinstance(self.frame_period_s, (int, float)) or \
                not low <= self.frame_period_s <= high:
            problems.append(f"frame_period_s must be a number of seconds in [{low:g}, {high:g}], "
                            f"got {self.frame_period_s!r}")
        if problems:
            raise ValueError("PolicyConfig: " + "; ".join(problems))



# --------------------------------------------------------------------------- cores
# Each core: output_size, state_size, step(x, state, t) -> (y, new_state).

class CfCCore(nn.Module):
    def __init__(self, config: PolicyConfig, wiring: Optional[Wiring]) -> None:
        super().__init__()
        if wiring is not None:
            self.cfc = CfC(config.feature_size, wiring, mode=config.cfc_mode)
        else:
            self.cfc = CfC(config.feature_size, config.cfc_units, mode=config.cfc_mode,
                           backbone_units=config.cfc_backbone_units, backbone_layers=config.cfc_backbone_layers,
                           backbone_dropout=config.cfc_backbone_dropout, activation=config.cfc_activation)
        self.output_size = self.cfc.output_size
        self.state_size = self.cfc.state_size

    def step(self, x: torch.Tensor, state: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cfc.step(x, state, t)


class LSTMCore(nn.Module):
    """LSTM cell; state packs [h | c] into one (B, 2H) tensor. Ignores timespans unless
    `rnn_time_input` appends them to the input."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.hidden = config.rnn_hidden_size
        self.time_input: bool = config.rnn_time_input
        self.cell = nn.LSTMCell(config.feature_size + int(self.time_input), self.hidden)
        self.output_size = self.hidden
        self.state_size = 2 * self.hidden

    def step(self, x: torch.Tensor, state: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.time_input:
            x = torch.cat([x, t], dim=1)
        h, c = state[:, : self.hidden], state[:, self.hidden:]
        h, c = self.cell(x, (h, c))
        return h, torch.cat([h, c], dim=1)


class GRUCore(nn.Module):
    """GRU cell; state = h (B, H). Ignores timespans unless `rnn_time_input` appends them to the input."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.time_input: bool = config.rnn_time_input
        self.cell = nn.GRUCell(config.feature_size + int(self.time_input), config.rnn_hidden_size)
        self.output_size = config.rnn_hidden_size
        self.state_size = config.rnn_hidden_size

    def step(self, x: torch.Tensor, state: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.time_input:
            x = torch.cat([x, t], dim=1)
        h = self.cell(x, state)
        return h, h


class MLPCore(nn.Module):
    """Stateless MLP (ReLU); dummy state of size 1 passed through unchanged. Ignores timespans."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.feature_size
        for hidden in config.mlp_hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.output_size = width
        self.state_size = 1

    def step(self, x: torch.Tensor, state: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), state


# --------------------------------------------------------------------------- policy
class PolicyModel(nn.Module):
    """Core + readout to [vx, vy, vz, yaw_rate] (heading frame FLU; m/s, rad/s). See module docstring."""

    __jit_unused_properties__ = ["frame_period_s"]

    def __init__(self, config: Optional[PolicyConfig] = None) -> None:
        super().__init__()
        config = PolicyConfig() if config is None else config
        wiring = None
        if config.kind == "cfc" and config.cfc_wiring == "ncp":
            if config.wiring is not None:
                wiring = Wiring.from_dict(config.wiring)
                if (wiring.input_size, wiring.units, wiring.output_size) != \
                        (config.feature_size, config.cfc_units, config.cfc_motor_neurons):
                    raise ValueError(
                        f"PolicyConfig: wiring ({wiring.input_size} inputs, {wiring.units} units, "
                        f"{wiring.output_size} motor) disagrees with feature_size={config.feature_size}, "
                        f"cfc_units={config.cfc_units}, cfc_motor_neurons={config.cfc_motor_neurons}")
            else:
                wiring = Wiring.auto(config.feature_size, config.cfc_units, config.cfc_motor_neurons,
                                     config.cfc_sparsity, config.cfc_seed)
            # Record the exact wiring so the saved config rebuilds this very network.
            config = dataclasses.replace(config, wiring=wiring.to_dict())
        self.config = config
        self.wiring = wiring
        if config.kind == "cfc":
            self.core = CfCCore(config, wiring)
        elif config.kind == "lstm":
            self.core = LSTMCore(config)
        elif config.kind == "gru":
            self.core = GRUCore(config)
        else:
            self.core = MLPCore(config)
        self.readout = nn.Linear(self.core.output_size, COMMAND_SIZE)
        self.state_size: int = self.core.state_size
        self.feature_size: int = config.feature_size
        self.register_buffer("feature_mean", torch.zeros(config.feature_size))
        self.register_buffer("feature_std", torch.ones(config.feature_size))
        self.register_buffer("command_scale", torch.ones(COMMAND_SIZE))

    @property
    def frame_period_s(self) -> float:
        return self.config.frame_period_s

    def set_normalization(self, mean: Any, std: Any) -> None:
        """Feature normalisation applied inside the model: (features - mean) / std."""
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
        for name, value in (("mean", mean_t), ("std", std_t)):
            if value.shape != (self.feature_size,):
                raise ValueError(f"normalization {name} must have shape ({self.feature_size},), "
                                 f"got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"normalization {name} contains NaN or inf")
        if not (std_t > 0).all():
            raise ValueError("normalization std must be > 0 everywhere")
        self.feature_mean.copy_(mean_t)
        self.feature_std.copy_(std_t)

    def set_command_scale(self, scale: Any) -> None:
        """Per-axis scale of [vx, vy, vz, yaw_rate] applied to the readout (m/s, m/s, m/s, rad/s)."""
        scale_t = torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if scale_t.shape != (COMMAND_SIZE,) or not torch.isfinite(scale_t).all() or not (scale_t > 0).all():
            raise ValueError(f"command scale must be 4 finite positive numbers, got {scale!r}")
        self.command_scale.copy_(scale_t)

    @torch.jit.ignore
    def initial_state(self, batch: int = 1, device: Optional[torch.device] = None) -> torch.Tensor:
        """Zero state (batch, state_size): what the runtime uses at start and after a reset."""
        return torch.zeros(batch, self.state_size, device=device)

    @torch.jit.export
    def step(self, features: torch.Tensor, state: torch.Tensor,
             timespan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: features (B,F), state (B,S), timespan (B,1) in nominal frame periods
        -> (command (B,4) [vx, vy, vz, yaw_rate] heading frame FLU, new_state (B,S))."""
        x = (features - self.feature_mean) / self.feature_std
        y, new_state = self.core.step(x, state, timespan)
        # F.linear rather than self.readout(...): skips module-call overhead on the deploy path.
        return F.linear(y, self.readout.weight, self.readout.bias) * self.command_scale, new_state

    def forward(self, features: torch.Tensor, timespans: Optional[torch.Tensor] = None,
                state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence: features (B,T,F), timespans (B,T,1) or (B,T) or None (all 1.0),
        state (B,S) or None (zeros) -> (commands (B,T,4), final state (B,S))."""
        timespans, state = self._checked_timespans_and_state(features, timespans, state)
        commands: list[torch.Tensor] = []
        for k in range(features.shape[1]):
            command, state = self.step(features[:, k], state, timespans[:, k])
            commands.append(command)
        return torch.stack(commands, dim=1), state

    @torch.jit.ignore
    def rollout(self, features: torch.Tensor, timespans: Optional[torch.Tensor] = None,
                state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` that also returns the state after every frame (B,T,S), for training-only heads that
        read the state (learning/train.py). Deployment never calls it."""
        timespans, state = self._checked_timespans_and_state(features, timespans, state)
        commands: list[torch.Tensor] = []
        states: list[torch.Tensor] = []
        for k in range(features.shape[1]):
            command, state = self.step(features[:, k], state, timespans[:, k])
            commands.append(command)
            states.append(state)
        return torch.stack(commands, dim=1), torch.stack(states, dim=1), state

    @torch.jit.ignore
    def _checked_timespans_and_state(self, features: torch.Tensor, timespans: Optional[torch.Tensor],
                                     state: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes with clear messages (plain Python, outside any scripted graph)."""
        if features.dim() != 3 or features.shape[2] != self.feature_size:
            raise ValueError(f"policy: expected features (batch, time, {self.feature_size}), "
                             f"got {tuple(features.shape)}")
        batch, steps = features.shape[0], features.shape[1]
        if timespans is None:
            timespans = torch.ones(batch, steps, 1, dtype=features.dtype, device=features.device)
        elif timespans.dim() == 2:
            timespans = timespans.unsqueeze(-1)
        if tuple(timespans.shape) != (batch, steps, 1):
            raise ValueError(f"policy: timespans must have shape ({batch}, {steps}, 1), got {tuple(timespans.shape)}")
        if state is None:
            state = torch.zeros(batch, self.state_size, dtype=features.dtype, device=features.device)
        elif tuple(state.shape) != (batch, self.state_size):
            raise ValueError(f"policy: state must have shape ({batch}, {self.state_size}), got {tuple(state.shape)}")
        return timespans, state


# --------------------------------------------------------------------------- counting
def count_trainable(model: nn.Module) -> int:
    """Trainable parameters (requires_grad). Masks are buffers, so they are not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_effective(model: nn.Module) -> int:
    """Trainable parameters that can affect the output: masked-out synapse weights excluded."""
    total = count_trainable(model)
    for module in model.modules():
        if getattr(module, "masked", False) and module.head.weight.requires_grad:
            total -= int((module.head_mask == 0).sum())
    return total


def _cfc_count(config: PolicyConfig) -> int:
    """Analytic trainable count of a CfC policy (equal to count_trainable of the built model)."""
    gated = config.cfc_mode != "pure"

    def layer(inputs: int, hidden: int, backbone_width: Optional[int] = None) -> int:
        width = inputs + hidden if backbone_width is None else backbone_width
        heads = 4 if gated else 1
        return heads * hidden * (width + 1) + (0 if gated else 2 * hidden)

    if config.cfc_wiring == "ncp":
        sizes = Wiring.layer_sizes_for(config.cfc_units, config.cfc_motor_neurons)
        total, inputs = 0, config.feature_size
        for size in sizes:
            total += layer(inputs, size)
            inputs = size
        return total + (sizes[-1] + 1) * COMMAND_SIZE
    units = config.cfc_units
    total, width = 0, config.feature_size + units
    backbone_width = None
    for _ in range(config.cfc_backbone_layers):
        total += (width + 1) * config.cfc_backbone_units
        width = backbone_width = config.cfc_backbone_units
    return total + layer(config.feature_size, units, backbone_width) + (units + 1) * COMMAND_SIZE


def expected_trainable(config: PolicyConfig) -> int:
    """Trainable parameter count of PolicyModel(config), computed without building it."""
    f, h = config.feature_size, config.rnn_hidden_size
    if config.rnn_time_input:
        f += 1
    readout = lambda width: (width + 1) * COMMAND_SIZE  # noqa: E731
    if config.kind == "cfc":
        return _cfc_count(config)
    if config.kind == "lstm":
        return 4 * h * (f + h + 2) + readout(h)
    if config.kind == "gru":
        return 3 * h * (f + h + 2) + readout(h)
    total, width = 0, f
    for hidden in config.mlp_hidden_sizes:
        total += (width + 1) * hidden
        width = hidden
    return total + readout(width)


def policy_for_budget(kind: str, budget: int = 20000, feature_size: int = 32, tolerance: float = 0.05,
                      mlp_layers: int = 2, **overrides: Any) -> PolicyConfig:
    """A PolicyConfig of `kind` whose trainable parameter count is closest to `budget`.

    Sizes one knob: LSTM/GRU hidden size, MLP width (`mlp_layers` equal layers), CfC units
    (ncp: total neurons, motor neurons kept; dense: state size, backbone kept). Raises
    ValueError when nothing lands within ``budget * (1 ± tolerance)``.
    """
    if kind not in KINDS:
        raise ValueError(f"policy_for_budget: kind {kind!r} is not one of {KINDS}")
    base = PolicyConfig(kind=kind, feature_size=feature_size, param_budget=int(budget), **overrides)
    candidates = []
    for size in range(1, 2049):
        if kind in ("lstm", "gru"):
            config = dataclasses.replace(base, rnn_hidden_size=size)
        elif kind == "mlp":
            config = dataclasses.replace(base, mlp_hidden_sizes=(size,) * mlp_layers)
        else:
            if base.cfc_wiring == "ncp" and size <= base.cfc_motor_neurons + 2:
                continue
            config = dataclasses.replace(base, cfc_units=size, wiring=None)
        count = expected_trainable(config)
        candidates.append((abs(count - budget), config))
        if count > budget * 2:
            break
    error, best = min(candidates, key=lambda item: item[0])
    if error > tolerance * budget:
        raise ValueError(f"policy_for_budget: no {kind} size lands within {tolerance:.0%} of {budget} "
                         f"parameters (closest: {expected_trainable(best)})")
    return best
