"""liquid_control: a drone control stack whose brain is a liquid (CfC) neural network.

The core (models, perception, simulation, learning, bags) is plain Python and imports
no ROS; `liquid_control.nodes` holds the thin rclpy adapters around it.
"""

__version__ = "0.1.0"
