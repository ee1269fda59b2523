"""Which epoch a training run keeps: the lowest validation loss, or the best closed-loop success.

The validation loss (open loop, per-frame command error) does not rank closed-loop chase: a forward
speed a few percent short barely moves a mean over four axes, yet compounds into a lag that loses
the target (docs/RESULTS.md, round 3). `selection.metric: closed_loop` therefore flies every candidate
epoch in the simulator through the deploy loop (`evaluation.closed_loop.evaluate_suites`, the same code
as `liquid-control evaluate`) on seeds of its own, and keeps the epoch with the highest success rate.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from liquid_control.config import ConfigError
from liquid_control.learning.recipe import TrainConfig

CANDIDATE = "selection_candidate.safetensors"


def check(config: TrainConfig) -> None:
    """ConfigError now (not after the first epoch) when the selection suite does not exist."""
    if config.selection.metric != "closed_loop":
        return
    from liquid_control.simulation.suite import load_suite

    try:
        load_suite(config.selection.suite)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"selection.suite: {exc}") from None


def scores_epoch(config: TrainConfig, epoch: int) -> bool:
    """Whether this epoch is flown closed loop."""
    return config.selection.metric == "closed_loop" and epoch >= config.selection.from_epoch


def closed_loop_success(config: TrainConfig, perception: Any, policy: Any, run_dir: Path,
                        progress: bool = False) -> dict[str, Any]:
    """Fly the current weights on the selection suite; {"success": rate, "episodes": n, "per_scenario": {...}}."""
    from liquid_control.evaluation.closed_loop import evaluate_suites
    from liquid_control.models import save_model

    s = config.selection
    candidate = Path(run_dir) / CANDIDATE
    save_model(candidate, policy=policy, perception=perception, training={"selection_candidate": True})
    try:
        report = evaluate_suites(candidate, [s.suite], episodes=s.episodes, workers=s.workers, base_seed=s.seed,
                                 duration_s=s.duration_s,
                                 progress=progress)
    finally:
        candidate.unlink(missing_ok=True)
    suite = report.suites[s.suite]
    return {"success": suite["total"]["success"]["rate"], "episodes": suite["total"]["episodes"],
            "per_scenario": {row["name"]: row["success"]["successes"] for row in suite["scenarios"]}}


def ranking_key(metric: str, val_loss: float, score: float) -> tuple:
    """Larger is better. closed_loop: any scored epoch beats an unscored one (NaN score), then success,
    then the lower validation loss; val_loss: the lower validation loss alone."""
    if metric == "val_loss":
        return (-val_loss,)
    scored = not math.isnan(score)
    return (scored, score if scored else 0.0, -val_loss)


def improves(metric: str, val_loss: float, score: float, best_loss: float, best_score: float) -> bool:
    """Whether an epoch with (val_loss, score) replaces the best one so far (best_loss inf: none yet)."""
    if math.isinf(best_loss):
        return True
    return ranking_key(metric, val_loss, score) > ranking_key(metric, best_loss, best_score)
