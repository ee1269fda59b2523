"""Running trained models as they fly (no ROS): `runtime` (PerceptionRuntime, PolicyRuntime on
torch or onnxruntime), `export` (ONNX export + verification), `model_source` (which model a node
loads), `loop` (PolicyLoop: the one deploy loop of the policy node, `evaluate` and `evaluate-bag`)
and `frame_gate` (FrameGate: the perception node's time-order gate and bad-frame window).

Modules are imported on use so that importing the package stays cheap.
"""
