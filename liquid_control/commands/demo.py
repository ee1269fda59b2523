"""`liquid-control demo`: TEMPORARY stand-in until the closed-loop flight demo exists.

It exercises the deploy path end to end, with an UNTRAINED network: build the
default perception + policy, save a model file, export both to ONNX and verify
them against PyTorch, then run a synthetic camera stream (a target drifting over
a textured background, 30 Hz with jitter and dropped frames) through
PerceptionRuntime + PolicyRuntime, timing every step. It is not a flight demo:
no simulator, no drone, and the commands are those of random weights.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

BANNER = ("NOTE: this is NOT yet a flight demo (no simulator, untrained weights). It checks the deploy path:\n"
          "model file -> ONNX export + verification -> onnxruntime perception + CfC policy on a synthetic stream.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=300, help="frames to run (default %(default)s)")
    parser.add_argument("--out", default=None, help="folder for the model file and ONNX files (default: temporary)")
    parser.add_argument("--seed", type=int, default=0, help="weights and stream seed (default %(default)s)")


def synthetic_stream(steps: int, height: int, width: int, frame_period_s: float, seed: int):
    """(image uint8 (H, W, 3) rgb8, capture time s) pairs: a bright disc drifting over a textured
    background; frames arrive with ±20% jitter and 10% of them dropped (time jumps a period)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    background = (60 + 40 * np.sin(xs / 7.0)[..., None] * np.cos(ys / 11.0)[..., None]
                  + rng.normal(0, 8, (height, width, 3))).clip(0, 255)
    stamp = 0.0
    for k in range(steps):
        stamp += frame_period_s * (rng.uniform(0.8, 1.2) + (1.0 if rng.random() < 0.1 else 0.0))
        cx = width * (0.5 + 0.35 * np.sin(0.05 * k))
        cy = height * (0.5 + 0.25 * np.cos(0.031 * k))
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2) < (0.08 * width) ** 2
        image = background.copy()
        image[disc] = (230, 40, 40)
        yield image.astype(np.uint8), stamp


def _stats(samples_s: list[float]) -> str:
    micros = np.asarray(samples_s) * 1e6
    return f"median {np.median(micros):7.1f} us   p99 {np.percentile(micros, 99):7.1f} us"


def run(args: argparse.Namespace) -> int:
    import torch

    from liquid_control.export import export_bundle
    from liquid_control.models.model_file import load_model, save_model
    from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
    from liquid_control.models.policy import PolicyConfig, PolicyModel, count_effective, count_trainable
    from liquid_control.runtime import PerceptionRuntime, PolicyRuntime, check_pair

    if args.steps < 1:
        print("error: --steps must be positive")
        return 2
    print(BANNER)
    torch.manual_seed(args.seed)
    perception = FeatureExtractor(PerceptionConfig()).eval()
    policy = PolicyModel(PolicyConfig()).eval()

    with tempfile.TemporaryDirectory(prefix="liquid_demo_") as scratch:
        folder = Path(args.out) if args.out else Path(scratch)
        started = time.perf_counter()
        model_path = save_model(folder / "demo_model.safetensors", policy=policy, perception=perception,
                                training={"note": "untrained demo weights", "seed": args.seed})
        bundle = load_model(model_path)  # what a node would do: everything below runs from files
        print(f"\n1. model file      {model_path} ({model_path.stat().st_size / 1024:.0f} KiB)")
        for role, module in (("policy", bundle.policy), ("perception", bundle.perception)):
            print(f"   {role:10s}      {count_trainable(module):,} trainable parameters, "
                  f"{count_effective(module):,} effective after masks")
        print(f"   policy core      {bundle.policy_config.kind} ({bundle.policy_config.cfc_wiring}, "
              f"{bundle.policy_config.cfc_mode} mode), state size {bundle.policy.state_size}")

        report = export_bundle(bundle.policy, bundle.perception, folder)
        print(f"2. ONNX export     {report.policy_path.name}: max |onnx - torch| = {report.policy_max_diff:.1e}; "
              f"{report.perception_path.name}: {report.perception_max_diff:.1e} "
              f"(tolerance 1e-5, {time.perf_counter() - started:.1f} s)")

        perception_rt = PerceptionRuntime(report.perception_path, threads=1)
        policy_rt = PolicyRuntime(report.policy_path, threads=1)
        check_pair(perception_rt, policy_rt)
        reference = PolicyRuntime(bundle.policy, backend="torch", threads=1)  # eager torch, same weights
        config = perception_rt.config
        print(f"3. runtime         onnxruntime providers {policy_rt.providers}, 1 thread; "
              f"{args.steps} frames {config.width}x{config.height} rgb8, 30 Hz with jitter and drops")

        period = policy_rt.frame_period_s
        times_perception, times_policy, timespans, commands, worst = [], [], [], [], 0.0
        previous_stamp = None
        for image, stamp in synthetic_stream(args.steps, config.height, config.width, period, args.seed):
            timespan = 1.0 if previous_stamp is None else (stamp - previous_stamp) / period
            previous_stamp = stamp
            t0 = time.perf_counter()
            features = perception_rt.features(image, "rgb8")
            t1 = time.perf_counter()
            command = policy_rt.step(features, timespan)
            t2 = time.perf_counter()
            times_perception.append(t1 - t0)
            times_policy.append(t2 - t1)
            timespans.append(timespan)
            commands.append(command)
            worst = max(worst, float(np.abs(reference.step(features, timespan) - command).max()))
        commands_array = np.asarray(commands)
        total = np.asarray(times_perception) + np.asarray(times_policy)
        print(f"   timespans        {min(timespans):.2f} .. {max(timespans):.2f} nominal frames "
              f"({sum(t > 1.5 for t in timespans)} dropped-frame gaps)")
        print(f"   perception       {_stats(times_perception)}")
        print(f"   policy step      {_stats(times_policy)}")
        print(f"   per frame        {_stats(list(total))}")
        print(f"   commands         |vx,vy,vz| <= {np.abs(commands_array[:, :3]).max():.3f} m/s, "
              f"|yaw rate| <= {np.abs(commands_array[:, 3]).max():.3f} rad/s (untrained weights)")
        print(f"   onnxruntime vs eager torch over the stream: max |command difference| = {worst:.1e}")
        if args.out:
            print(f"\nFiles kept in {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    ok = report.policy_max_diff <= 1e-5 and report.perception_max_diff <= 1e-5 and worst <= 1e-4
    print("\ndemo finished: " + ("deploy path OK" if ok else "MISMATCH between onnxruntime and torch"))
    return 0 if ok else 1
