"""Offline analysis of trained models (ROS-free): what the policy looks at, and what its neurons do."""
