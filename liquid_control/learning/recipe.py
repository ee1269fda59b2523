"""Training recipes: the YAML file `liquid-control train --config` reads (config/train_*.yaml).

Every key is a field of the dataclasses below (unknown keys are errors naming the key, via
`liquid_control.config.config_from_dict`); `load_config` reads a file with dotted overrides
(`--set optim.epochs=2`) and checks the values.

A recipe may start with ``extends: <file>`` (a path relative to the recipe's folder): it is that file with
the keys this one names replaced, section by section at every depth, so a baseline recipe names only
what differs from the shipped one (config/train_gru.yaml: the model kind and the output paths).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liquid_control.config import ConfigError, config_from_dict
from liquid_control.learning.augment import AugmentConfig
from liquid_control.simulation.expert import ExpertConfig
from liquid_control.util.extends import extends_chain
from liquid_control.util.safe_input import InputError, load_yaml_file, short_repr

# Command scale (m/s, m/s, m/s, rad/s): the expert's limits, so a scaled command is within [-1, 1].
DEFAULT_COMMAND_SCALE = tuple(float(v) for v in ExpertConfig().limits())
# torch.distributed backends train supports ("auto" picks nccl on CUDA, gloo on the CPU).
DISTRIBUTED_BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class CollectSection:
    """Collect data into data.sources[0] before training (skipped episodes that exist already)."""

    suite: str = "train"
    episodes: int | None = None  # per scenario; None: the suite's counts
    workers: int = 2
    seed: int = 0
    perturbed_fraction: float = 0.7
    duration_s: float | None = None
    decoy_fraction: float = 0.0  # share of perturbed episodes that detour to distractors (CollectConfig)


@dataclass
class DataSection:
    sources: list[str] = field(default_factory=lambda: ["runs/data/sim_train"])
    collect: CollectSection | None = None
    validation_fraction: float = 0.1
    image_topic: str | None = None  # for rosbag2 sources (None: auto-detect)
    command_topic: str | None = None
    frame_period_s: float = 1.0 / 30.0  # nominal camera frame period (s); timespans are divided by it
    # Relative sampling weight of frames by episode task ("chase", "fly_to_target", ...); 1 when absent.
    task_weights: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelSection:
    kind: str = "cfc"
    param_budget: int = 20000
    policy: dict[str, Any] = field(default_factory=dict)  # extra PolicyConfig fields for policy_for_budget
    perception: dict[str, Any] = field(default_factory=lambda: {"height": 48, "width": 64})
    command_scale: tuple[float, ...] = DEFAULT_COMMAND_SCALE
    # A model file to start from (fine-tuning, e.g. on real-drone bags); its networks must match the
    # ones this section builds. None: random initialisation.
    init_from: str | None = None


@dataclass
class OptimSection:
    epochs: int = 10
    batch_size: int = 16
    sequence_length: int = 32
    learning_rate: float = 3e-3
    final_learning_rate: float = 1e-4
    # Linear ramp of the learning rate from 0 over this many epochs before the cosine decay (0 = off):
    # at the full rate from the first step, some seeds sit at the mean command for several epochs.
    warmup_epochs: float = 0.0
    # Restart a run still on the mean-command plateau after this many epochs (0 = never): its best validation
    # loss so far is above stall_ratio x the loss of always sending the training set's mean command. Each restart
    # draws new initial weights (from seed and the restart number) and starts the schedule over; after
    # max_restarts the run goes on as it is. The epochs spent count towards max_minutes. A run that starts
    # from model.init_from (fine-tuning) never restarts.
    stall_check_epoch: int = 0
    stall_ratio: float = 0.8
    max_restarts: int = 2
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    random_start_prob: float = 0.5  # a new stream starts mid-episode (zero state) with this probability
    burn_in_frames: int = 0  # such a stream's first frames score no loss while its state warms up
    max_minutes: float | None = None  # stop early (keeping the best epoch) after this much training time
    threads: int = 2  # torch threads per process (under torchrun: per rank)
    # "cpu", "cuda", "cuda:N" or "auto" (CUDA when available). Under torchrun "cuda" means this rank's
    # LOCAL_RANK GPU. The shipped recipes say "cpu", so a machine with a GPU trains as before unless asked.
    device: str = "cpu"
    aux_weight: float = 0.0  # weight of the auxiliary target-geometry loss on the features (0 = off)
    # Weight of the auxiliary target-velocity loss on the policy state (0 = off): a linear head reads the
    # target's velocity (heading frame, m/s) from the state after every frame, so the state must carry it.
    motion_weight: float = 0.0


@dataclass
class DaggerSection:
    rounds: int = 0
    suite: str = "train"
    episodes: int = 5  # per scenario and round
    epochs: int = 2  # training epochs after each round
    workers: int = 2
    seed: int = 100000  # seeds of DAgger episodes start here (disjoint from the expert data)
    sample_weight: float = 1.0  # relative sampling weight of the DAgger episodes' frames


# How the kept epoch is chosen (learning/selection.py).
SELECTION_METRICS = ("val_loss", "closed_loop")
SELECTION_SEED = 500_000  # closed-loop selection flies seeds from here: not data (0), DAgger (100,000), evaluation (10**6)


@dataclass
class SelectionSection:
    """Which epoch's weights are kept (the model file) and flown by DAgger rounds.

    "val_loss": the lowest validation loss. "closed_loop": after every epoch from `from_epoch` on, the
    candidate flies `episodes` episodes per scenario of `suite` through the deploy loop (seeds from `seed`);
    the highest success rate wins, ties go to the lower validation loss. The validation loss does not rank
    closed-loop chase (docs/RESULTS.md, round 3), which is why this exists."""

    metric: str = "val_loss"
    suite: str = "train"
    episodes: int = 10  # per scenario
    seed: int = SELECTION_SEED
    workers: int = 2
    from_epoch: int = 1  # earlier epochs are not candidates (cheaper: the first epochs rarely win)
    duration_s: float | None = None  # episode length (s); None: each scenario's own


@dataclass
class DistributedSection:
    """Settings used only when `train` runs under torchrun (learning/distributed.py, docs/SCALE.md)."""

    backend: str = "auto"  # "auto": nccl when training on CUDA, gloo on the CPU; or "gloo" / "nccl"
    # How long a rank waits for the others at a collective (rank 0 collecting data or flying a DAgger
    # round while the others wait at a barrier is the longest); past it the run fails instead of hanging.
    timeout_minutes: float = 120.0


@dataclass
class OutputSection:
    model: str = "runs/model.safetensors"
    run_dir: str = "runs/train"


@dataclass
class TrainConfig:
    name: str = "cfc"
    seed: int = 0
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dagger: DaggerSection = field(default_factory=DaggerSection)
    # The expert that flies and labels the collected and DAgger episodes (simulation/expert.py); the default
    # is ExpertConfig()'s, the labels of the models shipped before round 5 (the shipped recipe sets its own).
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    selection: SelectionSection = field(default_factory=SelectionSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_EXTENDS = 8  # the shipped recipes extend one level; a longer chain is a mistake


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    try:  # bounded: size, UTF-8, nesting depth and alias expansion (util.safe_input)
        data = load_yaml_file(path) or {}
    except InputError as exc:
        raise ConfigError(f"training config {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"training config {path}: the top level must be a mapping of sections, "
                          f"got {short_repr(data)}")
    return data


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys replaced; a mapping over a mapping merges key by key."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        merged[key] = _deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def _read_recipe(path: Path) -> tuple[dict[str, Any], str]:
    """The recipe's mapping with its `extends` chain merged in, and how errors name it."""
    def base_path(file: Path, base: Any) -> Path:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"training config {file}: extends must name another recipe file, got "
                              f"{short_repr(base)}")
        return file.parent / base

    chain = [data for _, data in extends_chain(path, _read_mapping, base_path,
                                               lambda file, message: ConfigError(f"training config {file}: {message}"),
                                               MAX_EXTENDS)]
    merged: dict[str, Any] = {}
    for data in reversed(chain):
        merged = _deep_merge(merged, {k: v for k, v in data.items() if k != "extends"})
    bases = [data["extends"] for data in chain[:-1]]
    return merged, str(path) if not bases else f"{path} (extends {' -> '.join(bases)})"


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe (and the recipes it `extends`); `overrides` maps dotted keys
    (``"optim.epochs"``) to values."""
    path = Path(path)
    data, where = _read_recipe(path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"training config {path}: --set {dotted}: {key} is not a section")
        node[leaf] = value
    config = config_from_dict(TrainConfig, data, where)
    _check(config, where)
    return config


def _check(config: TrainConfig, where: str) -> None:
    o = config.optim
    problems = []
    if o.epochs < 1 or o.batch_size < 1 or o.sequence_length < 2:
        problems.append("optim: epochs and batch_size must be >= 1 and sequence_length >= 2")
    if not (o.learning_rate > 0 and o.final_learning_rate > 0):
        problems.append("optim: learning rates must be > 0")
    if not 0.0 <= o.warmup_epochs <= o.epochs:
        problems.append(f"optim.warmup_epochs must be in [0, optim.epochs], got {o.warmup_epochs}")
    if o.stall_check_epoch < 0:  # one beyond the last epoch never fires (a short run of the recipe)
        problems.append(f"optim.stall_check_epoch must be >= 0, got {o.stall_check_epoch}")
    if not 0.0 < o.stall_ratio <= 1.0:
        problems.append(f"optim.stall_ratio must be in (0, 1], got {o.stall_ratio}")
    if not 0 <= o.max_restarts <= 10:
        problems.append(f"optim.max_restarts must be in [0, 10], got {o.max_restarts}")
    if not 0 <= o.burn_in_frames < o.sequence_length * 100:
        problems.append("optim.burn_in_frames must be >= 0 and shorter than 100 sequences")
    if not all(isinstance(w, (int, float)) and 0.0 <= w < 1e3 for w in config.data.task_weights.values()) or (
            config.data.task_weights and not any(w > 0 for w in config.data.task_weights.values())):
        problems.append("data.task_weights: every weight must be a number in [0, 1000), not all 0")
    if not 0.0 < config.dagger.sample_weight < 1e3:
        problems.append("dagger.sample_weight must be in (0, 1000)")
    sel = config.selection
    if sel.metric not in SELECTION_METRICS:
        problems.append(f"selection.metric must be one of {list(SELECTION_METRICS)}, got {sel.metric!r}")
    if not (1 <= sel.episodes <= 1000 and 1 <= sel.workers <= 256 and 0 <= sel.seed < 2**31):
        problems.append("selection: episodes must be in [1, 1000], workers in [1, 256], seed in [0, 2**31)")
    if sel.duration_s is not None and not 0.1 <= sel.duration_s <= 3600:
        problems.append("selection.duration_s must be in [0.1, 3600] s")
    if sel.metric == "closed_loop" and not 1 <= sel.from_epoch <= o.epochs + config.dagger.rounds * config.dagger.epochs:
        problems.append("selection.from_epoch must name an epoch the recipe runs (1 .. epochs + DAgger epochs)")
    if o.threads < 1:
        problems.append("optim.threads must be >= 1")
    if not 0.0 <= o.aux_weight < 1e3:
        problems.append("optim.aux_weight must be in [0, 1000)")
    if not 0.0 <= o.motion_weight < 1e3:
        problems.append("optim.motion_weight must be in [0, 1000)")
    if not (o.device in ("cpu", "cuda", "auto") or (o.device.startswith("cuda:") and o.device[5:].isdigit())):
        problems.append(f"optim.device must be cpu, cuda, cuda:N or auto, got {o.device!r}")
    if config.distributed.backend not in DISTRIBUTED_BACKENDS:
        problems.append(f"distributed.backend must be one of {list(DISTRIBUTED_BACKENDS)}, "
                        f"got {config.distributed.backend!r}")
    if not config.distributed.timeout_minutes > 0:
        problems.append("distributed.timeout_minutes must be > 0")
    if not config.data.sources:
        problems.append("data.sources must list at least one shard directory, shard or bag")
    if len(config.model.command_scale) != 4 or not all(v > 0 for v in config.model.command_scale):
        problems.append("model.command_scale must be 4 positive numbers")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
