"""rclpy helpers shared by every node: QoS profiles, ranged parameters, diagnostics, main().

Topic names and QoS come from the interface table (liquid_control.interfaces.topics);
`qos_profile` turns a table entry into an rclpy QoSProfile.
"""
from __future__ import annotations

import gc
import importlib
import math
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from liquid_control.interfaces.topics import DIAGNOSTICS, Interface, Qos
from liquid_control.nodes.compat import events_executor_class

_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
_DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}


def qos_profile(source: Interface | Qos, depth: int | None = None, *, subscriber: bool = False) -> QoSProfile:
    """The rclpy QoSProfile of an interface-table topic (or of a table Qos); `depth` overrides the queue
    depth for an endpoint that needs a longer (test probes, monitors) or shorter queue. `subscriber`: the
    profile a subscription requests (best effort for sensor streams, REP-2003), else what publishers offer."""
    if isinstance(source, Interface):
        qos = source.subscription_qos if subscriber else source.qos
    else:
        qos = source
    if qos is None:
        raise ValueError(f"{source.name} is a service: services have no QoS profile in the table")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos.depth if depth is None else depth,
                      reliability=_RELIABILITY[qos.reliability], durability=_DURABILITY[qos.durability])


def string_list_parameter(node: Node, name: str, description: str) -> list[str]:
    """Declare a string-array parameter whose default is empty (rclpy cannot infer [] as strings)."""
    value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY,
                                   ParameterDescriptor(description=description)).value
    return list(value or [])


def message_class(msgtype: str) -> Any:
    """The rclpy message class of 'pkg/msg/Type'; ValueError if that package is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"{msgtype!r} is not a message type of the form pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as err:
        raise ValueError(f"message type {msgtype!r} is not installed: {err}") from None


def tf_message_class() -> Any | None:
    """tf2_msgs/msg/TFMessage, or None where tf2_msgs is not installed (it is on every ROS 2 install, but there
    is no PyPI wheel of it); a node then publishes no TF and says so."""
    try:
        return message_class("tf2_msgs/msg/TFMessage")
    except ValueError:
        return None


def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time (or rclpy Time) -> float seconds."""
    if hasattr(stamp, "nanoseconds"):
        return stamp.nanoseconds * 1e-9
    return stamp.sec + stamp.nanosec * 1e-9


def now_seconds(node: Node) -> float:
    """The node's clock (ROS time under use_sim_time) as float seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default fixes the type; `low`/`high` give an inclusive range for numbers.

    `choices` restricts a string parameter to a fixed set (checked at start and on every set).
    `check` validates the value at start: it raises ParameterError (its return value is ignored).
    """

    name: str
    default: bool | int | float | str
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False
    check: Callable[[Any], Any] | None = None

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" (one of: {', '.join(self.choices)})"
        descriptor = ParameterDescriptor(description=text, read_only=self.read_only)
        if self.low is not None or self.high is not None:
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise TypeError(f"parameter {self.name}: a range needs an int or float default")
            low = -math.inf if self.low is None else self.low
            high = math.inf if self.high is None else self.high
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        return descriptor


class ParameterError(ValueError):
    """A parameter value is missing, of the wrong type or out of range; the message names it."""


def inference_parameters(model_kind: str) -> list[ParamSpec]:
    """The model and runtime parameters shared by the perception and policy nodes.

    `model_kind` names the ONNX export the node accepts ("perception" or "policy").
    """
    from liquid_control.inference.runtime import BACKENDS

    return [
        ParamSpec("model_path", "", f"model file (.safetensors) or {model_kind} ONNX export; empty: the shipped "
                  "models/default_cfc.safetensors", read_only=True),
        ParamSpec("backend", "auto", "inference backend", choices=BACKENDS, read_only=True),
        ParamSpec("providers", "", "onnxruntime providers, comma separated (cpu, cuda, tensorrt or full names); "
                  "empty: best available", read_only=True),
        ParamSpec("threads", 1, "inference threads", 1, 64, read_only=True),
        ParamSpec("fp16", False, "FP16 where the provider supports it (TensorRT)", read_only=True),
    ]


def scheduling_parameters() -> list[ParamSpec]:
    """Process scheduling for the latency-critical nodes (applied once at start, to every thread)."""
    return [
        ParamSpec("realtime_priority", 0, "SCHED_FIFO priority (1-99) for every thread of this process; 0: normal "
                  "scheduling. Needs CAP_SYS_NICE or an rtprio limit; if refused, a warning and normal scheduling",
                  0, 99, read_only=True),
        ParamSpec("cpu_affinity", "", "CPUs for every thread of this process, as taskset lists them "
                  "(e.g. '3' or '2,3' or '0-1'); empty: all CPUs", read_only=True, check=parse_cpu_list),
    ]


def parse_cpu_list(text: str) -> set[int] | None:
    """'2,3' / '0-1' / '' -> {2, 3} / {0, 1} / None (no restriction); ParameterError on anything else."""
    text = text.strip()
    if not text:
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if first < 0 or last < first:
                raise ValueError
            cpus.update(range(first, last + 1))
    except ValueError:
        raise ParameterError(f"parameter 'cpu_affinity' is {text!r}; expected CPU numbers like '3', '2,3' or "
                             "'0-1'") from None
    return cpus


def apply_scheduling(realtime_priority: int, cpu_affinity: set[int] | None) -> tuple[str, str]:
    """Set SCHED_FIFO and/or the CPU affinity on every thread of this process (threads started later
    inherit both from their creator). Returns (what is in effect, problem or '')."""
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]

    def each_thread(action: Callable[[int], None]) -> None:
        for tid in tids:
            try:
                action(tid)
            except ProcessLookupError:  # the thread ended meanwhile
                pass

    problem = ""
    try:
        if cpu_affinity is not None:
            each_thread(lambda tid: os.sched_setaffinity(tid, cpu_affinity))
    except OSError as error:
        problem = f"cpu_affinity {sorted(cpu_affinity)} not applied: {error}"
    if realtime_priority > 0:
        try:
            each_thread(lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(realtime_priority)))
        except (OSError, AttributeError) as error:
            problem = (problem + "; " if problem else "") + \
                f"realtime_priority {realtime_priority} not applied ({error}): needs CAP_SYS_NICE or an rtprio limit"
    fifo = hasattr(os, "SCHED_FIFO") and os.sched_getscheduler(0) == os.SCHED_FIFO
    state = (f"SCHED_FIFO {os.sched_getparam(0).sched_priority}" if fifo else "normal") + \
        f", CPUs {sorted(os.sched_getaffinity(0))}"
    return state, problem


def configure_scheduling(node: Node, values: Mapping[str, Any]) -> str:
    """Apply the node's `realtime_priority` / `cpu_affinity` parameters; log and return what is in effect
    (a refusal is a warning, not a failure: the node still runs, with normal scheduling)."""
    state, problem = apply_scheduling(values["realtime_priority"], parse_cpu_list(values["cpu_affinity"]))
    if problem:
        node.get_logger().warning(problem)
    elif values["realtime_priority"] or values["cpu_affinity"]:
        node.get_logger().info(f"scheduling: {state}")
    return state


def declare_parameters_with_ranges(node: Node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every spec (with description and range) and return name -> value.

    Values from a params file or `--ros-args -p` that are out of range, of the
    wrong type or not among `choices` raise ParameterError naming the parameter;
    later `set_parameters` calls with such values are rejected by rclpy (ranges)
    or by the callback installed here (choices).
    """
    specs = list(specs)
    values: dict[str, Any] = {}
    choices = {spec.name: spec.choices for spec in specs if spec.choices}
    for spec in specs:
        try:
            parameter = node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except InvalidParameterTypeException as exc:
            hint = " (floats need a decimal point in YAML: 20.0, not 20)" if isinstance(spec.default, float) else ""
            raise ParameterError(f"parameter '{spec.name}': {exc}{hint}") from None
        except ParameterException as exc:  # out of range, read-only, ...
            raise ParameterError(f"parameter '{spec.name}': {exc}") from None
        value = parameter.value
        if spec.choices and value not in spec.choices:
            raise ParameterError(f"parameter '{spec.name}' is {value!r}; expected one of {list(spec.choices)}")
        if spec.check is not None:
            spec.check(value)
        values[spec.name] = value

    if choices:
        def check_choices(parameters) -> SetParametersResult:
            for parameter in parameters:
                allowed = choices.get(parameter.name)
                if allowed and parameter.value not in allowed:
                    return SetParametersResult(successful=False,
                                               reason=f"{parameter.name} must be one of {list(allowed)}")
            return SetParametersResult(successful=True)

        node.add_on_set_parameters_callback(check_choices)
    return values


LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR, 3: DiagnosticStatus.STALE}


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def make_status(name: str, level: int, message: str, values: Mapping[str, Any] | None = None,
                hardware_id: str = "") -> DiagnosticStatus:
    """A DiagnosticStatus; level 0 OK, 1 WARN, 2 ERROR, 3 STALE; values become strings."""
    if level not in LEVELS:
        raise ValueError(f"diagnostic level must be 0 (OK), 1 (WARN), 2 (ERROR) or 3 (STALE), got {level!r}")
    return DiagnosticStatus(level=LEVELS[level], name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=_format_value(v)) for k, v in (values or {}).items()])


def hardware_id(device: str) -> str:
    """DiagnosticStatus.hardware_id of a node: this host and the device it computes on, e.g.
    'jetson-01/onnxruntime:CUDAExecutionProvider' (diagnostic aggregators group statuses by it)."""
    return f"{socket.gethostname()}/{device}"


def runtime_hardware_id(runtime: Any) -> str:
    """hardware_id of an inference runtime: its backend and, on onnxruntime, the first (active) provider."""
    providers = list(getattr(runtime, "providers", []) or [])
    return hardware_id(f"{runtime.backend}:{providers[0]}" if providers else str(runtime.backend))


class DiagnosticsPublisher:
    """Publishes DiagnosticArray on /diagnostics, stamped with the node's clock."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS.name, qos_profile(DIAGNOSTICS))

    def publish(self, *statuses: DiagnosticStatus) -> DiagnosticArray:
        array = DiagnosticArray(status=list(statuses))
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)
        return array


EXECUTORS = ("single", "events")


def make_executor(kind: str, context: rclpy.context.Context | None = None, logger: Any = None) -> Executor:
    """`single`: rclpy's SingleThreadedExecutor (wait set rebuilt in Python on every wake-up);
    `events`: rclpy.experimental.EventsExecutor (timers and the event queue in C++). Measured here
    with a bare 100 Hz timer (docs/BENCHMARKS.md "Node loop"): timer lateness p99 0.59 ms single,
    0.28 ms events. A multi-threaded executor is not offered: worse lateness under the GIL (DESIGN.md).
    An rclpy without EventsExecutor (before Kilted) gets the single-threaded one and a warning on
    `logger` (default: the "liquid_control" logger)."""
    if kind == "single":
        return SingleThreadedExecutor(context=context)
    if kind == "events":
        events_executor, missing = events_executor_class()
        if events_executor is None:
            (logger or rclpy.logging.get_logger("liquid_control")).warning(missing)
            return SingleThreadedExecutor(context=context)
        return events_executor(context=context)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")


def freeze_start_up_objects() -> None:
    """Move every object alive after start-up out of the garbage collector's reach (gc.freeze): imports
    (rclpy, rosbags' type stores, torch) leave tens of thousands of long-lived objects, and a full collection
    walking them (~70 ms for the recorder's on a loaded 2-core host) stalled callbacks at random moments,
    e.g. shifting a recorder's receive times by ~0.1 s (tests/test_bag_player.py round trip)."""
    gc.collect()
    gc.freeze()


def spin_node(node_factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """main() body for a node: init, build, spin, clean up on Ctrl-C/SIGTERM.

    The node picks its executor with an `executor_kind` attribute (default "single", see
    make_executor). Returns the process exit code: 0 on a clean shutdown, 1 if the node could not
    be built (bad parameters, unreachable device) — the reason is logged, no traceback.
    A node may define `close()`; it is called before the node is destroyed.
    """
    rclpy.init(args=args)  # installs SIGINT and SIGTERM handlers that shut the context down
    node = None
    executor = None
    try:
        try:
            node = node_factory()
            executor = make_executor(getattr(node, "executor_kind", "single"), logger=node.get_logger())
            freeze_start_up_objects()
        except (ValueError, OSError, RuntimeError, TypeError) as exc:
            rclpy.logging.get_logger("liquid_control").error(f"cannot start node: {exc}")
            return 1
        executor.add_node(node)
        try:
            # spin_once in a loop rather than spin(): EventsExecutor.spin() stays in C++ and never
            # returned here, not even after SIGTERM shut the context down.
            while rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            # SIGTERM's handler shuts the context down; a wait in progress then fails with an
            # RCLError ("context is not valid"). That is a clean shutdown, anything else is not.
            if rclpy.ok():
                raise
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            if executor is not None:
                executor.remove_node(node)
            node.destroy_node()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown()
    return 0
