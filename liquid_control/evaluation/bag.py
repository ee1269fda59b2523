"""Offline evaluation of a policy on a bag: run the deployed pipeline over the recorded images
as fast as possible and compare its commands with the recorded ones.

The images go through the perception node's logic (FrameGate + PerceptionRuntime) into the policy
node's loop (`PolicyLoop`, config/policy.yaml's settings; inference/loop.py) on a virtual clock:
each image arrives at its header stamp (falling back to log times) and the loop's timer ticks at
`rate_hz` in between, so timespans (a dropped frame gives the CfC ~2, not 1; clipped to [0.25, 4]),
out-of-order frames, the watchdog after a gap and the output clamps are exactly the node's
(DESIGN.md "Timespans"). The command of an image is the first one the loop decided after the image
arrived (normally the step on it; hover if it was refused or stale).

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
from typing import Any, Iterable, Optional

import numpy as np

from liquid_control.bags import BagError
from liquid_control.bags.reader import BagReader
from liquid_control.inference.frame_gate import TIME_JUMP_BACK_S
from liquid_control.inference.loop import PolicyLoop, PolicyLoopConfig, TickResult
from liquid_control.inference.pipeline import DeployedPipeline

AXES = ("vx", "vy", "vz", "yaw_rate")
UNITS = ("m/s", "m/s", "m/s", "rad/s")


@dataclass(frozen=True)
class EvaluationConfig:
    """max_match_gap_s: largest |image stamp - command stamp| (s) for a pair to count.
    sign_deadband: recorded values with |value| <= this (m/s or rad/s) carry no sign and are
    left out of the sign agreement.
    loop: the policy loop's settings (default: config/policy.yaml's, as deployed).
    strict: refuse (BagError) a truncated bag, which BagReader would otherwise read through a
        repaired copy holding only the messages up to the truncation.
    """

    image_topic: str | None = None
    command_topic: str | None = None
    max_match_gap_s: float = 0.1
    sign_deadband: float = 0.05
    loop: PolicyLoopConfig = field(default_factory=PolicyLoopConfig)
    strict: bool = False

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
    timespans: np.ndarray  # (N,) in nominal frame periods; NaN where the image was not stepped on
    predicted: np.ndarray  # (N, 4) the loop's command for each image
    states: list[str]  # (N,) the loop's state with that command: running, stale, fault, waiting
    recorded: np.ndarray  # (N, 4); NaN rows where no recorded command was near enough
    processing_s: float
    counters: dict[str, int] = field(default_factory=dict)  # the loop's and the frame gate's
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A truncated bag (writer killed) is read through a repaired copy: only the messages before the
    # cut. The report says so, so a partial evaluation is never mistaken for the whole recording.
    # A closed bag failing its MCAP CRC checks is read the same way, up to the damage.
    repaired: bool = False
    repaired_message_count: Optional[int] = None
    repair_reason: Optional[str] = None  # "truncated" or "damaged (...)": BagReader.repair_reason
    bag_time_range_ns: tuple[int, int] = (0, 0)  # log time of the first message, just after the last

    @property
    def matched(self) -> np.ndarray:
        return ~np.isnan(self.recorded).any(axis=1)

    def report(self) -> dict[str, Any]:
        frames = int(self.image_stamps_ns.size)
        span = self.timespans[1:] if frames > 1 else self.timespans
        span = span[np.isfinite(span)]
        return {
            "bag": self.bag,
            "image_topic": self.image_topic,
            "command_topic": self.command_topic,
            "frames": frames,
            "repaired": self.repaired,
            "repaired_messages_kept": self.repaired_message_count,
            "repair_reason": self.repair_reason,
            "time_range": {"first_image_stamp_ns": int(self.image_stamps_ns[0]) if frames else None,
                           "last_image_stamp_ns": int(self.image_stamps_ns[-1]) if frames else None,
                           "bag_start_ns": int(self.bag_time_range_ns[0]),
                           "bag_end_ns": int(self.bag_time_range_ns[1])},
            "matched_frames": int(self.matched.sum()),
            "duration_s": float((self.image_stamps_ns[-1] - self.image_stamps_ns[0]) / 1e9) if frames else 0.0,
            "frame_period_s": self.frame_period_s,
            "timespans": {"min": float(span.min()) if span.size else None,
                          "median": float(np.median(span)) if span.size else None,
                          "max": float(span.max()) if span.size else None,
                          "late_or_dropped_frames": int((span > 1.5).sum())},
            "frames_not_stepped": int(np.isnan(self.timespans).sum()),
            "loop": self.counters,
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


def replay_images(pipeline: DeployedPipeline, images: Iterable[tuple[int, np.ndarray, str]]) -> list[TickResult]:
    """Feed (stamp_ns, image, encoding) to `pipeline` on a virtual clock; one decision per image.

    Each image arrives at its stamp; the loop's timer ticks every 1 / rate_hz s from the first image
    on (restarted where the stamps jump back by more than TIME_JUMP_BACK_S: a new timeline). An
    out-of-order image arrives "now" (after the newer one), where the frame gate drops it. An
    image's decision is the step on it: on arrival, or by the imminent tick the arrival guard left it
    to (run before the next image, which is exact for images more than ARRIVAL_GUARD_S apart); for an
    image the gate or perception refused, the command in force after it.
    """
    period = pipeline.loop.config.period_s
    decisions: list[TickResult] = []
    anchor = clock = None
    ticks = 0  # timer ticks since `anchor` (a count, not a running sum: no drift over long bags)
    undecided = False  # the newest image has no decision yet

    def decided(result: Optional[TickResult]) -> None:
        nonlocal undecided
        if undecided and result is not None:
            decisions.append(result)
            undecided = False

    def tick() -> None:
        nonlocal ticks
        due = anchor + ticks * period
        decided(pipeline.on_timer(due, expected_s=due))
        ticks += 1

    for stamp_ns, image, encoding in images:
        stamp = stamp_ns * 1e-9
        if clock is None or stamp < clock - TIME_JUMP_BACK_S:
            anchor, clock, ticks = stamp, stamp, 0
        clock = max(clock, stamp)
        while anchor + ticks * period < clock:
            tick()
        undecided = True
        decided(pipeline.on_image(stamp, image, encoding, clock))
        if undecided and pipeline.loop.tick_is_imminent(clock):
            tick()  # the tick the arrival guard left the frame to (due within ARRIVAL_GUARD_S)
        decided(pipeline.loop.result)  # refused by the gate or perception: the command in force
    while undecided:  # only if no tick ran yet
        tick()
    return decisions


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
    pipeline = DeployedPipeline(perception, PolicyLoop(config.loop, policy))
    with BagReader(bag, image_topic=config.image_topic, command_topic=config.command_topic) as reader:
        if reader.repaired and config.strict:
            how = ("truncated (its writer stopped before finishing the file)" if reader.repair_reason == "truncated"
                   else reader.repair_reason)
            fix = ("run `liquid-control record --repair` on it to keep what is there, or evaluate without --strict"
                   if reader.repair_reason == "truncated" else "evaluate without --strict to use the intact part")
            raise BagError(f"bag {bag} is {how}; only {reader.repaired_message_count} messages could be "
                           f"recovered, and strict mode refuses a partial bag ({fix})")
        image_topic = reader.require_image_topic()
        samples = list(reader.commands())  # BagError if the bag has no command topic
        stamps: list[int] = []

        def images() -> Iterable[tuple[int, np.ndarray, str]]:
            for frame in reader.images():  # the reader already converted every encoding to RGB
                stamps.append(frame.stamp_ns)
                yield frame.stamp_ns, frame.image, "rgb8"

        started = time.perf_counter()
        decisions = replay_images(pipeline, images())
        processing_s = time.perf_counter() - started
        command_topic = reader.command_topic
        repaired, repaired_count, repair_reason = reader.repaired, reader.repaired_message_count, reader.repair_reason
        time_range = (reader.start_ns, reader.end_ns)
    if not stamps:
        raise BagError(f"bag {bag}: the image topic {image_topic!r} holds no messages")
    image_stamps = np.array(stamps, np.int64)
    recorded = match_commands(image_stamps, np.array([s.stamp_ns for s in samples], np.int64),
                              np.array([s.command for s in samples]).reshape(-1, 4), config.max_match_gap_s)
    timespans = np.array([d.timespan if d.stepped and d.feature_stamp_s == stamp * 1e-9 else np.nan
                          for d, stamp in zip(decisions, stamps)])
    evaluation = Evaluation(str(bag), image_topic, str(command_topic), float(policy.frame_period_s), image_stamps,
                            timespans, np.array([d.command for d in decisions]), [d.state for d in decisions],
                            recorded, processing_s, {**pipeline.loop.counters, **pipeline.gate.counts},
                            repaired=repaired, repaired_message_count=repaired_count, repair_reason=repair_reason,
                            bag_time_range_ns=time_range)
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
           "replay_images", "write_outputs"]
