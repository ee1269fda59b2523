"""Shared node helpers: rolling loop timing (no ROS) and the rclpy helpers (QoS, ranged parameters,
diagnostics, spin_node with clean Ctrl-C/SIGTERM shutdown)."""
import math
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from liquid_control.util.timing import LatenessWindow, LoopTiming, RateMeter, percentile

# ---------------------------------------------------------------- timing (ROS-free)


def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(3)
    values = sorted(rng.exponential(size=101).tolist())
    for q in (0.0, 12.5, 50.0, 99.0, 100.0):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50.0)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101.0)


def test_rate_meter_is_exact_for_a_periodic_stream_and_decays_to_zero():
    meter = RateMeter(window_s=2.0)
    for i in range(41):
        meter.tick(i * 0.05)  # 20 Hz for 2 s
    assert meter.rate_hz(2.0) == pytest.approx(20.0)
    assert meter.age_s(2.3) == pytest.approx(0.3)
    assert meter.rate_hz(4.1) == 0.0  # nothing within the window any more
    assert meter.total == 41
    assert RateMeter().age_s(1.0) == math.inf
    with pytest.raises(ValueError, match="window_s"):
        RateMeter(window_s=0.0)


def test_rate_meter_restarts_when_time_goes_backwards():
    meter = RateMeter(window_s=10.0)
    for t in (100.0, 100.1, 100.2):
        meter.tick(t)
    meter.tick(0.0)  # sim clock reset
    meter.tick(0.5)
    assert meter.rate_hz(0.5) == pytest.approx(2.0)


def test_loop_timing_lateness_percentiles_and_counters():
    timing = LoopTiming(nominal_period_s=0.01)
    lateness_ms = list(range(100))  # 0..99 ms
    for i, late in enumerate(lateness_ms):
        expected = i * 1.0
        timing.tick(expected + late / 1000.0, expected_s=expected)
    timing.count("dropped_frames", 3)
    timing.count("dropped_frames")
    summary = timing.summary(now_s=99.1)
    assert summary["lateness_p50_ms"] == pytest.approx(49.5)
    assert summary["lateness_p99_ms"] == pytest.approx(np.percentile(lateness_ms, 99))
    assert summary["lateness_max_ms"] == pytest.approx(99.0)
    assert summary["dropped_frames"] == 4.0 and summary["iterations"] == 100.0


def test_loop_timing_infers_schedule_from_nominal_period():
    timing = LoopTiming(nominal_period_s=0.1)
    for t in (0.0, 0.1, 0.25, 0.35):  # the third tick is 50 ms late against previous + period
        timing.tick(t)
    late = timing.lateness.summary()
    assert late.samples == 3 and late.max_ms == pytest.approx(50.0)
    with pytest.raises(ValueError, match="nominal_period_s"):
        LoopTiming(nominal_period_s=-1.0)


def test_lateness_window_ignores_non_finite_and_keeps_last_samples():
    window = LatenessWindow(max_samples=3)
    for value in (1.0, float("nan"), 0.001, 0.002, 0.003):
        window.add(value)
    summary = window.summary()
    assert summary.samples == 3 and summary.max_ms == pytest.approx(3.0)


# ---------------------------------------------------------------- rclpy helpers

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402

from liquid_control.nodes.common import (ParameterError, ParamSpec, command_qos, declare_parameters_with_ranges,  # noqa: E402
                                         DiagnosticsPublisher, latched_qos, make_status, sensor_qos,
                                         stamp_to_seconds)

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


def test_qos_profiles_follow_the_design():
    sensor, command, latched = sensor_qos(), command_qos(), latched_qos()
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT and sensor.depth == 5
    assert command.reliability == ReliabilityPolicy.RELIABLE and command.depth == 1
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL and latched.depth == 1


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
