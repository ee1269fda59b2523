"""The package installs both ways the issue asks for: colcon (ament_python) and plain pip.

Both build from a copy of the files git tracks, so a file missing from setup.py's
data_files or console scripts shows up here rather than on a robot.
"""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_launch_files import setup_nodes

VENV_BIN = Path(sys.executable).parent


def tracked_copy(repo_root: Path, dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (repo_root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, dest / name)
    return dest


def expected_share_files(repo_root: Path) -> list[str]:
    files = ["package.xml", "sim/airframes/cf2x.yaml", "benchmarks/policy_latency.py"]
    files += [f"launch/{p.name}" for p in (repo_root / "launch").glob("*.launch.py")]
    files += [f"config/{p.name}" for p in (repo_root / "config").glob("*.yaml")]
    return files


@pytest.mark.skipif(shutil.which("colcon", path=str(VENV_BIN)) is None, reason="colcon not installed")
def test_colcon_build_installs_ament_python_layout(repo_root, tmp_path):
    tracked_copy(repo_root, tmp_path / "src" / "liquid_control")
    proc = subprocess.run([str(VENV_BIN / "colcon"), "build"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = tmp_path / "install" / "liquid_control"
    # `ros2 run liquid_control <node>` looks in lib/<package>.
    for script in ["liquid-control", *setup_nodes()]:
        assert (prefix / "lib" / "liquid_control" / script).is_file(), script
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "liquid_control").is_file()
    for name in expected_share_files(repo_root):
        assert (prefix / "share" / "liquid_control" / name).is_file(), name


def test_pip_wheel_carries_console_scripts_and_share_files(repo_root, tmp_path):
    # A wheel, not `pip install --prefix`: installing elsewhere would still uninstall this venv's copy.
    src = tracked_copy(repo_root, tmp_path / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("liquid_control-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for script in ["liquid-control", *setup_nodes()]:
        assert f"{script} = " in entry_points, script
    data = "liquid_control-0.1.0.data/data/share/liquid_control/"
    for name in expected_share_files(repo_root):
        assert data + name in names, name
