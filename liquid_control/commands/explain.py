"""`liquid-control explain`: see what the policy sees: saliency overlays and CfC neuron traces.

    liquid-control explain --model M (--scenario S [--seed K] | --bag B) --out DIR [--frames N]
                           [--method vbp|ig|both] [--ig-target norm|vx|vy|vz|yaw_rate]
                           [--ig-baseline black|blur] [--ig-steps STEPS] [--duration S] [--no-video]

Frames come from a simulated episode flown closed loop by the model itself (scenario S, seed K,
through the deployed runtimes, as `evaluate` flies it), or from a rosbag2 bag's image topic. Each
frame is replayed through the model's perception + policy in torch, one step at a time with the
recurrent state carried and timespans from the capture times, as deployed. Writes into DIR:

- saliency_strip.png: N evenly spaced frames, the camera image above its saliency overlay(s);
- saliency.mp4: every frame, image | overlay(s), with the time and the command;
- neuron_traces.png: the policy's recurrent state per neuron over time, the commands below;
- explain.json: per-frame saliency mass statistics (centroid, thirds, mass on red target pixels),
  timespans, commands, and the output paths.

Methods (liquid_control/analysis/saliency.py): vbp = VisualBackProp over the conv trunk (what
drives the features); ig = integrated gradients of the command (norm, or one axis) w.r.t. the
image through perception and one policy step (what drives the command).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

AXES = ("vx", "vy", "vz", "yaw_rate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from liquid_control.analysis.saliency import IG_BASELINES, IG_TARGETS
    from liquid_control.evaluation.closed_loop import HELD_OUT_SEED

    parser.add_argument("--model", type=Path, required=True, help="model file (.safetensors): perception + policy")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", help="scenario name (sim/scenarios/<name>.yaml) or path: fly it closed loop")
    source.add_argument("--bag", type=Path, help="rosbag2 bag (directory, .mcap or .db3): use its camera images")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                        help=f"episode seed for --scenario (default {HELD_OUT_SEED}, held out from training)")
    parser.add_argument("--duration", type=float, default=None, help="override the episode length (s)")
    parser.add_argument("--image-topic", default=None, help="image topic for --bag (default: auto-detected)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--frames", type=int, default=8, help="frames in the strip (default 8)")
    parser.add_argument("--method", default="both", choices=("vbp", "ig", "both"),
                        help="saliency method(s) (default both)")
    parser.add_argument("--ig-target", default="norm", choices=IG_TARGETS,
                        help="integrated gradients of the command's norm (default) or of one axis")
    parser.add_argument("--ig-baseline", default="black", choices=IG_BASELINES,
                        help="integrated gradients baseline image (default black)")
    parser.add_argument("--ig-steps", type=int, default=32, help="integrated gradients path steps (default 32)")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch"),
                        help="runtime that flies the closed-loop episode (default auto)")
    parser.add_argument("--no-video", action="store_true", help="skip saliency.mp4")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------- frame sources
class _FrameRecorder:
    """Controller wrapper keeping each newly delivered frame and the command the policy gave for it."""

    def __init__(self, base: Any, bar: Any) -> None:
        self.base, self.bar = base, bar
        self.frames: list[Any] = []
        self.commands: list[np.ndarray] = []

    def reset(self, spec: Any) -> None:
        self.base.reset(spec)
        self.frames, self.commands = [], []

    def act(self, observation: Any) -> np.ndarray:
        command = self.base.act(observation)
        frame = observation.frame
        if frame is not None and (not self.frames or frame.seq != self.frames[-1].seq):
            self.frames.append(frame)
            self.commands.append(np.asarray(command, dtype=float).copy())
        self.bar.update()
        return command


def frames_from_scenario(model: Path, scenario_name: str, seed: int, duration_s: float | None, backend: str,
                         progress: bool) -> tuple[list[np.ndarray], np.ndarray, dict[str, Any], np.ndarray]:
    """Fly the scenario with the model closed loop -> (RGB frames, capture times s, source info,
    closed-loop commands per frame)."""
    from tqdm import tqdm

    from liquid_control.evaluation.closed_loop import PolicyController
    from liquid_control.simulation.episode import EpisodeConfig, run_episode
    from liquid_control.simulation.scenario import load_scenario

    scenario = load_scenario(scenario_name)
    config = EpisodeConfig(render=True, duration_s=duration_s)
    steps = int(math.ceil((duration_s or scenario.duration_s) * config.control_hz))
    with tqdm(total=steps, desc=f"flying {scenario.name} #{seed}", unit="step", disable=not progress,
              file=sys.stderr) as bar:
        recorder = _FrameRecorder(PolicyController.from_model(model, backend=backend), bar)
        result = run_episode((scenario, seed), recorder, None, config)
        bar.total = bar.n  # the episode may end early (success, crash)
        bar.refresh()
    if not recorder.frames:
        raise ValueError(f"the episode of {scenario.name} seed {seed} delivered no camera frames")
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (bool, int, float, str)) or v is None}
    info = {"kind": "scenario", "scenario": scenario.name, "seed": seed, "outcome": metrics}
    return ([f.image for f in recorder.frames], np.array([f.capture_time_s for f in recorder.frames]), info,
            np.array(recorder.commands))


def frames_from_bag(bag: Path, image_topic: str | None) -> tuple[list[np.ndarray], np.ndarray, dict[str, Any]]:
    """A bag's camera images -> (RGB frames, stamps in s from the first, source info)."""
    from liquid_control.bags import BagError
    from liquid_control.bags.reader import BagReader

    with BagReader(bag, image_topic=image_topic) as reader:
        if reader.image_topic is None:
            raise BagError(f"bag {bag} has no image topic with messages")
        images, stamps = [], []
        for stamp_ns, image, _ in reader.images():
            images.append(image)
            stamps.append(stamp_ns)
        topic = reader.image_topic
    if not images:
        raise BagError(f"bag {bag}: image topic {topic} holds no images")
    stamps_s = (np.array(stamps, dtype=np.int64) - stamps[0]) / 1e9
    return images, stamps_s, {"kind": "bag", "bag": str(bag), "image_topic": topic}


# --------------------------------------------------------------------------- drawing
def _heat(saliency: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Saliency (h, w) in [0, 1] over an RGB image (H, W, 3) -> RGB overlay (jet colour map)."""
    import cv2

    sal = cv2.resize(saliency.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(sal * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    alpha = 0.25 + 0.5 * sal[:, :, None]  # salient pixels show the heat, the rest mostly the image
    return np.clip((1 - alpha) * image + alpha * heat, 0, 255).astype(np.uint8)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    tile = tile.copy()
    scale = max(0.3, tile.shape[0] / 480)
    cv2.putText(tile, text, (3, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (3, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return tile


def _display(image: np.ndarray, height: int = 192) -> np.ndarray:
    import cv2

    scale = max(1, int(round(height / image.shape[0])))
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else image


def _pad(tile: np.ndarray) -> np.ndarray:
    return np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255)


def _tiles(image: np.ndarray, maps: dict[str, np.ndarray], k: int) -> list[np.ndarray]:
    base = _display(image)
    return [base] + [_display(_heat(m[k], image)) for m in maps.values()]


def save_strip(images: list[np.ndarray], maps: dict[str, np.ndarray], picks: list[int], times: np.ndarray,
               path: Path, columns: int = 8) -> None:
    """Columns = picked frames (wrapping after `columns`); rows = image, then one overlay per method."""
    import cv2

    blocks = []
    for start in range(0, len(picks), columns):
        cols = []
        for k in picks[start:start + columns]:
            tiles = _tiles(images[k], maps, k)
            tiles[0] = _label(tiles[0], f"t={times[k]:.1f}s")
            tiles[1:] = [_label(t, name.upper()) for t, name in zip(tiles[1:], maps)]
            cols.append(np.concatenate([_pad(t) for t in tiles], axis=0))
        while len(cols) < min(columns, len(picks)):  # pad a short last block to the full width
            cols.append(np.full_like(cols[0], 255))
        blocks.append(np.concatenate(cols, axis=1))
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(blocks, axis=0), cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")


def save_video(images: list[np.ndarray], maps: dict[str, np.ndarray], times: np.ndarray, commands: np.ndarray,
               path: Path, fps: float, progress: bool) -> None:
    import cv2
    from tqdm import tqdm

    writer = None
    try:
        for k in tqdm(range(len(images)), desc="video", unit="frame", disable=not progress, file=sys.stderr):
            tiles = _tiles(images[k], maps, k)
            tiles[1:] = [_label(t, name.upper()) for t, name in zip(tiles[1:], maps)]
            c = commands[k]
            tiles[0] = _label(tiles[0], f"t={times[k]:.2f}s v=({c[0]:+.1f},{c[1]:+.1f},{c[2]:+.1f}) w={c[3]:+.1f}")
            frame = np.concatenate([_pad(t) for t in tiles], axis=1)
            frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]  # even size for mp4v
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write video {path}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()


def save_traces(states: np.ndarray, commands: np.ndarray, times: np.ndarray, layer_sizes: list[int] | None,
                picks: list[int], title: str, path: Path) -> None:
    """Recurrent state per neuron over time (heat map; NCP layers separated), motor traces, commands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    motor = layer_sizes[-1] if layer_sizes else min(16, states.shape[1])
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]})
    extent = (times[0], times[-1] if times[-1] > times[0] else times[0] + 1, states.shape[1] - 0.5, -0.5)
    limit = float(np.abs(states).max()) or 1.0
    im = axes[0].imshow(states.T, aspect="auto", cmap="coolwarm", vmin=-limit, vmax=limit, extent=extent,
                        interpolation="nearest")
    fig.colorbar(im, ax=axes[0], pad=0.01, label="state")
    if layer_sizes:
        edge = 0
        for name, size in zip(["inter", "command", "motor"][-len(layer_sizes):], layer_sizes):
            axes[0].text(times[0], edge + size / 2, f" {name}", va="center", fontsize=8)
            edge += size
            if edge < states.shape[1]:
                axes[0].axhline(edge - 0.5, color="k", lw=0.8)
    axes[0].set_ylabel("neuron")
    axes[0].set_title(title)
    axes[1].plot(times, states[:, -motor:], lw=0.8)
    axes[1].set_ylabel(f"last {motor} neurons\n(motor: readout)" if layer_sizes else f"last {motor} neurons")
    for i, axis in enumerate(AXES):
        axes[2].plot(times, commands[:, i], label=axis + (" (rad/s)" if axis == "yaw_rate" else " (m/s)"))
    axes[2].set_ylabel("command")
    axes[2].set_xlabel("time (s)")
    axes[2].legend(loc="upper right", fontsize=8, ncol=4)
    for ax in axes[1:]:
        ax.grid(alpha=0.3)
        for k in picks:
            ax.axvline(times[k], color="grey", lw=0.5, ls=":")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- run
def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def explain(args: argparse.Namespace) -> dict[str, Any]:
    """Everything after argument checks; raises ModelFileError / ScenarioError / BagError / ValueError."""
    import torch
    from tqdm import tqdm

    from liquid_control.analysis.saliency import (integrated_gradients, mass_stats, red_mask, replay_policy,
                                                  visual_backprop)
    from liquid_control.models.model_file import load_model
    from liquid_control.models.perception import preprocess

    bundle = load_model(args.model)
    if bundle.perception is None or bundle.policy is None:
        raise ValueError(f"{args.model} must hold both a perception and a policy model")
    perception, policy = bundle.perception, bundle.policy
    progress = not args.no_progress
    closed_loop = None
    if args.scenario is not None:
        images, times, source, closed_loop = frames_from_scenario(args.model, args.scenario, args.seed,
                                                                  args.duration, args.backend, progress)
    else:
        images, times, source = frames_from_bag(args.bag, args.image_topic)
    cfg = perception.config
    inputs = torch.as_tensor(np.stack([preprocess(im, "rgb8", cfg) for im in images]))
    replay = replay_policy(perception, policy, inputs, times)

    methods = ["vbp", "ig"] if args.method == "both" else [args.method]
    maps: dict[str, np.ndarray] = {}
    if "vbp" in methods:
        maps["vbp"] = torch.cat([visual_backprop(perception, inputs[i:i + 64])
                                 for i in range(0, len(images), 64)]).numpy()
    if "ig" in methods:
        spans = torch.as_tensor(replay.timespans[:, None], dtype=torch.float32)
        chunks = []
        for i in tqdm(range(0, len(images), 8), desc="integrated gradients", unit="x8 frames",
                      disable=not progress, file=sys.stderr):
            chunks.append(integrated_gradients(perception, policy, inputs[i:i + 8], replay.states_before[i:i + 8],
                                               spans[i:i + 8], target=args.ig_target, baseline=args.ig_baseline,
                                               steps=args.ig_steps)[0])
        maps["ig"] = torch.cat(chunks).numpy()

    n = len(images)
    picks = sorted({int(round(v)) for v in np.linspace(0, n - 1, min(args.frames, n))})
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    paths = {"strip": out / "saliency_strip.png", "traces": out / "neuron_traces.png", "json": out / "explain.json"}
    save_strip(images, maps, picks, times, paths["strip"])
    if not args.no_video:
        paths["video"] = out / "saliency.mp4"
        span = np.diff(times)
        fps = 1.0 / float(np.median(span)) if span.size and np.median(span) > 0 else 1.0 / policy.frame_period_s
        save_video(images, maps, times, replay.commands, paths["video"], float(np.clip(fps, 1.0, 120.0)), progress)
    layer_sizes = list(policy.wiring.layer_sizes) if getattr(policy, "wiring", None) is not None else None
    label = f"{source['scenario']} seed {source['seed']}" if source["kind"] == "scenario" else f"bag {args.bag}"
    save_traces(replay.states, replay.commands, times, layer_sizes, picks,
                f"{policy.config.kind} state, {label}", paths["traces"])

    per_frame = []
    for k in range(n):
        # red pixels at the network's input size: the targets of the shipped scenarios are red
        region = red_mask((inputs[k].numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
        entry: dict[str, Any] = {"index": k, "time_s": float(times[k]), "timespan": float(replay.timespans[k]),
                                 "command": [float(v) for v in replay.commands[k]], "in_strip": k in picks}
        for name, m in maps.items():
            entry[name] = mass_stats(m[k], region if region.any() else None)
        per_frame.append(entry)
    summary: dict[str, Any] = {}
    for name in maps:
        stats = [f[name] for f in per_frame if "centroid_xy" in f[name]]
        on_target = [s for s in stats if "region_mass" in s]
        summary[name] = {
            "mean_rows_top_middle_bottom": np.mean([s["rows_top_middle_bottom"] for s in stats], axis=0).tolist()
            if stats else None,
            "mean_centroid_xy": np.mean([s["centroid_xy"] for s in stats], axis=0).tolist() if stats else None,
            "frames_with_red_target": len(on_target),
            "mean_red_target_mass": float(np.mean([s["region_mass"] for s in on_target])) if on_target else None,
            "mean_red_target_area": float(np.mean([s["region_area"] for s in on_target])) if on_target else None,
        }
    report: dict[str, Any] = {
        "model": str(args.model), "source": source, "methods": methods, "frames": n,
        "frame_period_s": float(policy.frame_period_s), "strip_frames": picks,
        "integrated_gradients": {"target": args.ig_target, "baseline": args.ig_baseline, "steps": args.ig_steps}
        if "ig" in maps else None,
        "policy": {"kind": policy.config.kind, "state_size": int(policy.state_size), "layer_sizes": layer_sizes},
        "paths": {k: str(v) for k, v in paths.items()},
        "summary": summary,
        "notes": "maps are normalised to [0, 1] per frame; centroid x, y in [-1, 1] (right, down positive); "
                 "region = red pixels of the network input (the targets are red), region_area = chance level",
        "per_frame": per_frame,
    }
    if closed_loop is not None:  # the torch replay should reproduce what the deployed runtime flew
        report["replay_vs_closed_loop_max_abs_command_diff"] = float(np.abs(closed_loop - replay.commands).max())
    paths["json"].write_text(json.dumps(report, indent=1))
    return report


def run(args: argparse.Namespace) -> int:
    from liquid_control.bags import BagError
    from liquid_control.models.model_file import ModelFileError
    from liquid_control.simulation.scenario import ScenarioError

    if args.frames < 1:
        return _fail("--frames must be >= 1")
    if args.ig_steps < 1:
        return _fail("--ig-steps must be >= 1")
    if args.duration is not None and not args.duration > 0:
        return _fail("--duration must be > 0")
    if args.bag is not None and not args.bag.exists():
        return _fail(f"bag {args.bag} does not exist")
    if not args.model.is_file():
        return _fail(f"model file {args.model}: no such file")
    try:
        report = explain(args)
    except (ModelFileError, ScenarioError, BagError, ValueError, OSError) as err:
        return _fail(str(err))
    source = report["source"]
    if source["kind"] == "scenario":
        outcome = source["outcome"]
        print(f"{source['scenario']} seed {source['seed']}: {outcome.get('reason')} "
              f"({'success' if outcome.get('success') else 'failure'}), {report['frames']} frames")
    else:
        print(f"bag {source['bag']} ({source['image_topic']}): {report['frames']} frames")
    for name, s in report["summary"].items():
        if s["mean_red_target_mass"] is not None:
            print(f"  {name}: {100 * s['mean_red_target_mass']:.0f}% of the saliency on red target pixels "
                  f"({100 * s['mean_red_target_area']:.1f}% of the image) in {s['frames_with_red_target']} frames")
    for key, path in report["paths"].items():
        print(f"{key:7s} {path}")
    return 0
