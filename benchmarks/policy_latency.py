"""Policy and perception latency at batch 1 on one CPU thread, against the ncps reference.

In one run (torch.set_num_threads(1), onnxruntime intra_op_num_threads=1):

- ncps 1.0.1 wired CfC (AutoNCP 80 neurons / 16 motor, sparsity 0.5, as the default policy)
  stepped in eager torch, plus the same linear readout: the REFERENCE row (ratio 1.0);
- our default policy with the SAME wiring and weights (copied from ncps as in
  tests/test_cfc_parity.py; outputs checked equal to 1e-5) in eager torch, and exported to
  ONNX under onnxruntime: the bare session call on the plain and on the folded graph
  (export.py's deploy form), and the deployed `PolicyRuntime.step` (input checks, IOBinding,
  state ping-pong);
- LSTM and GRU policies of the same parameter budget (policy_for_budget), eager and onnxruntime;
- perception alone and perception + policy per frame at the default image size
  (128x96 rgb8 camera frame, preprocess included), onnxruntime and eager torch.

Samples are taken in interleaved rounds so that load from other processes spreads evenly over
all rows. Median and p99 of per-call wall time; "vs ncps" = ncps median / row median (higher is
faster); "mean CPU us" = this thread's CPU time over all calls of the row / calls, which leaves out
time spent preempted by other processes when the cores are shared.

Run:  .venv/bin/python benchmarks/policy_latency.py                (about 40 s)
      .venv/bin/python benchmarks/policy_latency.py --steps 600    (quick look)
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from liquid_control.inference.export import policy_onnx
from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime
from liquid_control.inference.model_source import default_model_path
from liquid_control.models.model_file import load_model
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig, preprocess
from liquid_control.models.policy import PolicyConfig, PolicyModel, count_trainable, policy_for_budget
from liquid_control.models.wiring import Wiring

TARGET_STEP_US = 15.0
TARGET_SPEEDUP = 5.0
TARGET_FRAME_US = 1000.0


def matched_ncps_pair(seed: int = 0):
    """(ncps CfC, our PolicyModel) with the same NCP wiring and weights, readout shared."""
    from ncps.torch import CfC as NcpsCfC
    from ncps.wirings import AutoNCP

    default = PolicyConfig()
    torch.manual_seed(seed)
    reference = NcpsCfC(default.feature_size, AutoNCP(default.cfc_units, default.cfc_motor_neurons,
                                                      sparsity_level=default.cfc_sparsity, seed=default.cfc_seed))
    ncps_wiring = reference.wiring
    wiring = Wiring.from_adjacency(ncps_wiring.sensory_adjacency_matrix, ncps_wiring.adjacency_matrix,
                                   ncps_wiring.get_neurons_of_layer(0), ncps_wiring.get_neurons_of_layer(1),
                                   ncps_wiring.get_neurons_of_layer(2))
    ours = PolicyModel(PolicyConfig(wiring=wiring.to_dict()))
    with torch.no_grad():
        for i, cell in enumerate(ours.core.cfc.layers):
            ref_cell = getattr(reference.rnn_cell, f"layer_{i}")
            assert torch.equal(cell.head_mask[: cell.hidden_size], ref_cell.sparsity_mask), "wiring mismatch"
            heads = [ref_cell.ff1, ref_cell.ff2, ref_cell.time_a, ref_cell.time_b]
            cell.head.weight.copy_(torch.cat([h.weight for h in heads], dim=0))
            cell.head.bias.copy_(torch.cat([h.bias for h in heads], dim=0))
    return reference.eval(), ours.eval()


def time_calls(fn: Callable[[int], object], count: int, offset: int) -> tuple[list[float], float]:
    """Per-call wall times (us) of fn(offset .. offset+count-1), and this thread's CPU time (us)
    over the whole block (not per call: reading the thread CPU clock is a ~1-2 us syscall)."""
    samples = []
    clock = time.perf_counter_ns
    cpu_start = time.thread_time_ns()
    for k in range(offset, offset + count):
        start = clock()
        fn(k)
        samples.append((clock() - start) / 1e3)
    return samples, (time.thread_time_ns() - cpu_start) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed calls per policy row (default 3000)")
    parser.add_argument("--frames", type=int, default=2000, help="timed calls per perception row (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    reference, ours = matched_ncps_pair()
    feature_size = ours.config.feature_size
    stream = rng.normal(size=(512, feature_size)).astype(np.float32)
    timespans = rng.choice([0.8, 0.9, 1.0, 1.1, 1.2, 2.0], size=512).astype(np.float32)
    stream_t = torch.from_numpy(stream)
    timespans_t = torch.from_numpy(timespans).reshape(-1, 1, 1)

    # Same weights => same outputs (readout shared, identity normalisation, unit command scale).
    with torch.inference_mode():
        h_ref = torch.zeros(1, ours.state_size)
        h_ours = ours.initial_state(1)
        worst = 0.0
        for k in range(50):
            y_ref, h_ref = reference.rnn_cell(stream_t[k:k + 1], h_ref, timespans_t[k])
            y_ours, h_ours = ours.step(stream_t[k:k + 1], h_ours, timespans_t[k])
            worst = max(worst, float((ours.readout(y_ref) - y_ours).abs().max()))
    assert worst <= 1e-5, f"ncps and our policy disagree by {worst}"

    rows: dict[str, Callable[[int], object]] = {}
    notes: dict[str, str] = {}

    ref_state = [torch.zeros(1, ours.state_size)]

    def ncps_step(k: int) -> None:
        with torch.inference_mode():
            y, ref_state[0] = reference.rnn_cell(stream_t[k % 512:k % 512 + 1], ref_state[0], timespans_t[k % 512])
            ours.readout(y)

    rows["ncps 1.0.1 wired CfC + readout, eager torch"] = ncps_step
    notes["ncps 1.0.1 wired CfC + readout, eager torch"] = "reference"

    def eager_step(model: PolicyModel) -> Callable[[int], None]:
        state = [model.initial_state(1)]

        def step(k: int) -> None:
            with torch.inference_mode():
                _, state[0] = model.step(stream_t[k % 512:k % 512 + 1], state[0], timespans_t[k % 512])
        return step

    def bare_session(model: PolicyModel, fold: bool = True) -> Callable[[int], None]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(policy_onnx(model, fold=fold).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feed = {"features": stream[:1].copy(), "state": np.zeros((1, model.state_size), np.float32),
                "timespan": np.ones((1, 1), np.float32)}

        def step(k: int) -> None:
            feed["features"][0] = stream[k % 512]
            feed["timespan"][0, 0] = timespans[k % 512]
            _, feed["state"] = session.run(None, feed)
        return step

    def deployed(runtime: PolicyRuntime) -> Callable[[int], None]:
        return lambda k: runtime.step(stream[k % 512], float(timespans[k % 512]))

    rows["ours CfC (same weights), eager torch"] = eager_step(ours)
    rows["ours CfC, onnxruntime session.run, plain PolicyModel.step graph"] = bare_session(ours, fold=False)
    rows["ours CfC, onnxruntime session.run, folded graph (what export writes)"] = bare_session(ours)
    policy_rt = PolicyRuntime(ours, backend="onnxruntime", threads=1)
    rows["ours CfC, PolicyRuntime onnxruntime (deployed)"] = deployed(policy_rt)
    rows["ours CfC, PolicyRuntime torch backend"] = deployed(PolicyRuntime(ours, backend="torch", threads=1))
    counts = {"ours": count_trainable(ours)}
    for kind in ("lstm", "gru"):
        torch.manual_seed(1)
        model = PolicyModel(policy_for_budget(kind, 20000, feature_size)).eval()
        counts[kind] = count_trainable(model)
        rows[f"{kind.upper()} ({counts[kind]:,} params), eager torch"] = eager_step(model)
        rows[f"{kind.upper()} ({counts[kind]:,} params), PolicyRuntime onnxruntime"] = deployed(
            PolicyRuntime(model, backend="onnxruntime", threads=1))

    # Perception at the default camera size; frames are real camera-sized uint8 images.
    torch.manual_seed(2)
    perception = FeatureExtractor(PerceptionConfig()).eval()
    config = perception.config
    images = [rng.integers(0, 256, (config.height, config.width, 3), dtype=np.uint8) for _ in range(8)]
    perception_ort = PerceptionRuntime(perception, backend="onnxruntime", threads=1)
    perception_torch = PerceptionRuntime(perception, backend="torch", threads=1)
    policy_torch = PolicyRuntime(ours, backend="torch", threads=1)
    frame_rows: dict[str, Callable[[int], object]] = {
        "perception only (preprocess + net), onnxruntime": lambda k: perception_ort.features(images[k % 8], "rgb8"),
        "perception only (preprocess + net), eager torch": lambda k: perception_torch.features(images[k % 8], "rgb8"),
        "perception + policy per frame, onnxruntime": lambda k: policy_rt.step(
            perception_ort.features(images[k % 8], "rgb8"), float(timespans[k % 512])),
        "perception + policy per frame, eager torch": lambda k: policy_torch.step(
            perception_torch.features(images[k % 8], "rgb8"), float(timespans[k % 512])),
    }
    # The shipped model as it flies (its own perception size and input resolution, its trained CfC).
    shipped = load_model(default_model_path())
    shipped_config = shipped.perception_config
    shipped_perception = PerceptionRuntime(shipped.perception, backend="onnxruntime", threads=1)
    shipped_policy = PolicyRuntime(shipped.policy, backend="onnxruntime", threads=1)
    shipped_name = (f"shipped model per frame ({shipped_config.height}x{shipped_config.width} input, "
                    f"{count_trainable(shipped.perception):,} + {count_trainable(shipped.policy):,} params), onnxruntime")
    frame_rows[shipped_name] = lambda k: shipped_policy.step(
        shipped_perception.features(images[k % 8], "rgb8"), float(timespans[k % 512]))  # camera-sized frames
    tensor_image = torch.from_numpy(preprocess(images[0], "rgb8", config))[None]
    with torch.inference_mode():
        assert np.abs(perception_ort.features(images[0], "rgb8") - perception(tensor_image)[0].numpy()).max() <= 1e-5

    samples: dict[str, list[float]] = {name: [] for name in (*rows, *frame_rows)}
    cpu_us: dict[str, float] = {name: 0.0 for name in samples}
    for table, total in ((rows, args.steps), (frame_rows, args.frames)):
        for name, fn in table.items():
            time_calls(fn, args.warmup, 0)
        per_round = max(1, total // args.rounds)
        for r in range(args.rounds):
            for name, fn in table.items():
                wall, cpu = time_calls(fn, per_round, r * per_round)
                samples[name] += wall
                cpu_us[name] += cpu

    reference_median = float(np.median(samples["ncps 1.0.1 wired CfC + readout, eager torch"]))
    print(f"policy_latency: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, 1 thread, batch 1; "
          f"{args.steps} policy steps / {args.frames} frames per row after {args.warmup} warm-up, {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"default policy: {counts['ours']:,} trainable parameters (wired CfC, same weights as ncps; "
          f"outputs equal to {worst:.1e}); perception {count_trainable(perception):,} parameters at "
          f"{config.width}x{config.height}\n")
    print("| what | median us | p99 us | vs ncps | mean CPU us |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for name, values in samples.items():
        median, p99 = float(np.median(values)), float(np.percentile(values, 99))
        medians[name] = median
        print(f"| {name} | {median:.1f} | {p99:.1f} | {reference_median / median:.2f}x | "
              f"{cpu_us[name] / len(values):.1f} |")
    deployed_us = medians["ours CfC, PolicyRuntime onnxruntime (deployed)"]
    frame_us = medians["perception + policy per frame, onnxruntime"]
    print()
    print(f"target: deployed policy step <= {TARGET_STEP_US:g} us median: {deployed_us:.1f} us -> "
          f"{'MET' if deployed_us <= TARGET_STEP_US else 'MISSED'}")
    print(f"target: >= {TARGET_SPEEDUP:g}x faster than ncps eager: {reference_median / deployed_us:.1f}x -> "
          f"{'MET' if reference_median / deployed_us >= TARGET_SPEEDUP else 'MISSED'}")
    print(f"target: perception + policy per frame <= {TARGET_FRAME_US:g} us median: {frame_us:.0f} us -> "
          f"{'MET' if frame_us <= TARGET_FRAME_US else 'MISSED'}")


if __name__ == "__main__":
    main()
