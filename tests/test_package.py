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


# Third-party Python imports of the package -> their rosdep key, or None where rosdep has none (then
# requirements.txt must pin it and package.xml's comment must name it). Keys checked against rosdistro's
# rosdep/python.yaml.
PYTHON_KEYS = {
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "torch": "python3-torch",
    "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "PIL": "python3-pil", "serial": "python3-serial",
    "pymavlink": "python3-pymavlink-pip", "pybullet": "python3-pybullet-pip", "pybullet_data": "python3-pybullet-pip",
    "onnxruntime": "python3-onnxruntime-pip", "gymnasium": "python3-gymnasium-pip", "rosbags": "python3-rosbags-pip",
    "onnx": None, "onnxscript": None, "safetensors": None, "mcap": None, "mcap_ros2": None,
    "ray": None,  # optional: collect/evaluate --ray and sweep only (docs/SCALE.md)
}
REQUIREMENT_OF = {"onnx": "onnx", "onnxscript": "onnxscript", "safetensors": "safetensors", "mcap": "mcap",
                  "mcap_ros2": "mcap-ros2-support", "ray": "ray"}
# ROS packages whose Python modules are imported, and what they are called in package.xml.
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "ament_index_python", "launch", "launch_ros", "std_srvs"}


def package_imports(repo_root) -> set[str]:
    """Top-level modules imported anywhere in liquid_control/ and launch/ (not the stdlib, not the package
    itself; benchmarks/ may use test-only packages such as ncps)."""
    found = set()
    for folder in ("liquid_control", "launch"):
        for path in (repo_root / folder).rglob("*.py"):
            found |= {module.split(".")[0] for module in imported_modules(path)}
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("liquid_control", "__future__")}


def test_package_xml_declares_every_dependency_the_code_imports(repo_root):
    root = ET.parse(repo_root / "package.xml").getroot()
    declared = {e.text for e in root.findall("exec_depend")}
    missing = []
    for module in sorted(package_imports(repo_root)):
        if module in ROS_PACKAGES or module.endswith("_msgs"):
            if module not in declared:
                missing.append(module)
        elif module in PYTHON_KEYS:
            key = PYTHON_KEYS[module]
            if key is not None and key not in declared:
                missing.append(f"{module} ({key})")
            if key is None:
                requirement = REQUIREMENT_OF[module]
                assert f"{requirement}==" in (repo_root / "requirements.txt").read_text(), requirement
                assert requirement in (repo_root / "package.xml").read_text(), f"package.xml comment: {requirement}"
        else:
            missing.append(f"{module} (unknown: add it to PYTHON_KEYS with its rosdep key)")
    assert not missing, missing
    # ros2launch gives `ros2 launch`; nothing imports it
    assert "ros2launch" in declared


def test_license_is_the_apache_2_text_the_package_declares(repo_root):
    """LICENSE holds the Apache License 2.0 verbatim (byte-identical to the text other Apache-2.0 packages
    ship); package.xml and setup.py declare the same license. No per-file headers: the license applies to the
    whole package, and ament_copyright (which would demand them) is not declared."""
    import hashlib

    text = (repo_root / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
    root = ET.parse(repo_root / "package.xml").getroot()
    assert root.findtext("license") == "Apache-2.0"
    assert 'license="Apache-2.0"' in (repo_root / "setup.py").read_text()
    declared_tests = {e.text for e in root.findall("test_depend")}
    assert "ament_copyright" not in declared_tests  # declared only together with a test that runs it


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
