"""Learning to fly (no ROS): data collection, the shard/bag data set, augmentation, imitation
training of perception + policy, and closed-loop evaluation in the simulator.

Modules are imported on use (``from liquid_control.learning.train import train``) so that
importing the package stays cheap.
"""
