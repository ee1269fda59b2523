"""liquid_control: a drone control stack whose brain is a liquid (CfC) neural network.

Where things live follows the data flow, in layers; a module imports only from its own layer or
below (tests/test_import_layers.py checks this and that module-level imports form no loop):

0. `util/`: ROS-free helpers with no package imports: where shared files live (`paths`), loop
   rate/lateness statistics (`timing`), jobs run serially, in a process pool or as Ray tasks
   (`executors`); `config.py`: one `from_dict`/`to_dict` for config dataclasses.
1. Domain cores, no ROS: `models/` (CfC and baselines, perception CNN, the model file),
   `simulation/` (PyBullet world, camera, scenarios, episodes, `session` = the sim node's logic),
   `bags/` (rosbag2 read/write), `deploy/` (MAVLink link, failsafe, vehicle state), the interface table and codec.
2. `inference/`: running trained models as they fly: runtimes, ONNX export, which model to load,
   and the one deploy loop (`loop.PolicyLoop`) plus the perception stage's frame gate, and the
   pre-flight checks of `liquid-control doctor` (`preflight`).
3. `evaluation/`: measuring a policy as deployed (closed loop in the simulator, offline on bags)
   through that same loop; statistics and plots for the reports.
4. `learning/`: data collection (DAgger flies `evaluation`'s controller), data set, training, seed
   sweeps (`sweep`);
   `analysis/`: saliency and neuron traces (`liquid-control explain`).
5. `nodes/`: thin rclpy adapters (one class + `main()` each) around the cores, and `graph`, which
   starts them as processes; helpers `common`, `vehicle_msgs` (the FC's state as ROS messages) and
   `camera_probe` (the ROS side of `liquid-control doctor`).
6. `commands/`: one module per `liquid-control` subcommand; 7. `cli.py`: the entry point.
"""

__version__ = "0.1.0"
