"""Learning to fly (no ROS): data collection, the shard/bag data set, augmentation and imitation
training of perception + policy: `recipe` (the YAML recipe), `sampler` (TBPTT batches), `train`
(the loop). Closed-loop evaluation: liquid_control.evaluation.

Modules are imported on use (``from liquid_control.learning.train import train``) so that
importing the package stays cheap.
"""
