"""Bring up the node graph here, without `ros2 launch`: one process per node, clean shutdown.

Each node runs as ``python -m liquid_control.nodes.<module> --ros-args --params-file
config/<node>.yaml -p use_sim_time:=... [-p name:=value] [-r from:=to]`` — the same
YAML files the launch files use — in its own process group, with its output in
``<log_dir>/<name>.log``.

Shutdown (`stop`, leaving a `with` block, Ctrl-C, or SIGTERM inside
`terminate_as_interrupt`): SIGTERM to every node's process group (the nodes shut
down cleanly on it), then SIGKILL to any group still alive after
`terminate_timeout_s`. Children also get SIGTERM from the kernel if this process dies
without cleaning up (Linux PR_SET_PDEATHSIG), so no node outlives its runner. (That signal
follows the *thread* that started the node: call `start` from a thread that lives as long as
the graph, normally the main thread.)
The module imports no ROS; the nodes do, in their own processes.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import yaml

from liquid_control.interfaces.topics import CMD_VEL
from liquid_control.util.paths import share_path

ParameterValue = Union[bool, int, float, str, Sequence[str]]
_PR_SET_PDEATHSIG = 1


class NodeExited(RuntimeError):
    """A node process ended while the graph was supposed to be running; the message has its log tail."""


@dataclass(frozen=True)
class NodeLaunch:
    """One node process.

    name: label for logs and errors; module: file in liquid_control/nodes (e.g. "sim_node");
    params_file: ROS parameter YAML (None: the node's defaults); parameters: `-p` overrides
    applied after the file; remappings: topic/service renames `from -> to`.
    """

    name: str
    module: str
    params_file: Optional[Path] = None
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    remappings: Mapping[str, str] = field(default_factory=dict)


def format_parameter(value: ParameterValue) -> str:
    """A `-p name:=VALUE` value that rcl's YAML parser reads back with the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eEn") else text + ".0"
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, str) for v in value):
            raise TypeError(f"list parameter values must be non-empty lists of strings, got {value!r}")
        return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in value) + "]"
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value and "\n" not in value
        except yaml.YAMLError:
            plain = False
        return value if plain and value else "'" + value.replace("'", "''") + "'"
    raise TypeError(f"parameter value {value!r} must be bool, int, float, str or a list of str")


def node_command(node: NodeLaunch, use_sim_time: bool, python: str = sys.executable) -> list[str]:
    """argv that starts `node` as its own Python process."""
    argv = [python, "-m", f"liquid_control.nodes.{node.module}", "--ros-args"]
    if node.params_file is not None:
        argv += ["--params-file", str(node.params_file)]
    if "use_sim_time" not in node.parameters:  # a node may opt out, e.g. the bag player that makes the clock
        argv += ["-p", f"use_sim_time:={format_parameter(bool(use_sim_time))}"]
    for name, value in node.parameters.items():
        argv += ["-p", f"{name}:={format_parameter(value)}"]
    for source, target in node.remappings.items():
        argv += ["-r", f"{source}:={target}"]
    return argv


try:  # resolved here, not in the forked child: dlopen after fork in a threaded process can deadlock
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not Linux/glibc: rely on stop()
    _prctl = None


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies (Linux only)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class NodeGraph:
    """Start, watch and stop a set of node processes. Use as a context manager."""

    def __init__(self, nodes: Sequence[NodeLaunch], log_dir: Union[str, Path], use_sim_time: bool = False,
                 env: Optional[Mapping[str, str]] = None, terminate_timeout_s: float = 10.0,
                 python: str = sys.executable) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        for node in nodes:
            if node.params_file is not None and not Path(node.params_file).is_file():
                raise FileNotFoundError(f"parameter file of node {node.name!r} not found: {node.params_file}")
        self.nodes = list(nodes)
        self.log_dir = Path(log_dir)
        self.use_sim_time = use_sim_time
        self.env = dict(os.environ if env is None else env)
        self.terminate_timeout_s = terminate_timeout_s
        self.python = python
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, object] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self) -> None:
        """Start every node (in order). Any failure stops the ones already started."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.nodes:
                log = open(self.log_path(node.name), "wb")
                self._logs[node.name] = log
                self.processes[node.name] = subprocess.Popen(
                    node_command(node, self.use_sim_time, self.python), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self.env, start_new_session=True,  # own process group
                    preexec_fn=_die_with_parent)
        except BaseException:
            self.stop()
            raise

    def exited(self) -> dict[str, int]:
        """name -> exit code of every node process that has ended."""
        return {name: code for name, proc in self.processes.items() if (code := proc.poll()) is not None}

    def check(self) -> None:
        """Raise NodeExited (with its log tail) if any node has ended."""
        for name, code in self.exited().items():
            raise NodeExited(f"node {name!r} exited with code {code}; last log lines "
                             f"({self.log_path(name)}):\n{log_tail(self.log_path(name))}")

    def stop(self) -> dict[str, int]:
        """SIGTERM every process group, SIGKILL what is left after the timeout; name -> exit code."""
        for proc in self.processes.values():
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.terminate_timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.processes.values():
            # Kill the whole group even when the leader exited: a node's own children must not linger.
            self._signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        for log in self._logs.values():
            log.close()
        codes = {name: proc.returncode for name, proc in self.processes.items()}
        return codes

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid

    def __enter__(self) -> "NodeGraph":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class InterruptGuard:
    """Context manager: within the block SIGTERM and SIGINT raise KeyboardInterrupt, so `with NodeGraph(...)`
    cleans up on them too. When the signal lands inside a pybind11 call (rclpy's executor) the
    KeyboardInterrupt comes out rewrapped as another exception (a RuntimeError "Unable to convert call
    argument"); once a signal arrived (`requested`), the block's exception leaves as KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.requested = True
        raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> "InterruptGuard":
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # a background job's ignored SIGINT stays ignored
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self.requested and isinstance(exc, Exception):
            raise KeyboardInterrupt(f"interrupted; rewrapped as {type(exc).__name__}") from exc


def terminate_as_interrupt() -> InterruptGuard:
    """An InterruptGuard: `with terminate_as_interrupt():` (`as guard`: `guard.requested` afterwards)."""
    return InterruptGuard()


def config_file(node: str) -> Path:
    """config/<node>.yaml of the package (sim, perception, policy, recorder, bag_player, mavlink_bridge)."""
    return share_path("config", f"{node}.yaml")


def sim_graph(model_path: str = "", sim: Optional[Mapping[str, ParameterValue]] = None,
              perception: Optional[Mapping[str, ParameterValue]] = None,
              policy: Optional[Mapping[str, ParameterValue]] = None,
              record: Optional[Mapping[str, ParameterValue]] = None) -> list[NodeLaunch]:
    """sim + perception + policy (+ recorder when `record` is given): the closed loop in simulation,
    from the package's YAML files with `-p` overrides (model_path goes to perception and policy)."""
    model = {"model_path": model_path} if model_path else {}
    nodes = [NodeLaunch("sim", "sim_node", config_file("sim"), dict(sim or {})),
             NodeLaunch("perception", "perception_node", config_file("perception"), {**model, **(perception or {})}),
             NodeLaunch("policy", "policy_node", config_file("policy"), {**model, **(policy or {})})]
    if record is not None:
        nodes.append(NodeLaunch("recorder", "recorder_node", config_file("recorder"), dict(record)))
    return nodes


def deploy_graph(model_path: str = "", connection: str = "", bridge: bool = True,
                 cmd_vel_topic: str = CMD_VEL.name,
                 record: Optional[Mapping[str, ParameterValue]] = None) -> list[NodeLaunch]:
    """perception + policy (+ MAVLink bridge) (+ recorder when `record` is given), wall time:
    launch/deploy.launch.py without ros2 launch. `cmd_vel_topic` renames the policy's output
    (e.g. /mavros/setpoint_velocity/cmd_vel, bridge=False)."""
    model = {"model_path": model_path} if model_path else {}
    remap = {CMD_VEL.name: cmd_vel_topic} if cmd_vel_topic != CMD_VEL.name else {}
    nodes = [NodeLaunch("perception", "perception_node", config_file("perception"), dict(model)),
             NodeLaunch("policy", "policy_node", config_file("policy"), dict(model), remap)]
    if bridge:
        nodes.append(NodeLaunch("mavlink_bridge", "mavlink_bridge_node", config_file("mavlink_bridge"),
                                {"connection": connection} if connection else {}, remap))
    if record is not None:
        nodes.append(NodeLaunch("recorder", "recorder_node", config_file("recorder"), dict(record), remap))
    return nodes


def replay_graph(bag: str, model_path: str = "", rate: float = 1.0,
                 record: Optional[Mapping[str, ParameterValue]] = None) -> list[NodeLaunch]:
    """bag player + perception + policy (+ recorder): launch/replay.launch.py without ros2 launch.
    Run it with use_sim_time=True: the player publishes /clock, and plays the bag's /cmd_vel, /features and
    /diagnostics under /recorded (config/bag_player.yaml), apart from what the live nodes publish."""
    model = {"model_path": model_path} if model_path else {}
    nodes = [NodeLaunch("bag_player", "bag_player_node", config_file("bag_player"),
                        {"bag": str(bag), "rate": float(rate), "use_sim_time": False}),
             NodeLaunch("perception", "perception_node", config_file("perception"), dict(model)),
             NodeLaunch("policy", "policy_node", config_file("policy"), dict(model))]
    if record is not None:
        nodes.append(NodeLaunch("recorder", "recorder_node", config_file("recorder"), dict(record)))
    return nodes
