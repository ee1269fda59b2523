"""Closed loop in simulation: sim + perception + policy (+ recorder), all on sim time.

    ros2 launch liquid_control sim.launch.py
    ros2 launch liquid_control sim.launch.py record:=true bag:=/tmp/flight1 model_path:=/path/model.safetensors

The sim node publishes /clock, the camera and odometry; every node uses sim time. Parameters come
from config/<node>.yaml; the same files drive `liquid_control.nodes.graph` (the `demo` command)
outside ros2 launch. A vehicle over MAVLink (PX4/ArduPilot SITL or hardware) has no camera here:
run deploy.launch.py with its `camera_topic` instead (docs/DEPLOY.md "SITL rehearsal").

Only substitutions and conditions that exist from Humble on are used (no LaunchConfigurationEquals,
deprecated since Iron, and no EqualsSubstitution, which Humble lacks).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    config = os.path.join(get_package_share_directory("liquid_control"), "config")
    model = ParameterValue(LaunchConfiguration("model_path"), value_type=str)
    return LaunchDescription([
        DeclareLaunchArgument("model_path", default_value="",
                              description="model file for perception and policy ('' = models/default_cfc.safetensors)"),
        DeclareLaunchArgument("scenario", default_value="train_fly_to_target", description="sim scenario"),
        DeclareLaunchArgument("seed", default_value="0", description="seed of the first sim episode"),
        DeclareLaunchArgument("record", default_value="false", description="record an MCAP bag"),
        DeclareLaunchArgument("bag", default_value="", description="bag directory ('' = timestamped name)"),
        Node(package="liquid_control", executable="sim_node", name="sim", output="screen",
             parameters=[os.path.join(config, "sim.yaml"), {
                 "use_sim_time": True,
                 "scenario": ParameterValue(LaunchConfiguration("scenario"), value_type=str),
                 "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int)}]),
        Node(package="liquid_control", executable="perception_node", name="perception", output="screen",
             parameters=[os.path.join(config, "perception.yaml"), {"use_sim_time": True, "model_path": model}]),
        Node(package="liquid_control", executable="policy_node", name="policy", output="screen",
             parameters=[os.path.join(config, "policy.yaml"), {"use_sim_time": True, "model_path": model}]),
        Node(package="liquid_control", executable="recorder_node", name="recorder", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=[os.path.join(config, "recorder.yaml"), {
                 "use_sim_time": True, "output": ParameterValue(LaunchConfiguration("bag"), value_type=str)}]),
    ])
