"""Deployment on a real vehicle: the MAVLink link to the flight controller and the failsafes (no ROS)."""
