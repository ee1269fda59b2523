"""ament_python package that also installs with plain `pip install -e .`."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "liquid_control"


def tree(folder):
    """data_files entries for every file below `folder`, keeping its layout under share/."""
    entries = {}
    for path in glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path):
            entries.setdefault(os.path.join("share", PACKAGE, os.path.dirname(path)), []).append(path)
    return sorted(entries.items())


# Console scripts: the CLI and one entry per ROS node (`ros2 run liquid_control <node>`).
NODES = {
    "mavlink_bridge_node": "liquid_control.nodes.mavlink_bridge_node:main",
    "recorder_node": "liquid_control.nodes.recorder_node:main",
    "bag_player_node": "liquid_control.nodes.bag_player_node:main",
    "sim_node": "liquid_control.nodes.sim_node:main",
    "perception_node": "liquid_control.nodes.perception_node:main",
    "policy_node": "liquid_control.nodes.policy_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("sim"),
        *tree("models"),
        *tree("benchmarks"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="liquid_control team",
    maintainer_email="team@liquid-control.dev",
    description="Liquid (CfC) neural drone control as ROS 2 nodes, with PyBullet simulation.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "liquid-control = liquid_control.cli:main",
            *[f"{name} = {target}" for name, target in NODES.items()],
        ],
    },
)
