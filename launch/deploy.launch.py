"""On the drone: perception + policy + MAVLink bridge to PX4/ArduPilot (+ recorder), wall time.

    ros2 launch liquid_control deploy.launch.py connection:=serial:/dev/serial/by-id/usb-...:921600 \
        camera_topic:=/image_raw params_file:=/etc/liquid_control/site.yaml record:=true bag:=/data/flight1
    # through MAVROS instead of our bridge (set MAVROS setpoint_velocity mav_frame to BODY_NED first,
    # see docs/DEPLOY.md: cmd_vel is heading-frame FLU, MAVROS' default LOCAL_NED would read it as ENU):
    ros2 launch liquid_control deploy.launch.py bridge:=false cmd_vel_topic:=/mavros/setpoint_velocity/cmd_vel

`camera_topic` is where the camera driver publishes sensor_msgs/Image (its `/compressed` sibling with
perception_input:=compressed). `params_file` is one YAML with a section per node (perception, policy,
mavlink_bridge, recorder) applied after the packaged config/<node>.yaml files, so it lists only what this
vehicle changes; it also wins over the model_path and connection arguments. The default,
config/deploy_overrides.yaml, changes nothing and shows the layout.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from liquid_control.interfaces.topics import CAMERA_COMPRESSED, CAMERA_IMAGE, CMD_VEL


def generate_launch_description():
    config = os.path.join(get_package_share_directory("liquid_control"), "config")
    model = ParameterValue(LaunchConfiguration("model_path"), value_type=str)
    cmd_vel = LaunchConfiguration("cmd_vel_topic")
    camera = LaunchConfiguration("camera_topic")
    site = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("model_path", default_value="",
                              description="model file or ONNX export ('' = models/default_cfc.safetensors)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(config, "deploy_overrides.yaml"),
                              description="YAML with per-node overrides, applied after config/<node>.yaml"),
        DeclareLaunchArgument("camera_topic", default_value=CAMERA_IMAGE.name,
                              description="the camera driver's sensor_msgs/Image topic (e.g. /image_raw)"),
        DeclareLaunchArgument("perception_input", default_value="raw", choices=["raw", "compressed"],
                              description="raw: camera_topic; compressed: camera_topic/compressed"),
        DeclareLaunchArgument("connection", default_value="udpin:0.0.0.0:14540",
                              description="MAVLink connection of the bridge"),
        DeclareLaunchArgument("bridge", default_value="true",
                              description="run mavlink_bridge_node (false when MAVROS forwards cmd_vel)"),
        DeclareLaunchArgument("cmd_vel_topic", default_value=CMD_VEL.name,
                              description="where the policy publishes (e.g. /mavros/setpoint_velocity/cmd_vel)"),
        DeclareLaunchArgument("record", default_value="false",
                              description="record the flight (config/recorder.yaml topics) into an MCAP bag"),
        DeclareLaunchArgument("bag", default_value="", description="bag directory ('' = timestamped name)"),
        Node(package="liquid_control", executable="perception_node", name="perception", output="screen",
             parameters=[os.path.join(config, "perception.yaml"), {
                 "use_sim_time": False, "model_path": model,
                 "input": ParameterValue(LaunchConfiguration("perception_input"), value_type=str)}, site],
             remappings=[(CAMERA_IMAGE.name, camera), (CAMERA_COMPRESSED.name, [camera, "/compressed"])]),
        Node(package="liquid_control", executable="policy_node", name="policy", output="screen",
             parameters=[os.path.join(config, "policy.yaml"), {"use_sim_time": False, "model_path": model}, site],
             remappings=[(CMD_VEL.name, cmd_vel)]),
        Node(package="liquid_control", executable="mavlink_bridge_node", name="mavlink_bridge", output="screen",
             condition=IfCondition(LaunchConfiguration("bridge")),
             parameters=[os.path.join(config, "mavlink_bridge.yaml"), {
                 "use_sim_time": False,
                 "connection": ParameterValue(LaunchConfiguration("connection"), value_type=str)}, site],
             remappings=[(CMD_VEL.name, cmd_vel)]),
        Node(package="liquid_control", executable="recorder_node", name="recorder", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=[os.path.join(config, "recorder.yaml"), {
                 "use_sim_time": False, "output": ParameterValue(LaunchConfiguration("bag"), value_type=str)}, site],
             remappings=[(CAMERA_IMAGE.name, camera), (CMD_VEL.name, cmd_vel)]),
    ])
