"""Graph runner: command lines, clean shutdown of process groups (SIGTERM, SIGKILL escalation, dead
runner), and a short closed-loop flight through the real node graph (the flight demo)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

from liquid_control.nodes.graph import (NodeExited, NodeGraph, NodeLaunch, format_parameter, node_command, sim_graph,
                                        terminate_as_interrupt)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value", [True, False, 0, 42, 2.0, 0.25, 1e-5, "abc", "", "123", "true", "it's a: b",
                                   ["/cmd_vel:=geometry_msgs/msg/TwistStamped", "/x"]])
def test_parameter_values_read_back_with_their_type(value):
    text = format_parameter(value)
    parsed = yaml.safe_load(text)
    if isinstance(value, float) and "e" in text:
        parsed = float(text)  # YAML 1.1 (PyYAML) reads 1e-05 as a string; rcl's parser reads a double
    assert parsed == value and type(parsed) is type(value)
    with pytest.raises(TypeError):
        format_parameter({"a": 1})


def test_node_command_uses_the_yaml_then_overrides_then_remaps():
    node = NodeLaunch("policy", "policy_node", REPO / "config" / "policy.yaml", {"rate_hz": 100.0},
                      {"cmd_vel": "/mavros/setpoint_velocity/cmd_vel"})
    argv = node_command(node, use_sim_time=True, python="py")
    assert argv == ["py", "-m", "liquid_control.nodes.policy_node", "--ros-args", "--params-file",
                    str(REPO / "config" / "policy.yaml"), "-p", "use_sim_time:=true", "-p", "rate_hz:=100.0",
                    "-r", "cmd_vel:=/mavros/setpoint_velocity/cmd_vel"]
    nodes = sim_graph("/m.safetensors", record={"output": "/tmp/b"})
    assert [n.module for n in nodes] == ["sim_node", "perception_node", "policy_node", "recorder_node"]
    assert all(n.params_file.is_file() for n in nodes)
    assert nodes[1].parameters["model_path"] == "/m.safetensors"


def test_graph_builders_start_what_the_launch_files_start():
    """graph.{sim,deploy,replay}_graph with every option on == the executables of launch/*.launch.py."""
    import ast

    from liquid_control.nodes.graph import deploy_graph, replay_graph

    def launched(name: str) -> set[str]:
        tree = ast.parse((REPO / "launch" / name).read_text())
        return {ast.literal_eval(k.value) for call in ast.walk(tree) if isinstance(call, ast.Call)
                and getattr(call.func, "id", None) == "Node" for k in call.keywords if k.arg == "executable"}

    sim = {n.module for n in sim_graph(record={})}
    assert sim == launched("sim.launch.py")
    assert {n.module for n in deploy_graph(record={})} == launched("deploy.launch.py")
    assert {n.module for n in replay_graph("/bag", record={})} == launched("replay.launch.py")
    mavros = deploy_graph(bridge=False, cmd_vel_topic="/mavros/setpoint_velocity/cmd_vel")
    assert [n.name for n in mavros] == ["perception", "policy"]
    assert "cmd_vel:=/mavros/setpoint_velocity/cmd_vel" in node_command(mavros[1], False)
    player = node_command(replay_graph("/bag")[0], use_sim_time=True)
    assert "use_sim_time:=false" in player and "use_sim_time:=true" not in player  # the player makes the clock


def test_graph_refuses_missing_parameter_files_and_duplicate_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        NodeGraph([NodeLaunch("a", "sim_node", tmp_path / "nope.yaml")], tmp_path)
    with pytest.raises(ValueError, match="unique"):
        NodeGraph([NodeLaunch("a", "sim_node"), NodeLaunch("a", "policy_node")], tmp_path)


# Stand-in "python" for process-group tests: ignores its arguments, starts a grandchild and
# records both pids; with IGNORE_TERM it survives SIGTERM (a hung node).
FAKE_NODE = textwrap.dedent("""\
    #!/bin/bash
    if [ -n "$IGNORE_TERM" ]; then trap '' TERM; fi
    sleep 300 &
    echo "$$ $!" >> "$PIDFILE"
    wait
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout_s: float) -> list[int]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def read_pids(pidfile: Path, nodes: int, timeout_s: float = 10.0) -> list[int]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        lines = pidfile.read_text().split("\n") if pidfile.exists() else []
        lines = [line for line in lines if line.strip()]
        if len(lines) >= nodes:
            return [int(p) for line in lines for p in line.split()]
        time.sleep(0.05)
    raise AssertionError("fake nodes did not start")


@pytest.fixture
def fake_python(tmp_path):
    script = tmp_path / "fake_node.sh"
    script.write_text(FAKE_NODE)
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("ignore_term", [False, True])
def test_stop_ends_every_process_group_even_when_a_node_ignores_sigterm(tmp_path, fake_python, ignore_term):
    pidfile = tmp_path / "pids"
    env = {**os.environ, "PIDFILE": str(pidfile), **({"IGNORE_TERM": "1"} if ignore_term else {})}
    graph = NodeGraph([NodeLaunch("a", "sim_node"), NodeLaunch("b", "policy_node")], tmp_path / "logs",
                      env=env, terminate_timeout_s=1.0, python=str(fake_python))
    started = time.monotonic()
    with graph:
        pids = read_pids(pidfile, 2)
        assert graph.exited() == {}
    assert wait_gone(pids, 5.0) == []
    codes = graph.stop()
    if ignore_term:  # escalated to SIGKILL after the 1 s grace period
        assert set(codes.values()) == {-signal.SIGKILL} and time.monotonic() - started >= 1.0
    else:
        assert set(codes.values()) == {-signal.SIGTERM}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_guard_raises_remembers_and_restores(signum):
    # As in a terminal (a background test run inherits SIGINT ignored, which the guard leaves alone).
    inherited = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    try:
        before = signal.getsignal(signum)
        with pytest.raises(KeyboardInterrupt):
            with terminate_as_interrupt() as interrupt:
                assert not interrupt.requested
                os.kill(os.getpid(), signum)
                time.sleep(1.0)  # the handler runs at the next bytecode boundary
        assert interrupt.requested and signal.getsignal(signum) is before
        # The interrupt rewrapped on its way out of a pybind11 (rclpy) call still leaves as KeyboardInterrupt.
        with pytest.raises(KeyboardInterrupt):
            with terminate_as_interrupt():
                try:
                    os.kill(os.getpid(), signum)
                    time.sleep(1.0)
                except KeyboardInterrupt as error:
                    raise RuntimeError("Unable to convert call argument '0' to Python object") from error
        with pytest.raises(RuntimeError):  # without a signal an error stays an error
            with terminate_as_interrupt():
                raise RuntimeError("node failed")
    finally:
        signal.signal(signum, inherited)


RUNNER = textwrap.dedent("""\
    import signal, sys, time
    from liquid_control.nodes.graph import NodeGraph, NodeLaunch, terminate_as_interrupt
    # As in a terminal: a test run started as a background job (`cmd &`) hands its children SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    nodes = [NodeLaunch("a", "sim_node"), NodeLaunch("b", "policy_node")]
    try:
        with terminate_as_interrupt(), NodeGraph(nodes, sys.argv[2], terminate_timeout_s=1.0, python=sys.argv[1]):
            print("up", flush=True)
            time.sleep(300)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_no_orphans_when_the_runner_is_terminated_interrupted_or_killed(tmp_path, fake_python, signum):
    pidfile = tmp_path / "pids"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(fake_python), str(tmp_path / "logs")],
                              env={**os.environ, "PIDFILE": str(pidfile), "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "up"
        pids = read_pids(pidfile, 2)
        runner.send_signal(signum)
        code = runner.wait(timeout=15)
        node_pids = pids[0::2]  # the grandchildren (sleep) outlive a SIGKILLed runner: only PDEATHSIG reaches
        if signum == signal.SIGKILL:  # the kernel's parent-death signal ends the node processes
            assert code == -signal.SIGKILL and wait_gone(node_pids, 5.0) == []
        else:
            assert code == 130 and runner.stdout.read().strip() == "interrupted"
            assert wait_gone(pids, 5.0) == []
    finally:
        runner.kill()
        if pidfile.exists():
            for pid in (int(p) for p in pidfile.read_text().split()):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_check_reports_a_node_that_failed_with_its_log(tmp_path, repo_root):
    nodes = [NodeLaunch("policy", "policy_node", repo_root / "config" / "policy.yaml",
                        {"model_path": str(tmp_path / "missing.safetensors")})]
    with NodeGraph(nodes, tmp_path / "logs", env={**os.environ, "PYTHONPATH": str(repo_root)}) as graph:
        end = time.monotonic() + 90
        while not graph.exited() and time.monotonic() < end:
            time.sleep(0.2)
        with pytest.raises(NodeExited, match="(?s)exited with code 1.*missing.safetensors does not exist"):
            graph.check()


# ------------------------------------------------------------------ closed loop through the real graph
def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_closed_loop_episode_through_the_node_graph(tmp_path, monkeypatch, capsys):
    """sim + perception + policy + recorder as separate processes on sim time fly one short episode.

    With a tiny random model this checks that the loop closes (images -> features -> commands ->
    the drone moves, odometry and commands recorded); reaching the target needs the trained
    policy and is measured by the demo/evaluation, not here.
    """
    from liquid_control.commands import demo as flight_demo
    from liquid_control.bags.reader import BagReader
    from node_helpers import save_tiny_model

    marker = f"LIQUID_GRAPH_TEST={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    model = save_tiny_model(tmp_path / "tiny.safetensors")
    parser = __import__("argparse").ArgumentParser()
    flight_demo.add_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--episodes", "1", "--duration-s", "3.0",
                              "--out", str(tmp_path / "demo"), "--policy-rate-hz", "60.0"])
    code = flight_demo.run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "success: 0/1" in printed or "success: 1/1" in printed
    assert "trajectory plot:" in printed and (tmp_path / "demo" / "trajectories.png").is_file()
    assert marked_processes(marker.split("=")[1]) == [], "node processes outlived the demo"
    counts: dict[str, int] = {}
    moved = 0.0
    with BagReader(tmp_path / "demo" / "bag") as bag:
        first = None
        for message in bag.messages(["/cmd_vel", "/odom", "/features", "/camera/image_raw", "/episode/status"]):
            counts[message.topic] = counts.get(message.topic, 0) + 1
            if message.topic == "/odom":
                p = bag.deserialize(message).pose.pose.position
                first = first or (p.x, p.y)
                moved = max(moved, ((p.x - first[0]) ** 2 + (p.y - first[1]) ** 2) ** 0.5)
    # 3 sim seconds: ~90 images at 30 Hz, odometry at 120 Hz; allow for load on shared cores.
    assert counts.get("/camera/image_raw", 0) > 45 and counts.get("/features", 0) > 30, counts
    assert counts.get("/odom", 0) > 200 and counts.get("/cmd_vel", 0) > 30, counts
    assert counts.get("/episode/status", 0) >= 2, counts
    assert moved > 0.05, "the policy's commands never moved the drone"


def test_shipped_policy_reaches_the_target_through_the_node_graph(tmp_path, monkeypatch, capsys):
    """With the trained models/default_cfc.safetensors the graph flies seed 2 of the training scenario to
    its target (task success predicate). Seed 2 ends near the middle of the 0.5-1.5 m success band (0.94 m
    in the demo), where seed 0 ends at its edge (0.51 m). Skipped until that model file exists."""
    from liquid_control.commands import demo as flight_demo
    from liquid_control.inference.model_source import default_model_path

    if not default_model_path().is_file():
        pytest.skip("models/default_cfc.safetensors (the trained policy) does not exist yet")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    parser = __import__("argparse").ArgumentParser()
    flight_demo.add_arguments(parser)
    args = parser.parse_args(["--episodes", "1", "--seed", "2", "--no-record", "--out", str(tmp_path / "demo")])
    code = flight_demo.run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "success: 1/1" in printed, printed


def test_demo_stops_every_node_on_sigterm(tmp_path):
    """SIGTERM (as from a supervisor, or Ctrl-C's SIGINT) mid-flight: exit code 130, no node left."""
    from node_helpers import save_tiny_model

    marker = uuid.uuid4().hex
    model = save_tiny_model(tmp_path / "tiny.safetensors")
    demo = subprocess.Popen([sys.executable, "-m", "liquid_control.cli", "demo", "--model", str(model),
                             "--episodes", "5", "--out", str(tmp_path / "demo")],
                            env={**os.environ, "PYTHONPATH": str(REPO), "LIQUID_GRAPH_TEST": marker},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "nodes up" in line:
                assert len(marked_processes(marker)) == 5  # the demo + sim, perception, policy, recorder
                time.sleep(2.0)
                demo.send_signal(signal.SIGTERM)
                break
        lines += demo.stdout.readlines()
        assert demo.wait(timeout=30) == 130, "".join(lines)
        assert "interrupted: nodes stopped" in "".join(lines)
        assert wait_gone(marked_processes(marker), 5.0) == []
    finally:
        demo.kill()


def test_demo_names_a_missing_model_file_and_starts_nothing(tmp_path, capsys):
    from liquid_control.commands import demo as flight_demo

    parser = __import__("argparse").ArgumentParser()
    flight_demo.add_arguments(parser)
    code = flight_demo.run(parser.parse_args(["--model", str(tmp_path / "none.safetensors"),
                                              "--out", str(tmp_path / "demo")]))
    printed = capsys.readouterr().out
    assert code == 2 and "none.safetensors not found" in printed and "--model" in printed
    assert not (tmp_path / "demo").exists()
