"""`liquid-control doctor`: the checks on known inputs (no ROS), then the command against the sim graph and the
test autopilot (real DDS, real pymavlink on UDP loopback, in separate processes)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from liquid_control.inference import preflight as pf

ENCODINGS = ("rgb8", "bgr8", "mono8")


def sample(rate_hz=30.0, frames=60, encoding="rgb8", size=(128, 96), fov_deg=60.0, info=True):
    k = None
    if info:
        f = (size[1] / 2) / math.tan(math.radians(fov_deg) / 2)
        k = (f, 0.0, size[0] / 2, 0.0, f, size[1] / 2, 0.0, 0.0, 1.0)
    times = tuple(i / rate_hz for i in range(frames))
    return pf.CameraSample("camera/image_raw", frames, 2.0, times, (encoding,) * frames, (size,) * frames, k,
                           size if info else None)


def rows(checks):
    return {c.name: c for c in checks}


def test_a_camera_like_the_training_camera_passes():
    checks = rows(pf.check_camera(sample(), 1 / 30, (32, 24), 60.0, ENCODINGS))
    assert {c.status for c in checks.values()} == {pf.PASS}, checks
    assert "30.0 Hz" in checks["camera rate"].detail and "60.0 deg" in checks["camera fov"].detail


@pytest.mark.parametrize("kwargs, name, status", [
    (dict(rate_hz=20.0), "camera rate", pf.WARN),  # a third slower than training
    (dict(rate_hz=12.0), "camera rate", pf.FAIL),
    (dict(encoding="yuv422"), "camera encoding", pf.FAIL),
    (dict(size=(640, 360)), "camera resolution", pf.WARN),  # 16:9 squeezed into a 4:3 network
    (dict(size=(16, 12)), "camera resolution", pf.WARN),  # upsampled
    (dict(fov_deg=66.0), "camera fov", pf.WARN),
    (dict(fov_deg=90.0), "camera fov", pf.FAIL),  # a wide lens: the scene looks nothing like training
    (dict(info=False), "camera fov", pf.WARN),
])
def test_camera_problems_are_flagged(kwargs, name, status):
    checks = rows(pf.check_camera(sample(**kwargs), 1 / 30, (32, 24), 60.0, ENCODINGS))
    assert checks[name].status == status, checks[name]


def test_no_camera_frames_fail():
    empty = pf.CameraSample("camera/image_raw", 0, 5.0, (), (), ())
    assert [c.status for c in pf.check_camera(empty, 1 / 30, (32, 24), 60.0, ENCODINGS)] == [pf.FAIL]


def test_vertical_fov_from_k():
    assert pf.vertical_fov_deg((0, 0, 0, 0, 48.0, 0, 0, 0, 1), 96) == pytest.approx(90.0)


def test_failsafe_settings(repo_root):
    shipped = pf.node_parameters(repo_root / "config" / "mavlink_bridge.yaml", "mavlink_bridge")
    checks = rows(pf.check_failsafe(shipped, 0.5))
    assert {c.status for c in checks.values()} == {pf.PASS}
    assert "stream stops after 3.0 s" in checks["failsafe hand-back"].detail
    bad = rows(pf.check_failsafe({**shipped, "handback_timeout_s": 1.0}, 0.5))  # below action_timeout_s
    assert bad["failsafe"].status == pf.FAIL and "handback_timeout_s" in bad["failsafe"].detail
    risky = rows(pf.check_failsafe({**shipped, "allow_arming": True, "require_policy_live": False}, 0.5))
    assert risky["failsafe arming"].status == pf.WARN and risky["failsafe hand-back"].status == pf.WARN
    late = rows(pf.check_failsafe({**shipped, "handback_timeout_s": 2.0, "action_timeout_s": 1.0}, 2.5))
    assert late["failsafe timing"].status == pf.WARN


def test_params_file_errors_name_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("other:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ValueError, match="no 'mavlink_bridge: ros__parameters:' section"):
        pf.node_parameters(path, "mavlink_bridge")
    with pytest.raises(ValueError, match="cannot read"):
        pf.node_parameters(tmp_path / "missing.yaml", "mavlink_bridge")


def test_table_and_verdict():
    checks = [pf.Check("a", pf.PASS, "fine"), pf.Check("longer name", pf.WARN, "look")]
    table = pf.render_table(checks)
    assert table.splitlines()[-1] == "overall: WARN" and "longer name  WARN    look" in table
    assert pf.render_table(checks + [pf.Check("b", pf.FAIL, "no")]).endswith("overall: FAIL -- do not fly")


def test_flight_controller_link_without_a_vehicle_fails_quickly():
    report = pf.probe_flight_controller("udpin:127.0.0.1:0", timeout_s=0.5)
    assert not report.heartbeat and "no vehicle heartbeat" in report.error
    assert pf.check_flight_controller(report)[0].status == pf.FAIL
    assert "cannot open" in pf.probe_flight_controller("serial:/dev/no-such-fc-doctor", 0.5).error


# -- the command against the sim graph and the test autopilot ---------------------------------------------------
def parse_table(text: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in text.splitlines()[2:]:
        parts = line.split("  ")
        name = parts[0].strip()
        rest = line[len(parts[0]):].strip()
        status, _, detail = rest.partition(" ")
        found[name] = (status, detail.strip())
    return found


def test_doctor_against_the_sim_graph_and_the_test_autopilot(harness, tiny_node_model, repo_root):
    pytest.importorskip("rclpy")
    import re
    import time

    from sensor_msgs.msg import Image

    from liquid_control.nodes.common import qos_profile
    from liquid_control.interfaces.topics import SENSOR_QOS
    from liquid_control.nodes.sim_node import SimNode
    from mavlink_test_autopilot import CLOCK_OFFSET_S, AutopilotProcess
    from node_helpers import overrides

    harness.add(SimNode(context=harness.context, parameter_overrides=overrides(
        camera_width=64, camera_height=48, real_time_factor=1.0, duration_s=60.0)))  # 4:3 at the training FOV
    probe = harness.node("doctor_test_probe")
    received = []  # what the sim really delivered, to compare the doctor's rate with
    probe.create_subscription(Image, "camera/image_raw", lambda m: received.append(time.monotonic()),
                              qos_profile(SENSOR_QOS, 100))
    with AutopilotProcess("px4", heartbeat_hz=5.0) as px4:
        proc = subprocess.Popen(
            [sys.executable, "-m", "liquid_control.cli", "doctor", "--model", str(tiny_node_model), "--backend",
             "torch", "--connection", px4.bridge_connection, "--listen", "2.0"],
            cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            harness.spin_until(lambda: proc.poll() is not None, 120.0, "the doctor to finish")  # the sim runs
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert px4.events("command_long") == [] and px4.events("setpoint") == []  # it only listens and syncs
        assert px4.events("timesync")
    table = parse_table(out)
    assert "Traceback" not in err, err
    statuses = {status for status, _ in table.values()}
    assert proc.returncode == (1 if pf.FAIL in statuses else 0), out
    assert table["ros"][0] in (pf.PASS, pf.WARN) and "rmw_" in table["ros"][1]
    assert table["camera encoding"] == (pf.PASS, "rgb8")
    assert table["camera resolution"][0] == pf.PASS and "64x48, network 32x24" in table["camera resolution"][1]
    assert table["camera fov"][0] == pf.PASS and table["camera fov"][1].startswith("vertical 60.0 deg")
    # the rate the doctor measured is the rate the sim delivered (a busy host slows the sim: judge consistency)
    rate = float(table["camera rate"][1].split(" Hz")[0])
    seen = [t for t in received if t > received[-1] - 10.0]
    delivered = (len(seen) - 1) / (seen[-1] - seen[0])
    assert rate == pytest.approx(delivered, rel=0.4), (rate, delivered)
    assert table["camera rate"][0] == (pf.PASS if abs(rate / 30.0 - 1) <= 0.15 else
                                       pf.FAIL if rate < 15.0 else pf.WARN)
    assert table["model load"][0] in (pf.PASS, pf.WARN) and "torch" in table["model load"][1]
    p99 = [float(v) for v in re.findall(r"p99 ([0-9.]+) ms", table["model inference"][1])]
    assert table["model inference"][0] == (pf.PASS if sum(p99) < 1000 / 30 else pf.FAIL), table["model inference"]
    assert table["fc link"][0] == pf.PASS and "(px4)" in table["fc link"][1]
    assert table["fc mode"] == (pf.PASS, "POSCTL") and table["fc armed"] == (pf.PASS, "disarmed")
    sync = table["fc time sync"][1]
    offset = float(sync.split("offset ")[1].split(" s")[0])
    rtt_s = float(sync.split("round trip ")[1].split(" ms")[0]) / 1e3
    # the autopilot's clock runs 5 s ahead; the estimate is off by at most half the round trip's asymmetry
    assert offset == pytest.approx(CLOCK_OFFSET_S, abs=max(0.01, rtt_s)), sync
    assert table["failsafe hand-back"][0] == pf.PASS
