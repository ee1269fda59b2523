"""Shared rclpy node helpers: QoS, ranged parameters, diagnostics, spin_node with clean Ctrl-C/SIGTERM
shutdown (loop timing: test_timing.py)."""
import signal
import subprocess
import sys
import textwrap
import time

import pytest


# ---------------------------------------------------------------- rclpy helpers

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402

from liquid_control.interfaces.topics import CMD_VEL, EPISODE_RESET, EVENTS_QOS, SENSOR_QOS  # noqa: E402
from liquid_control.nodes.common import (ParameterError, ParamSpec, declare_parameters_with_ranges,  # noqa: E402
                                         DiagnosticsPublisher, make_status, qos_profile, stamp_to_seconds)

SPECS = [
    ParamSpec("rate_hz", 20.0, "loop rate (Hz)", 10.0, 100.0),
    ParamSpec("depth", 5, "queue depth", 1, 10),
    ParamSpec("action", "hover", "what to do", choices=("hover", "land")),
    ParamSpec("enabled", False, "switch"),
]


@pytest.fixture
def context():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def test_qos_profiles_come_from_the_interface_table():
    sensor, command, events = qos_profile(SENSOR_QOS), qos_profile(CMD_VEL), qos_profile(EVENTS_QOS, depth=3)
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT and sensor.depth == 5
    assert command.reliability == ReliabilityPolicy.RELIABLE and command.depth == 1
    assert command.durability == DurabilityPolicy.VOLATILE
    assert events.durability == DurabilityPolicy.TRANSIENT_LOCAL and events.depth == 3
    with pytest.raises(ValueError, match="episode/reset is a service"):
        qos_profile(EPISODE_RESET)


def test_parameters_are_declared_with_descriptions_and_ranges(context):
    node = rclpy.create_node("params_ok", context=context,
                             parameter_overrides=[Parameter("rate_hz", value=50.0), Parameter("action", value="land")])
    try:
        values = declare_parameters_with_ranges(node, SPECS)
        assert values == {"rate_hz": 50.0, "depth": 5, "action": "land", "enabled": False}
        descriptor = node.describe_parameter("rate_hz")
        assert descriptor.description == "loop rate (Hz)"
        assert (descriptor.floating_point_range[0].from_value, descriptor.floating_point_range[0].to_value) == (
            10.0, 100.0)
        assert node.describe_parameter("depth").integer_range[0].to_value == 10
        # runtime changes are range- and choice-checked too
        assert not node.set_parameters([Parameter("rate_hz", value=5.0)])[0].successful
        assert not node.set_parameters([Parameter("depth", value=11)])[0].successful
        assert not node.set_parameters([Parameter("action", value="flip")])[0].successful
        assert node.set_parameters([Parameter("rate_hz", value=10.0)])[0].successful
    finally:
        node.destroy_node()


@pytest.mark.parametrize("override, problem", [
    (Parameter("rate_hz", value=5.0), "rate_hz.*out of range"),
    (Parameter("depth", value=0), "depth"),
    (Parameter("rate_hz", value=20), "rate_hz.*decimal point"),
    (Parameter("action", value="flip"), "action.*one of"),
])
def test_bad_parameter_values_fail_at_start_naming_the_parameter(context, override, problem):
    node = rclpy.create_node("params_bad", context=context, parameter_overrides=[override])
    try:
        with pytest.raises(ParameterError, match=problem):
            declare_parameters_with_ranges(node, SPECS)
    finally:
        node.destroy_node()


def test_make_status_levels_and_values():
    status = make_status("x", 2, "broken", {"rate_hz": 19.98765432, "ok": True}, hardware_id="hw")
    assert status.level == DiagnosticStatus.ERROR and status.hardware_id == "hw"
    assert [(kv.key, kv.value) for kv in status.values] == [("rate_hz", "19.9877"), ("ok", "True")]
    with pytest.raises(ValueError, match="diagnostic level"):
        make_status("x", 7, "?")


def test_diagnostics_publisher_reaches_a_subscriber(context):
    node = rclpy.create_node("diag_pub", context=context)
    listener = rclpy.create_node("diag_sub", context=context)
    received: list[DiagnosticArray] = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
    publisher = DiagnosticsPublisher(node)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            publisher.publish(make_status("diag_pub", 1, "slow", {"rate_hz": 9.5}))
            executor.spin_once(timeout_sec=0.1)
        assert received, "no DiagnosticArray received on /diagnostics"
        status = received[0].status[0]
        assert status.name == "diag_pub" and status.level == DiagnosticStatus.WARN
        assert stamp_to_seconds(received[0].header.stamp) > 0.0
    finally:
        executor.shutdown()
        node.destroy_node()
        listener.destroy_node()


SPIN_SCRIPT = textwrap.dedent("""
    import sys
    from rclpy.node import Node
    from liquid_control.nodes.common import spin_node

    class Ticker(Node):
        def __init__(self):
            super().__init__("ticker")
            self.executor_kind = sys.argv[2] if len(sys.argv) > 2 else "single"
            self.create_timer(0.05, lambda: print("tick", flush=True))
        def close(self):
            print("closed", flush=True)

    class Broken(Node):
        def __init__(self):
            raise ValueError("parameter 'x' out of range")

    sys.exit(spin_node(Broken if sys.argv[1] == "broken" else Ticker))
""")


@pytest.mark.parametrize("executor", ["single", "events"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_spin_node_shuts_down_cleanly_on_signals(repo_root, sig, executor):
    # (EventsExecutor.spin() never returned after SIGTERM; spin_node's loop must cover both.)
    proc = subprocess.Popen([sys.executable, "-c", SPIN_SCRIPT, "ok", executor], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # blocks until the node runs; the timer keeps firing
            assert proc.stdout.readline().strip() == "tick"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out.strip().endswith("closed") and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_make_executor_kinds(context):
    from liquid_control.nodes.common import make_executor

    for kind in ("single", "events"):
        executor = make_executor(kind, context)
        executor.shutdown()
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("multi", context)


def test_spin_node_reports_construction_errors_without_traceback(repo_root):
    proc = subprocess.run([sys.executable, "-c", SPIN_SCRIPT, "broken"], cwd=repo_root, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot start node: parameter 'x' out of range" in proc.stderr and "Traceback" not in proc.stderr



def test_parse_cpu_list_known_answers_and_errors():
    from liquid_control.nodes.common import parse_cpu_list

    assert parse_cpu_list("") is None and parse_cpu_list("  ") is None
    assert parse_cpu_list("3") == {3} and parse_cpu_list("0, 2") == {0, 2} and parse_cpu_list("0-2,5") == {0, 1, 2, 5}
    for bad in ("x", "2-1", "-1", "1,,2", "1.5"):
        with pytest.raises(ParameterError, match="cpu_affinity"):
            parse_cpu_list(bad)


SCHEDULING_SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    from liquid_control.nodes.common import apply_scheduling

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)  # a thread that exists before: it must be moved too
    worker.start()
    cpu = max(os.sched_getaffinity(0))
    state, problem = apply_scheduling(int(sys.argv[1]), {cpu})
    threads = [int(t) for t in os.listdir("/proc/self/task")]
    print(json.dumps({"state": state, "problem": problem, "cpu": cpu,
                      "affinities": [sorted(os.sched_getaffinity(t)) for t in threads],
                      "policies": [os.sched_getscheduler(t) for t in threads], "fifo": os.SCHED_FIFO}))
    stop.set()
""")


def test_apply_scheduling_moves_every_thread_or_says_why_not(repo_root):
    import json

    # In a child process: SCHED_FIFO must not leak into the test run.
    out = subprocess.run([sys.executable, "-c", SCHEDULING_SCRIPT, "10"], cwd=repo_root, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["affinities"]) >= 2 and all(a == [report["cpu"]] for a in report["affinities"])
    if report["problem"]:  # no CAP_SYS_NICE here: a clear reason, and normal scheduling stays
        assert "realtime_priority 10 not applied" in report["problem"] and "CAP_SYS_NICE" in report["problem"]
        assert report["state"].startswith("normal")
    else:
        assert report["state"] == f"SCHED_FIFO 10, CPUs [{report['cpu']}]"
        assert all(p == report["fifo"] for p in report["policies"])
    unchanged = subprocess.run([sys.executable, "-c", SCHEDULING_SCRIPT, "0"], cwd=repo_root, capture_output=True,
                               text=True, timeout=60)
    assert json.loads(unchanged.stdout)["state"].startswith("normal") and json.loads(unchanged.stdout)["problem"] == ""
