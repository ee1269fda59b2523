"""On the drone: perception + policy + MAVLink bridge to PX4/ArduPilot (no sim, wall time).

    ros2 launch liquid_control deploy.launch.py connection:=serial:/dev/ttyTHS1:921600
    # through MAVROS instead of our bridge (set MAVROS setpoint_velocity mav_frame to BODY_NED first,
    # see docs/DEPLOY.md: cmd_vel is heading-frame FLU, MAVROS' default LOCAL_NED would read it as ENU):
    ros2 launch liquid_control deploy.launch.py bridge:=false cmd_vel_topic:=/mavros/setpoint_velocity/cmd_vel

The camera driver must publish camera/image_raw (or camera/image_raw/compressed with
perception_input:=compressed).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from liquid_control.interfaces.topics import CMD_VEL


def generate_launch_description():
    config = os.path.join(get_package_share_directory("liquid_control"), "config")
    model = ParameterValue(LaunchConfiguration("model_path"), value_type=str)
    cmd_vel = LaunchConfiguration("cmd_vel_topic")
    return LaunchDescription([
        DeclareLaunchArgument("model_path", default_value="",
                              description="model file or ONNX export ('' = models/default_cfc.safetensors)"),
        DeclareLaunchArgument("perception_input", default_value="raw", choices=["raw", "compressed"],
                              description="camera/image_raw or camera/image_raw/compressed"),
        DeclareLaunchArgument("connection", default_value="udpin:0.0.0.0:14540",
                              description="MAVLink connection of the bridge"),
        DeclareLaunchArgument("bridge", default_value="true",
                              description="run mavlink_bridge_node (false when MAVROS forwards cmd_vel)"),
        DeclareLaunchArgument("cmd_vel_topic", default_value=CMD_VEL.name,
                              description="where the policy publishes (e.g. /mavros/setpoint_velocity/cmd_vel)"),
        Node(package="liquid_control", executable="perception_node", name="perception", output="screen",
             parameters=[os.path.join(config, "perception.yaml"), {
                 "use_sim_time": False, "model_path": model,
                 "input": ParameterValue(LaunchConfiguration("perception_input"), value_type=str)}]),
        Node(package="liquid_control", executable="policy_node", name="policy", output="screen",
             parameters=[os.path.join(config, "policy.yaml"), {"use_sim_time": False, "model_path": model}],
             remappings=[(CMD_VEL.name, cmd_vel)]),
        Node(package="liquid_control", executable="mavlink_bridge_node", name="mavlink_bridge", output="screen",
             condition=IfCondition(LaunchConfiguration("bridge")),
             parameters=[os.path.join(config, "mavlink_bridge.yaml"), {
                 "use_sim_time": False,
                 "connection": ParameterValue(LaunchConfiguration("connection"), value_type=str)}],
             remappings=[(CMD_VEL.name, cmd_vel)]),
    ])
