"""What travels between the nodes, without ROS: the topic/service table and the wire codec.

- `topics`: every topic and service of the graph with its default name, message type, QoS,
  producers and consumers; nodes, launch files and commands take names and QoS from it.
- `codec`: sensor_msgs/Image and CompressedImage payloads to pixels, and the 1xN 32FC1
  feature image, with one set of rules for the live nodes and the offline (bag) tools.
"""
