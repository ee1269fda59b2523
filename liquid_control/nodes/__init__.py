"""ROS 2 nodes: thin rclpy adapters around the ROS-free core, one node per module with `main()`."""
