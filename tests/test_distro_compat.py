"""Humble / Jazzy fallbacks (nodes/compat.py), shown on this Kilted rclpy by hiding the modules older
distributions lack: a `sys.modules` entry set to None makes its import fail, as on Humble."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("rclpy")

HIDE = "import sys\nfor name in sys.argv[1].split(','):\n    sys.modules[name] = None\n"

TICKER = HIDE + textwrap.dedent("""
    from rclpy.node import Node
    from liquid_control.nodes.common import spin_node

    class Ticker(Node):
        def __init__(self):
            super().__init__("ticker")
            self.executor_kind = "events"  # the policy node's default
            self.create_timer(0.05, lambda: print("tick", flush=True))

    sys.exit(spin_node(Ticker, []))
""")


def run_ticker(repo_root, hidden: str) -> tuple[str, str, int]:
    proc = subprocess.Popen([sys.executable, "-c", TICKER, hidden], cwd=repo_root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # the executor spins: the timer fires
            assert proc.stdout.readline().strip() == "tick", proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        return out, err, proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_executor_falls_back_with_a_warning_without_rclpy_experimental(repo_root):
    _, err, code = run_ticker(repo_root, "rclpy.experimental")
    assert code == 0 and "Traceback" not in err, err
    assert "rclpy.experimental.EventsExecutor" in err and "single-threaded executor" in err


def test_events_executor_is_used_where_rclpy_has_it(repo_root):
    _, err, code = run_ticker(repo_root, "nothing_hidden")
    assert code == 0 and "single-threaded executor" not in err, err


RECORDER = textwrap.dedent("""
    import importlib, sys, types
    import rclpy.node  # noqa: F401  (Kilted's rclpy itself needs event_handler; hide it from our code only)
    if sys.argv[1] == "humble":
        # Humble's layout: SubscriptionEventCallbacks lives in rclpy.qos_event only. (This rclpy's
        # qos_event re-exports event_handler, so the real class is put under the old name alone.)
        legacy = types.ModuleType("rclpy.qos_event")
        legacy.SubscriptionEventCallbacks = importlib.import_module("rclpy.event_handler").SubscriptionEventCallbacks
        sys.modules["rclpy.qos_event"] = legacy
        sys.modules["rclpy.event_handler"] = None
    else:  # neither module
        sys.modules["rclpy.event_handler"] = sys.modules["rclpy.qos_event"] = None
    from rclpy.parameter import Parameter
    from liquid_control.nodes.recorder_node import main
    sys.exit(main([], [Parameter("output", value=sys.argv[2]), Parameter("topics", value=["/compat_cmd"]),
                       Parameter("types", value=["/compat_cmd:=geometry_msgs/msg/TwistStamped"])]))
""")


def wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 60.0) -> list[str]:
    lines: list[str] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} in the output:\n{''.join(lines)}")


@pytest.mark.parametrize("layout, warns", [("none", True), ("humble", False)])
def test_recorder_starts_without_rclpy_event_handler(repo_root, tmp_path, layout, warns):
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, layout, str(tmp_path / "bag")], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = wait_for_line(proc, "recording ['/compat_cmd'] into")  # built, its subscription made
        time.sleep(1.0)  # spinning (a signal during construction is a failed start, exit code 1)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 0 and "Traceback" not in output, output
    assert ("SubscriptionEventCallbacks" in output) == warns, output
    assert (tmp_path / "bag" / "metadata.yaml").is_file()  # closed cleanly
