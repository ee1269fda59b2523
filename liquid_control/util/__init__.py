"""Bottom layer: ROS-free helpers that every other package may use and that import nothing else from
liquid_control: `paths` (where the shared config/, sim/, models/ files live) and `timing` (loop rate,
lateness and counter statistics for diagnostics)."""
