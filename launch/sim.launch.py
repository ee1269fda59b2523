"""Closed loop in simulation: sim (or a real vehicle over MAVLink) + perception + policy (+ recorder).

    ros2 launch liquid_control sim.launch.py                       # PyBullet sim, sim time
    ros2 launch liquid_control sim.launch.py backend:=mavlink      # same stack, PX4/ArduPilot SITL or hardware
    ros2 launch liquid_control sim.launch.py record:=true bag:=/tmp/flight1 model_path:=/path/model.safetensors

`backend` follows Crazyswarm2's launch files: `sim` runs our sim node and every node uses
sim time (/clock from the sim); `mavlink` swaps the sim node for the MAVLink bridge and
uses wall time. Parameters come from config/<node>.yaml; the same files drive
`liquid_control.nodes.graph` (the `demo` command) outside ros2 launch.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    config = os.path.join(get_package_share_directory("liquid_control"), "config")
    backend = LaunchConfiguration("backend")
    use_sim_time = ParameterValue(PythonExpression(["'", backend, "' == 'sim'"]), value_type=bool)
    model = ParameterValue(LaunchConfiguration("model_path"), value_type=str)
    return LaunchDescription([
        DeclareLaunchArgument("backend", default_value="sim", choices=["sim", "mavlink"],
                              description="sim: PyBullet sim node + sim time; mavlink: MAVLink bridge + wall time"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="model file for perception and policy ('' = models/default_cfc.safetensors)"),
        DeclareLaunchArgument("scenario", default_value="train_fly_to_target", description="sim scenario"),
        DeclareLaunchArgument("seed", default_value="0", description="seed of the first sim episode"),
        DeclareLaunchArgument("record", default_value="false", description="record an MCAP bag"),
        DeclareLaunchArgument("bag", default_value="", description="bag directory ('' = timestamped name)"),
        Node(package="liquid_control", executable="sim_node", name="sim", output="screen",
             condition=LaunchConfigurationEquals("backend", "sim"),
             parameters=[os.path.join(config, "sim.yaml"), {
                 "use_sim_time": use_sim_time,
                 "scenario": ParameterValue(LaunchConfiguration("scenario"), value_type=str),
                 "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int)}]),
        Node(package="liquid_control", executable="mavlink_bridge_node", name="mavlink_bridge", output="screen",
             condition=LaunchConfigurationEquals("backend", "mavlink"),
             parameters=[os.path.join(config, "mavlink_bridge.yaml"), {"use_sim_time": use_sim_time}]),
        Node(package="liquid_control", executable="perception_node", name="perception", output="screen",
             parameters=[os.path.join(config, "perception.yaml"),
                         {"use_sim_time": use_sim_time, "model_path": model}]),
        Node(package="liquid_control", executable="policy_node", name="policy", output="screen",
             parameters=[os.path.join(config, "policy.yaml"), {"use_sim_time": use_sim_time, "model_path": model}]),
        Node(package="liquid_control", executable="recorder_node", name="recorder", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=[os.path.join(config, "recorder.yaml"), {
                 "use_sim_time": use_sim_time, "output": ParameterValue(LaunchConfiguration("bag"), value_type=str)}]),
    ])
