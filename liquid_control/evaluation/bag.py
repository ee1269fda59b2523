"""Offline evaluation of a policy on a bag: run perception + policy over the recorded images
as fast as possible and compare its commands with the recorded ones.

Timespans come from the image header stamps (falling back to log times), divided
by the policy's nominal frame period, exactly as the live policy node feeds them
(DESIGN.md "Timespans"): a dropped frame gives the CfC a timespan of ~2, not 1.
A frame whose stamp does not advance gets timespan 0.

Each image is paired with the recorded command nearest in time (stamps) if one
lies within `max_match_gap_s`; images without one are counted and left out of
the metrics. Metrics per axis [vx, vy, vz, yaw_rate]: MAE, RMSE, Pearson
correlation (None when either series is constant) and sign agreement (fraction of
pairs with the same sign, over pairs whose recorded value exceeds the deadband).

ROS-free. The report is JSON; the plot is a PNG of commanded vs recorded over time.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liquid_control.bags import BagError
from liquid_control.bags.reader import BagReader

AXES = ("vx", "vy", "vz", "yaw_rate")
UNITS = ("m/s", "m/s", "m/s", "rad/s")


@dataclass(frozen=True)
class EvaluationConfig:
    """max_match_gap_s: largest |image stamp - command stamp| (s) for a pair to count.
    sign_deadband: recorded values with |value| <= this (m/s or rad/s) carry no sign and are
    left out of the sign agreement.
    """

    image_topic: str | None = None
    command_topic: str | None = None
    max_match_gap_s: float = 0.1
    sign_deadband: float = 0.05

    def __post_init__(self) -> None:
        if not (self.max_match_gap_s > 0 and math.isfinite(self.max_match_gap_s)):
            raise ValueError(f"max_match_gap_s must be a positive number of seconds, got {self.max_match_gap_s}")
        if not (self.sign_deadband >= 0 and math.isfinite(self.sign_deadband)):
            raise ValueError(f"sign_deadband must be >= 0, got {self.sign_deadband}")


@dataclass
class Evaluation:
    """Everything `evaluate_bag` measured; `report()` is the JSON form."""

    bag: str
    image_topic: str
    command_topic: str
    frame_period_s: float
    image_stamps_ns: np.ndarray  # (N,)
    timespans: np.ndarray  # (N,) in nominal frame periods
    predicted: np.ndarray  # (N, 4)
    recorded: np.ndarray  # (N, 4); NaN rows where no recorded command was near enough
    processing_s: float
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def matched(self) -> np.ndarray:
        return ~np.isnan(self.recorded).any(axis=1)

    def report(self) -> dict[str, Any]:
        frames = int(self.image_stamps_ns.size)
        span = self.timespans[1:] if frames > 1 else self.timespans
        return {
            "bag": self.bag,
            "image_topic": self.image_topic,
            "command_topic": self.command_topic,
            "frames": frames,
            "matched_frames": int(self.matched.sum()),
            "duration_s": float((self.image_stamps_ns[-1] - self.image_stamps_ns[0]) / 1e9) if frames else 0.0,
            "frame_period_s": self.frame_period_s,
            "timespans": {"min": float(span.min()), "median": float(np.median(span)), "max": float(span.max()),
                          "late_or_dropped_frames": int((span > 1.5).sum())},
            "processing_s": self.processing_s,
            "processing_fps": frames / self.processing_s if self.processing_s > 0 else None,
            "metrics": self.metrics,
        }


def command_metrics(predicted: np.ndarray, recorded: np.ndarray, sign_deadband: float = 0.05) -> dict[str, dict]:
    """Per-axis MAE, RMSE, correlation and sign agreement of paired (N, 4) command arrays."""
    predicted, recorded = np.asarray(predicted, np.float64), np.asarray(recorded, np.float64)
    if predicted.shape != recorded.shape or predicted.ndim != 2 or predicted.shape[1] != 4:
        raise ValueError(f"command arrays must both be (N, 4), got {predicted.shape} and {recorded.shape}")
    if predicted.shape[0] == 0:
        raise ValueError("no command pairs to compare")
    metrics = {}
    for axis, (name, unit) in enumerate(zip(AXES, UNITS)):
        p, r = predicted[:, axis], recorded[:, axis]
        error = p - r
        correlation = None
        if p.size > 1 and p.std() > 0 and r.std() > 0:
            correlation = float(np.corrcoef(p, r)[0, 1])
        signed = np.abs(r) > sign_deadband
        metrics[name] = {
            "unit": unit,
            "mae": float(np.abs(error).mean()),
            "rmse": float(np.sqrt((error ** 2).mean())),
            "correlation": correlation,
            "sign_agreement": float((np.sign(p[signed]) == np.sign(r[signed])).mean()) if signed.any() else None,
            "signed_pairs": int(signed.sum()),
        }
    return metrics


def timespans_from_stamps(stamps_ns: np.ndarray, frame_period_s: float) -> np.ndarray:
    """Time since the previous frame in nominal frame periods; 1.0 for the first, 0 if a stamp goes back."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    spans = np.ones(stamps.size, np.float64)
    if stamps.size > 1:
        spans[1:] = np.maximum(np.diff(stamps), 0) / 1e9 / frame_period_s
    return spans


def match_commands(image_stamps_ns: np.ndarray, command_stamps_ns: np.ndarray, commands: np.ndarray,
                   max_gap_s: float) -> np.ndarray:
    """(N, 4) recorded command nearest each image stamp, NaN where none lies within max_gap_s."""
    out = np.full((len(image_stamps_ns), 4), np.nan)
    if len(command_stamps_ns) == 0:
        return out
    order = np.argsort(command_stamps_ns, kind="stable")
    stamps, commands = np.asarray(command_stamps_ns)[order], np.asarray(commands)[order]
    right = np.clip(np.searchsorted(stamps, image_stamps_ns), 1, len(stamps) - 1) if len(stamps) > 1 else \
        np.zeros(len(image_stamps_ns), int)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(stamps[left] - image_stamps_ns) <= np.abs(stamps[right] - image_stamps_ns), left, right)
    close = np.abs(stamps[nearest] - image_stamps_ns) <= max_gap_s * 1e9
    out[close] = commands[nearest[close]]
    return out


def evaluate_bag(bag: str | Path, perception: Any, policy: Any,
                 config: EvaluationConfig | None = None) -> Evaluation:
    """Run `perception` (PerceptionRuntime) and `policy` (PolicyRuntime) over the bag's images.

    The policy's state is reset first. Raises BagError for an unusable bag (no
    image or command topic, undecodable images) and ValueError when the models
    do not fit each other.
    """
    from liquid_control.inference.runtime import check_pair

    config = config or EvaluationConfig()
    check_pair(perception, policy)
    policy.reset()
    with BagReader(bag, image_topic=config.image_topic, command_topic=config.command_topic) as reader:
        image_topic = reader.require_image_topic()
        samples = list(reader.commands())  # BagError if the bag has no command topic
        stamps, predicted = [], []
        started = time.perf_counter()
        previous = None
        for frame in reader.images():
            span = 1.0 if previous is None else max(frame.stamp_ns - previous, 0) / 1e9 / policy.frame_period_s
            previous = frame.stamp_ns
            try:
                # The reader already converted every encoding to RGB.
                features = perception.features(frame.image, "rgb8")
                predicted.append(policy.step(features, span))
            except ValueError as err:
                raise BagError(f"image at stamp {frame.stamp_ns} ns on {image_topic!r}: {err}") from err
            stamps.append(frame.stamp_ns)
        processing_s = time.perf_counter() - started
        command_topic = reader.command_topic
    if not stamps:
        raise BagError(f"bag {bag}: the image topic {image_topic!r} holds no messages")
    image_stamps = np.array(stamps, np.int64)
    recorded = match_commands(image_stamps, np.array([s.stamp_ns for s in samples], np.int64),
                              np.array([s.command for s in samples]).reshape(-1, 4), config.max_match_gap_s)
    evaluation = Evaluation(str(bag), image_topic, str(command_topic), float(policy.frame_period_s), image_stamps,
                            timespans_from_stamps(image_stamps, policy.frame_period_s), np.array(predicted),
                            recorded, processing_s)
    matched = evaluation.matched
    if not matched.any():
        raise BagError(f"bag {bag}: no recorded command on {command_topic!r} lies within "
                       f"{config.max_match_gap_s} s of any image stamp; cannot compare")
    evaluation.metrics = command_metrics(evaluation.predicted[matched], recorded[matched], config.sign_deadband)
    return evaluation


def write_outputs(evaluation: Evaluation, out_dir: str | Path) -> tuple[Path, Path]:
    """report.json and commands.png (policy vs recorded per axis over time) in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(evaluation.report(), indent=2))
    seconds = (evaluation.image_stamps_ns - evaluation.image_stamps_ns[0]) / 1e9
    figure, axes = plt.subplots(4, 1, figsize=(10, 8), sharex=True)
    for axis, (name, unit) in enumerate(zip(AXES, UNITS)):
        axes[axis].plot(seconds, evaluation.recorded[:, axis], label="recorded", color="black", linewidth=1.2)
        axes[axis].plot(seconds, evaluation.predicted[:, axis], label="policy", color="tab:blue", linewidth=1.0)
        mae = evaluation.metrics.get(name, {}).get("mae")
        axes[axis].set_ylabel(f"{name} ({unit})")
        if mae is not None:
            axes[axis].set_title(f"{name}: MAE {mae:.3g} {unit}", fontsize=9, loc="right")
    axes[0].legend(loc="upper left")
    axes[-1].set_xlabel("time since first image (s)")
    figure.suptitle(f"{Path(evaluation.bag).name}: policy vs recorded commands")
    figure.tight_layout()
    plot_path = out_dir / "commands.png"
    figure.savefig(plot_path, dpi=100)
    plt.close(figure)
    return report_path, plot_path


__all__ = ["EvaluationConfig", "Evaluation", "evaluate_bag", "command_metrics", "match_commands",
           "timespans_from_stamps", "write_outputs"]
