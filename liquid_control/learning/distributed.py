"""Training across processes, GPUs and nodes: what `train` needs from torch.distributed under torchrun.

`train` calls `setup(config)`. Without torchrun's variables (RANK, WORLD_SIZE) it returns `SINGLE`, one
process, and training runs exactly as it always did. Under `torchrun --nproc_per_node=N [--nnodes=M ...]`
every process gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 `setup`
joins the process group (gloo on the CPU, NCCL on CUDA, or `distributed.backend`) and `train` wraps the
networks in DistributedDataParallel. An incomplete or inconsistent environment is a ConfigError naming the
variable, never a hang or a traceback. See docs/SCALE.md.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from liquid_control.config import ConfigError

T = TypeVar("T")

# The variables torchrun (torch.distributed.run) sets for every process it starts.
_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run. `SINGLE` (world_size 1) makes every method a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (one process)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def sum(self, values: Iterable[float]) -> list[float]:
        """Element-wise sum over ranks, in float64 (every rank gets the same bits)."""
        values = [float(v) for v in values]
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def gather(self, value: T) -> list[T]:
        """Every rank's `value` (a small picklable object), in rank order, on every rank."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def from_main(self, value: T) -> T:
        """Rank 0's `value` on every rank."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    def on_main(self, work: Callable[[], T], what: str) -> T:
        """Run `work` on rank 0 only while the other ranks wait; its result (or its failure) on every rank.

        Rank 0 re-raises its own exception; the others raise a ConfigError (rank 0's error was bad input)
        or a RuntimeError naming `what`, instead of waiting at a collective until the timeout."""
        if not self.active:
            return work()
        outcome: tuple[str, Any]
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", work())
            except Exception as exc:  # noqa: BLE001 -- re-raised below, after the other ranks are told
                error = exc
                kind = "input" if isinstance(exc, (ValueError, OSError)) else "bug"
                outcome = (kind, f"{type(exc).__name__}: {exc}")
        else:
            outcome = ("", None)
        outcome = self.from_main(outcome)
        if error is not None:
            raise error
        kind, payload = outcome
        if kind == "input":
            raise ConfigError(f"{what} failed on rank 0: {payload}")
        if kind == "bug":
            raise RuntimeError(f"{what} failed on rank 0: {payload}")
        return payload

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _device(self) -> torch.device:
        # NCCL collectives need CUDA tensors; gloo takes CPU ones.
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = Distributed()


def _integer(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"torchrun environment: {name}={text!r} is not an integer") from None


def environment(env: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun's variables; None when not started by torchrun.

    ConfigError when the variables are incomplete (e.g. WORLD_SIZE without RANK) or inconsistent."""
    env = os.environ if env is None else env
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    missing = [name for name in _REQUIRED if not env.get(name)]
    world_size = _integer(env, "WORLD_SIZE") if "WORLD_SIZE" in env else None
    if world_size == 1 and "RANK" in env:  # one process: no rendezvous, so no address is needed
        missing = [name for name in missing if name not in ("MASTER_ADDR", "MASTER_PORT")]
    if missing:
        raise ConfigError(f"torchrun environment incomplete: {', '.join(missing)} not set (RANK, WORLD_SIZE, "
                          f"LOCAL_RANK, MASTER_ADDR and MASTER_PORT are all needed; start the run with torchrun, "
                          f"or unset RANK and WORLD_SIZE for one process)")
    rank, local_rank = _integer(env, "RANK"), _integer(env, "LOCAL_RANK")
    assert world_size is not None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0 or local_rank > rank:
        raise ConfigError(f"torchrun environment inconsistent: RANK={rank}, WORLD_SIZE={world_size}, "
                          f"LOCAL_RANK={local_rank} (need 0 <= LOCAL_RANK <= RANK < WORLD_SIZE)")
    return rank, world_size, local_rank


def training_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The torch device for `optim.device`; under torchrun "cuda" (or "auto" on a GPU machine) is the
    rank's LOCAL_RANK GPU. ConfigError when CUDA is asked for and not there."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not cuda:
        raise ConfigError(f"optim.device {name}: CUDA is not available to this torch "
                          f"({torch.__version__}); use optim.device=cpu")
    index = local_rank if name == "cuda" or world_size > 1 else int(name.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"optim.device {name}: GPU {index} asked for (LOCAL_RANK {local_rank}) but this "
                          f"machine has {torch.cuda.device_count()}; start at most that many processes per node")
    return torch.device("cuda", index)


def setup(found: tuple[int, int, int] | None, backend: str, device: torch.device,
          timeout_minutes: float) -> Distributed:
    """Join torchrun's process group when `found` (from `environment()`) says WORLD_SIZE > 1; else SINGLE.
    `backend` "auto" is nccl on CUDA and gloo on the CPU."""
    if found is None or found[1] == 1:
        return SINGLE
    rank, world_size, local_rank = found
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("distributed.backend nccl needs the training on CUDA (optim.device cuda); "
                          "use gloo to train on the CPU")
    available = {"gloo": torch.distributed.is_gloo_available(), "nccl": torch.distributed.is_nccl_available()}
    if not available.get(backend, False):
        raise ConfigError(f"distributed.backend {backend} is not available in this torch ({torch.__version__})")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        torch.distributed.init_process_group(backend, rank=rank, world_size=world_size,
                                             timeout=dt.timedelta(minutes=timeout_minutes))
    except (RuntimeError, ValueError) as exc:  # rendezvous: address unreachable, port taken, ...
        raise ConfigError(f"could not join the torchrun process group as rank {rank} of {world_size} "
                          f"({backend}): {exc}") from exc
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def weights_digest(*modules: torch.nn.Module) -> str:
    """SHA-256 of the modules' parameters and buffers (names, shapes, bytes): equal digests, equal weights."""
    digest = hashlib.sha256()
    for module in modules:
        for name, value in module.state_dict().items():
            data = value.detach().to("cpu").contiguous()
            digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
