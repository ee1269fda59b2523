"""Neural Circuit Policy (NCP) wiring: sensory -> inter -> command -> motor.

A `Wiring` is the fixed sparse connectivity of a wired CfC. It holds four
polarity matrices (entries -1, 0, +1; 0 = no synapse):

- ``sensory_to_inter``   (input_size, inter)
- ``inter_to_command``   (inter, command)
- ``command_to_command`` (command, command)   recurrent command synapses
- ``command_to_motor``   (command, motor)

The hidden state of a wired CfC is laid out ``[inter | command | motor]`` (the
same order as ncps 1.0.1's WiredCfCCell) and the motor neurons are its output.

`Wiring.auto` chooses layer sizes the way ncps's AutoNCP does (command =
40% of the non-motor neurons; fan-outs scale with 1 - sparsity) and draws the
synapses with its own seeded generator, so the same arguments always give the
same wiring. Unlike ncps's ``get_config`` (which returns neuron id lists that
its own ``from_config`` cannot read back), ``to_dict``/``from_dict`` store
every synapse, so a round trip is exact whatever produced the wiring.

Mask semantics (``layer_input_masks``) follow ncps's WiredCfCCell, the
numerical oracle: each layer sees the previous layer through the polarity
pattern (|polarity|) and its OWN state densely. The recurrent command synapses
are therefore part of the graph (drawn, counted, round-tripped) but do not
restrict the command layer's self-input, exactly as in ncps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LAYER_NAMES = ("inter", "command", "motor")


def _polarity_matrix(value: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    matrix = np.asarray(value, dtype=np.int64)
    if matrix.shape != shape:
        raise ValueError(f"wiring: {name} has shape {matrix.shape}, expected {shape}")
    if not np.isin(matrix, (-1, 0, 1)).all():
        raise ValueError(f"wiring: {name} entries must be -1, 0 or +1")
    return matrix.astype(np.int8)


@dataclass(frozen=True, eq=False)
class Wiring:
    """Fixed NCP connectivity (see module docstring). Construct with `auto` or `from_dict`."""

    input_size: int
    inter_neurons: int
    command_neurons: int
    motor_neurons: int
    sensory_to_inter: np.ndarray
    inter_to_command: np.ndarray
    command_to_command: np.ndarray
    command_to_motor: np.ndarray
    # How it was generated (informational; the matrices above are the truth).
    sparsity_level: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("input_size", "inter_neurons", "command_neurons", "motor_neurons"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"wiring: {name} must be a positive integer, got {value!r}")
        i, c, m, s = self.inter_neurons, self.command_neurons, self.motor_neurons, self.input_size
        # Frozen dataclass: normalise the matrices in place via object.__setattr__.
        for name, shape in (("sensory_to_inter", (s, i)), ("inter_to_command", (i, c)),
                            ("command_to_command", (c, c)), ("command_to_motor", (c, m))):
            object.__setattr__(self, name, _polarity_matrix(getattr(self, name), shape, name))
        # Every neuron must receive input from the layer before, or it is dead weight.
        for name, matrix in (("sensory_to_inter", self.sensory_to_inter),
                             ("inter_to_command", self.inter_to_command),
                             ("command_to_motor", self.command_to_motor)):
            if not (matrix != 0).any(axis=0).all():
                raise ValueError(f"wiring: some neurons receive no synapse in {name}")

    # ----------------------------------------------------------------- sizes
    @property
    def units(self) -> int:
        """Total neurons = hidden state size."""
        return self.inter_neurons + self.command_neurons + self.motor_neurons

    @property
    def output_size(self) -> int:
        return self.motor_neurons

    @property
    def layer_sizes(self) -> list[int]:
        """Neurons per layer, in state order [inter, command, motor]."""
        return [self.inter_neurons, self.command_neurons, self.motor_neurons]

    def synapse_count(self, include_recurrent: bool = True) -> int:
        count = int((self.sensory_to_inter != 0).sum() + (self.inter_to_command != 0).sum()
                    + (self.command_to_motor != 0).sum())
        if include_recurrent:
            count += int((self.command_to_command != 0).sum())
        return count

    # ----------------------------------------------------------------- masks
    def layer_input_masks(self) -> list[np.ndarray]:
        """Per-layer 0/1 masks of shape (layer_neurons, layer_inputs + layer_neurons), float32.

        Row = receiving neuron, columns = [previous layer (or sensory) | own state];
        this is the orientation of an ``nn.Linear`` weight over ``cat([input, h])``.
        """
        feeds = [self.sensory_to_inter, self.inter_to_command, self.command_to_motor]
        masks = []
        for feed in feeds:
            own = feed.shape[1]
            mask = np.concatenate([np.abs(feed).T, np.ones((own, own), dtype=np.int8)], axis=1)
            masks.append(mask.astype(np.float32))
        return masks

    # ------------------------------------------------------------ generation
    @classmethod
    def auto(cls, input_size: int, units: int, output_size: int, sparsity_level: float = 0.5,
             seed: int = 22222) -> "Wiring":
        """AutoNCP-style wiring from a total neuron count.

        Args:
            input_size: number of sensory inputs (features).
            units: total neurons (inter + command + motor); must exceed output_size + 2.
            output_size: motor neurons.
            sparsity_level: 0.1 (dense) .. 0.9 (sparse); fraction of possible feed-forward
                synapses left out.
            seed: seed of the generator; same arguments -> identical wiring.
        """
        if not 1 <= output_size < units - 2:
            raise ValueError(f"wiring: output_size must be in [1, units-2) (got units={units}, "
                             f"output_size={output_size})")
        if not 0.1 <= sparsity_level <= 0.9:
            raise ValueError(f"wiring: sparsity_level must be in [0.1, 0.9], got {sparsity_level}")
        if input_size < 1:
            raise ValueError(f"wiring: input_size must be positive, got {input_size}")
        density = 1.0 - sparsity_level
        inter, command, _ = cls.layer_sizes_for(units, output_size)
        sensory_fanout = max(int(inter * density), 1)
        inter_fanout = max(int(command * density), 1)
        recurrent = max(int(command * density * 2), 1)
        motor_fanin = max(int(command * density), 1)

        rng = np.random.default_rng(seed)
        signs = np.array([-1, 1], dtype=np.int8)

        def fan_out(n_src: int, n_dst: int, fanout: int) -> np.ndarray:
            """Each source gets `fanout` distinct targets; uncovered targets get sources."""
            matrix = np.zeros((n_src, n_dst), dtype=np.int8)
            for src in range(n_src):
                dests = rng.choice(n_dst, size=fanout, replace=False)
                matrix[src, dests] = rng.choice(signs, size=fanout)
            fanin = int(np.clip(n_src * fanout // n_dst, 1, n_src))
            for dst in np.flatnonzero(~(matrix != 0).any(axis=0)):
                srcs = rng.choice(n_src, size=fanin, replace=False)
                matrix[srcs, dst] = rng.choice(signs, size=fanin)
            return matrix

        sensory_to_inter = fan_out(input_size, inter, sensory_fanout)
        inter_to_command = fan_out(inter, command, inter_fanout)
        command_to_command = np.zeros((command, command), dtype=np.int8)
        for _ in range(recurrent):
            src, dst = rng.integers(0, command, size=2)
            command_to_command[src, dst] = rng.choice(signs)
        # Motor layer is specified by fan-IN: transpose a fan-out draw from motors' view.
        command_to_motor = fan_out(output_size, command, motor_fanin).T.copy()
        # Every command neuron reaches a motor (fan_out above guarantees it), and every
        # motor has exactly motor_fanin inputs.
        return cls(input_size, inter, command, output_size, sensory_to_inter, inter_to_command,
                   command_to_command, command_to_motor, sparsity_level=float(sparsity_level),
                   seed=int(seed))

    @staticmethod
    def layer_sizes_for(units: int, output_size: int) -> list[int]:
        """[inter, command, motor] neuron counts `auto` uses: command = 40% of the non-motor
        neurons (at least 1), as ncps's AutoNCP."""
        non_motor = units - output_size
        command = max(int(0.4 * non_motor), 1)
        return [non_motor - command, command, output_size]

    @classmethod
    def from_adjacency(cls, sensory_adjacency: np.ndarray, adjacency: np.ndarray,
                       inter_ids: list[int], command_ids: list[int], motor_ids: list[int]) -> "Wiring":
        """Build from whole-graph adjacency matrices (e.g. ncps's ``sensory_adjacency_matrix``
        (inputs, units) and ``adjacency_matrix`` (units, units), src -> dst) and the neuron ids
        of each layer. Used to reproduce an ncps wiring exactly."""
        sensory_adjacency = np.asarray(sensory_adjacency)
        adjacency = np.asarray(adjacency)
        return cls(
            input_size=int(sensory_adjacency.shape[0]),
            inter_neurons=len(inter_ids), command_neurons=len(command_ids), motor_neurons=len(motor_ids),
            sensory_to_inter=sensory_adjacency[:, inter_ids],
            inter_to_command=adjacency[np.ix_(inter_ids, command_ids)],
            command_to_command=adjacency[np.ix_(command_ids, command_ids)],
            command_to_motor=adjacency[np.ix_(command_ids, motor_ids)],
        )

    # ----------------------------------------------------------- round trip
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description holding every synapse (exact round trip)."""
        return {
            "type": "ncp",
            "input_size": int(self.input_size),
            "inter_neurons": int(self.inter_neurons),
            "command_neurons": int(self.command_neurons),
            "motor_neurons": int(self.motor_neurons),
            "sensory_to_inter": self.sensory_to_inter.tolist(),
            "inter_to_command": self.inter_to_command.tolist(),
            "command_to_command": self.command_to_command.tolist(),
            "command_to_motor": self.command_to_motor.tolist(),
            "sparsity_level": self.sparsity_level,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Wiring":
        if not isinstance(data, dict) or data.get("type") != "ncp":
            raise ValueError("wiring: expected a dict with type 'ncp' (from Wiring.to_dict)")
        fields = ("input_size", "inter_neurons", "command_neurons", "motor_neurons", "sensory_to_inter",
                  "inter_to_command", "command_to_command", "command_to_motor")
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"wiring: dict lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in fields},
                   sparsity_level=data.get("sparsity_level"), seed=data.get("seed"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wiring):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable numpy contents: not hashable
