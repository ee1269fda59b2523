"""Package layout: the ament_python metadata, the CLI and the shared files agree."""
import subprocess
import sys
import xml.etree.ElementTree as ET

from liquid_control import cli
from liquid_control.util import paths


def test_package_xml_is_format3_ament_python(repo_root):
    root = ET.parse(repo_root / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "liquid_control"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "diagnostic_msgs"} <= deps


def test_share_dir_finds_config_and_sim(repo_root):
    assert paths.share_dir() == repo_root
    assert paths.share_path("resource", "liquid_control").is_file()


def test_cli_info_prints_versions(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "liquid_control" in out


def test_cli_rejects_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "liquid_control.cli", "no-such-command"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_every_help_runs_as_a_real_process_without_a_traceback(repo_root):
    """`liquid-control --help` and `liquid-control COMMAND --help` for every command, as a user types them."""
    import os
    import shutil
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    script = Path(sys.executable).with_name("liquid-control")
    command = [str(script)] if script.exists() else [shutil.which("liquid-control")]
    assert command[0], "the liquid-control console script is not installed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}

    def run_help(args: list[str]) -> tuple[list[str], subprocess.CompletedProcess]:
        return args, subprocess.run(command + args, capture_output=True, text=True, env=env, timeout=300)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run_help, [["--help"]] + [[name, "--help"] for name in cli.SUBCOMMANDS]))
    for args, proc in results:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr + proc.stdout, (args, proc.stderr[-2000:])
        prog = " ".join(["liquid-control", *args[:-1]])
        assert proc.stdout.startswith(f"usage: {prog}"), (args, proc.stdout[:200])
    assert "95% interval" in results[0][1].stdout  # the help text that once crashed argparse


def test_no_tracked_file_points_outside_the_repository(repo_root):
    """A clone has nothing outside itself: no paths into a sibling folder, none into the machine it was made on."""
    files = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True).stdout
    needles = ("../" + "shared", "/" + "work/")  # split, so this file does not match itself
    offenders = []
    for name in files.splitlines():
        path = repo_root / name
        if not path.is_file() or path.suffix in (".safetensors", ".png", ".onnx", ".mcap"):
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        offenders += [f"{name}: {needle}" for needle in needles if needle in text]
    assert not offenders, offenders


ROS_MODULES = ("rclpy", "rcl_interfaces", "std_srvs", "launch", "launch_ros")  # ament_index (paths.py) is no runtime


def imported_modules(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_cores_import_no_ros(repo_root):
    """Only nodes/ and commands/ import ROS (docs/DESIGN.md "Layout"; the layer order itself is
    tests/test_import_layers.py)."""
    package = repo_root / "liquid_control"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        layer = path.relative_to(package).parts[0]
        for module in imported_modules(path):
            top = module.split(".")[0]
            if (top in ROS_MODULES or top.endswith("_msgs")) and layer not in ("nodes", "commands"):
                offenders.append(f"{path.relative_to(repo_root)}: {module}")
    assert not offenders, offenders
