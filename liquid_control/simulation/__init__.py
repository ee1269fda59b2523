"""Simulated world (no ROS): PyBullet quadrotor, flight controller, camera, scenes.

The facade is `DroneWorld`; see drone_world.py. Frames: world x forward (yaw 0), y left,
z up (m); body FLU; commands [vx, vy, vz, yaw_rate] in the heading frame FLU (yaw only), m/s and rad/s.
"""
from liquid_control.simulation.airframe import Airframe, ControllerGains, load_airframe
from liquid_control.simulation.camera import CameraConfig, RayCastRenderer, intrinsics, project
from liquid_control.simulation.controller import ControlLimits, VelocityController
from liquid_control.simulation.drone_world import DroneWorld, Frame
from liquid_control.simulation.image_effects import ImageEffects
from liquid_control.simulation.quadrotor import DroneState, NoiseConfig, PhysicsOptions, QuadrotorSim, WindConfig
from liquid_control.simulation.world import GroundConfig, LightConfig, Obstacle, SceneConfig, SceneObject, SkyConfig

__all__ = [
    "Airframe", "CameraConfig", "ControlLimits", "ControllerGains", "DroneState", "DroneWorld", "Frame",
    "GroundConfig", "ImageEffects", "LightConfig", "NoiseConfig", "Obstacle", "PhysicsOptions", "QuadrotorSim",
    "RayCastRenderer", "SceneConfig", "SceneObject", "SkyConfig", "VelocityController", "WindConfig",
    "intrinsics", "load_airframe", "project",
]
