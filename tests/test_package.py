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
