"""Where independent jobs (episodes, training runs) run: in this process, a local process pool, or Ray.

All three run the *same* job function over the same job tuples and yield ``(index, result)`` as jobs
finish, so the callers (collect, evaluate, sweep) have one code path and the same results whichever
executor they use. `setup(*setup_args)` runs once per worker process before its first job (evaluation
loads the model there): the process pool passes it as the pool initializer; on Ray the arguments go into
the object store once and each worker process runs `setup` the first time it sees them, so a model is
loaded once per worker process, not once per episode.

Ray is optional and imported only by `RayExecutor` (`--ray`): ``pip install ray==2.60.0``. A worker
process that dies (killed, out of memory, a lost node) is retried by Ray up to `max_retries` times;
a job that *raises* is not retried (bad input stays bad) and its own exception reaches the caller,
exactly as with the other executors.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

RAY_VERSION = "2.60.0"  # requirements.txt pins this
RAY_MISSING = f"--ray needs Ray: pip install ray=={RAY_VERSION}"
# A local Ray started for one run binds to loopback only: its GCS, raylet and workers talk over 127.0.0.1,
# never over the machine's network interface.
LOCAL_NODE_IP = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0  # a bad address fails in seconds (ray.init itself retries for minutes)

Job = Any
Setup = Callable[..., None] | None


class SerialExecutor:
    """Jobs one after another in this process (`--workers 1`)."""

    name = "serial"
    remote = False

    def run(self, fn: Callable[[Job], Any], jobs: Sequence[Job], setup: Setup = None,
            setup_args: tuple = ()) -> Iterator[tuple[int, Any]]:
        # The setups pin torch to 1 thread (one worker per core); here that is the caller's own process
        # (a training collecting its DAgger episodes), so its thread count is put back afterwards.
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        try:
            if setup is not None and jobs:
                setup(*setup_args)
            for index, job in enumerate(jobs):
                yield index, fn(job)
        finally:
            if threads is not None:
                torch.set_num_threads(threads)


class ProcessExecutor:
    """A local process pool of `workers` processes; results as they complete."""

    name = "process pool"
    remote = False

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def run(self, fn: Callable[[Job], Any], jobs: Sequence[Job], setup: Setup = None,
            setup_args: tuple = ()) -> Iterator[tuple[int, Any]]:
        if not jobs:
            return
        with ProcessPoolExecutor(max_workers=self.workers, initializer=setup, initargs=setup_args) as pool:
            futures = {pool.submit(fn, job): index for index, job in enumerate(jobs)}
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=futures.__getitem__):
                        yield futures[future], future.result()
            finally:  # an error or a consumer that stops early: do not fly the remaining episodes
                for future in futures:
                    future.cancel()


def local_executor(workers: int) -> SerialExecutor | ProcessExecutor:
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers)


@dataclass(frozen=True)
class ShippedFile:
    """A file's bytes sent along with the jobs, for workers on other machines that cannot read the driver's
    disk (a model file: a few hundred kB). `local_path()` in the worker writes it once per process."""

    name: str
    data: bytes

    def local_path(self) -> str:
        digest = hashlib.sha256(self.data).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / f"liquid_control_shipped_{os.getpid()}" / digest
        path = folder / self.name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(self.data)
            os.replace(tmp, path)
        return str(path)


def ship(path: str | os.PathLike | None, executor: Any) -> "str | ShippedFile | None":
    """`path` as a worker of `executor` can open it: the path itself for local executors, the bytes for Ray."""
    if path is None or not getattr(executor, "remote", False):
        return None if path is None else str(path)
    return ShippedFile(Path(path).name, Path(path).read_bytes())


def local_path(source: "str | ShippedFile | None") -> str | None:
    """In a worker: a path to open for what `ship` gave."""
    return source.local_path() if isinstance(source, ShippedFile) else source


# --------------------------------------------------------------------------- Ray
class RayError(ValueError):
    """Ray cannot be used as asked (not installed, a bad address): a setup problem, reported in one line."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayError(RAY_MISSING) from None
    return ray


def start_local_ray(ray: Any, num_cpus: int | None, **options: Any) -> None:
    """ray.init for a Ray that lives only for this run, on loopback.

    Ray replaces 127.0.0.1 with the machine's interface address unless it believes it is not a cluster
    (its switch for Windows/macOS laptops); a run-local Ray is not one, so its processes are told so
    (the environment, inherited by the raylet and the workers) and so is this one (the module constant,
    read when Ray looks up the node address). Without that internal constant Ray picks as it always does."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, _node_ip_address=LOCAL_NODE_IP,
             **options)


def check_address(address: str) -> str:
    """A Ray cluster address: ``auto``, ``HOST:PORT`` (the head's GCS, `ray start --head` prints it) or
    ``ray://HOST:PORT`` (Ray Client). A HOST:PORT must accept a TCP connection within a few seconds:
    ray.init would otherwise retry an unreachable address for minutes."""
    text = address.strip()
    if text == "auto":
        return text
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise RayError(f"--ray {address!r}: expected auto, HOST:PORT or ray://HOST:PORT "
                         "(e.g. 10.0.0.5:6379, the address `ray start --head` prints)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ConnectionError(f"--ray {address}: no Ray cluster reachable there ({err})") from None
    return text


_WORKER_SETUP: dict[str, str] = {}  # in a Ray worker process: id of the setup it has run


def _ray_call(fn: Callable[[Job], Any], setup: Setup, setup_box: list, job: Job) -> Any:
    """Body of every Ray task: run the setup once per worker process (keyed by its object id), then the job.
    `setup_box` holds the ObjectRef in a list so that Ray passes the reference, not the value."""
    if setup is not None:
        key = setup_box[0].hex()
        if _WORKER_SETUP.get("key") != key:
            import ray

            setup(*ray.get(setup_box[0]))
            _WORKER_SETUP["key"] = key
    return fn(job)


class RayExecutor:
    """Jobs as Ray tasks on a cluster (or the local Ray `ray_session` started).

    num_cpus: CPUs each task declares, a number or a function of the job (training tasks declare their
    optim.threads), so Ray runs as many at once as the cluster's CPUs allow. At most `window` tasks are in flight, so the driver's memory for
    finished results stays bounded however many jobs there are."""

    name = "ray"
    remote = True

    def __init__(self, num_cpus: float | Callable[[Job], float] = 1, max_retries: int = 3,
                 window: int | None = None) -> None:
        self.ray = import_ray()
        if not self.ray.is_initialized():
            raise RayError("RayExecutor: call ray_session() (or ray.init) first")
        self.num_cpus, self.max_retries = num_cpus, max_retries
        cluster_cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.window = window or max(4, 2 * cluster_cpus)

    def run(self, fn: Callable[[Job], Any], jobs: Sequence[Job], setup: Setup = None,
            setup_args: tuple = ()) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        if not jobs:
            return
        task = ray.remote(_ray_call)
        cpus = self.num_cpus if callable(self.num_cpus) else (lambda job: self.num_cpus)
        box = [ray.put(tuple(setup_args))] if setup is not None else [None]
        queue = iter(enumerate(jobs))
        # retry_exceptions=False: Ray retries a task whose worker died, never one that raised.
        in_flight: dict[Any, int] = {}

        def submit(count: int) -> None:
            for index, job in _take(queue, count):
                options = task.options(num_cpus=cpus(job), max_retries=self.max_retries, retry_exceptions=False)
                in_flight[options.remote(fn, setup, box, job)] = index

        submit(self.window)
        try:
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                index = in_flight.pop(done[0])
                yield index, self._result(done[0])
                submit(1)
        finally:  # an error or a consumer that stops early (Ctrl-C): stop the tasks still in flight
            for ref in in_flight:
                # force: end the worker process. A polite cancel raises KeyboardInterrupt inside the task,
                # which can land in the middle of an import (torch) and leave that worker unusable.
                ray.cancel(ref, force=True)

    def _result(self, ref: Any) -> Any:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            # The job raised: the caller sees that exception, as with the other executors.
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from err  # err carries the worker's traceback
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as err:
            raise RuntimeError(f"a Ray task failed {self.max_retries + 1} times (its worker process or node "
                               f"died each time): {type(err).__name__}") from err


def _take(iterator: Iterator, count: int) -> Iterable:
    for _ in range(count):
        try:
            yield next(iterator)
        except StopIteration:
            return


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for one command: `address` None starts a local Ray with `num_cpus` CPUs (shut down afterwards);
    an address connects to that cluster (see check_address). An already running Ray in this process (a
    test's) is used as is and left running."""
    ray = import_ray()
    if address is not None:
        address = check_address(address)
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        if num_cpus is not None and num_cpus < 1:
            raise RayError(f"--ray: the local Ray needs >= 1 CPU, got {num_cpus}")
        start_local_ray(ray, num_cpus)
    else:
        # Workers on other nodes need the project installed (docs/SCALE.md); working_dir is not shipped.
        ray.init(address=address, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def executor_for(workers: int, ray_address: str | None | bool = False, num_cpus: float = 1) -> Iterator[Any]:
    """The executor a command asked for: `ray_address` False -> local (serial or process pool);
    None -> a local Ray of `workers` CPUs; an address -> that cluster."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if ray_address is False:
        yield local_executor(workers)
        return
    with ray_session(None if ray_address in (None, True) else str(ray_address), workers):
        yield RayExecutor(num_cpus=num_cpus)


def add_ray_argument(parser: Any, what: str = "episodes") -> None:
    """`--ray [ADDRESS]` for a command: absent -> False (local workers), bare -> None (a local Ray for the
    run, as many CPUs as --workers), a value -> that cluster's address."""
    parser.add_argument("--ray", nargs="?", const=None, default=False, metavar="ADDRESS",
                        help=f"run the {what} as Ray tasks: bare --ray starts a local Ray with --workers CPUs for "
                             f"this run; --ray HOST:PORT (or ray://HOST:PORT, auto) uses that cluster. "
                             f"Needs ray=={RAY_VERSION} (docs/SCALE.md)")
