"""Measuring a policy as it is deployed (no ROS): `closed_loop` flies model files in the simulator,
`bag` replays recorded bags offline; both drive the deploy loop (liquid_control.inference.loop), so
only the way frames and clocks reach it differs from the policy node. `stats` (Wilson intervals)
and `plots` (episode trajectories) serve their reports.

Modules are imported on use so that importing the package stays cheap.
"""
