"""Replay a recorded bag through perception + policy (+ record the result), on bag time.

    ros2 launch liquid_control replay.launch.py bag:=/path/to/bag
    ros2 launch liquid_control replay.launch.py bag:=/path/to/bag record:=true record_to:=/tmp/replayed

The player publishes /clock from the bag (config/bag_player.yaml: clock true) and plays the
recorded /cmd_vel, /features and /diagnostics as /recorded/... (recorded_prefix), so the live policy's commands
and the recorded ones can be compared in the new bag and the policy never sees old features.
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
        # No default: `ros2 launch` refuses to start without bag:=... (launch's own required-argument check).
        DeclareLaunchArgument("bag", description="bag directory or .mcap file to play (required)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="model file ('' = models/default_cfc.safetensors)"),
        DeclareLaunchArgument("record", default_value="false", description="record the replay into a new bag"),
        DeclareLaunchArgument("record_to", default_value="", description="output bag ('' = timestamped name)"),
        Node(package="liquid_control", executable="bag_player_node", name="bag_player", output="screen",
             parameters=[os.path.join(config, "bag_player.yaml"), {
                 "bag": ParameterValue(LaunchConfiguration("bag"), value_type=str),
                 "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float)}]),
        Node(package="liquid_control", executable="perception_node", name="perception", output="screen",
             parameters=[os.path.join(config, "perception.yaml"), {"use_sim_time": True, "model_path": model}]),
        Node(package="liquid_control", executable="policy_node", name="policy", output="screen",
             parameters=[os.path.join(config, "policy.yaml"), {"use_sim_time": True, "model_path": model}]),
        Node(package="liquid_control", executable="recorder_node", name="recorder", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=[os.path.join(config, "recorder.yaml"), {
                 "use_sim_time": True, "output": ParameterValue(LaunchConfiguration("record_to"), value_type=str)}]),
    ])
