"""Closed-loop evaluation: fly a model file in the simulator exactly as it is deployed.

`PolicyController` is the deploy path behind the episode loop's Controller interface: each newly
delivered camera frame goes through the perception node's logic (FrameGate + `PerceptionRuntime`)
into the policy node's loop (`PolicyLoop` with config/policy.yaml's settings: timespans from
capture times clipped to [0.25, 4], hold between frames, watchdog hover and state reset, output
clamps); every control step of the simulator is a tick of that loop. See inference/loop.py.
`fixed_timespan` replaces every timespan by a constant: an ablation that shows how much a model
relies on real frame timing (not a deploy mode).

`evaluate_suites` flies every episode of one or more suites on an executor (util/executors.py: this
process, a local process pool or Ray tasks; every worker process loads the model once, and Ray
workers get the model file's bytes, so they need no shared filesystem) and reports per scenario and per suite: success rate with a 95%
Wilson interval, mean time to goal (successful episodes), mean final distance, crashes,
arena exits, timeouts and fail-safe events; as JSON and a Markdown table, with optional
per-episode top-down trajectory plots.
"""
from __future__ import annotations

import math
import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from liquid_control.inference.loop import PolicyLoop, PolicyLoopConfig, checked_fixed_timespan
from liquid_control.inference.pipeline import DeployedPipeline
from liquid_control.simulation.episode import Observation
from liquid_control.util.executors import executor_for, local_path, ship


class PolicyController:
    """Model file -> episode Controller running the deployed pipeline (see module docstring).

    Per episode: `policy_steps`/`timespans` (nominal periods) of the steps taken; `failsafe_events`
    (frames perception rejected + policy steps that failed, each flown as hover); `watchdog_trips`.
    """

    def __init__(self, perception: Any, policy: Any, loop_config: Optional[PolicyLoopConfig] = None,
                 fixed_timespan: float | None = None) -> None:
        """Over loaded runtimes (`features(image, encoding)`; `step`, `reset`); `loop_config` defaults to
        config/policy.yaml's settings, `fixed_timespan` is checked by PolicyLoop."""
        self.perception, self.policy = perception, policy
        self.loop_config = loop_config or PolicyLoopConfig()
        self.fixed_timespan = fixed_timespan
        self.reset(None)

    @classmethod
    def from_model(cls, model: str | Path, backend: str = "auto", policy_source: str | Path | None = None,
                   fixed_timespan: float | None = None,
                   loop_config: Optional[PolicyLoopConfig] = None) -> "PolicyController":
        """`model`: a model file (both networks), or the perception .onnx when `policy_source` (the
        policy .onnx) is given: exported once, these load in well under a second per worker."""
        from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime, check_pair

        perception = PerceptionRuntime(model, backend=backend)
        policy = PolicyRuntime(policy_source or model, backend=backend)
        check_pair(perception, policy)
        return cls(perception, policy, loop_config, fixed_timespan)

    def reset(self, spec: Any) -> None:
        """A new episode: fresh loop, gate and hidden state (the sim clock restarts)."""
        self.policy.reset()
        self.pipeline = DeployedPipeline(self.perception, PolicyLoop(self.loop_config, self.policy,
                                                                     self.fixed_timespan))
        self.timespans: list[float] = []
        self._last_seq: int | None = None

    @property
    def failsafe_events(self) -> int:
        return self.pipeline.gate.counts["bad_frames"] + self.pipeline.loop.counters["rejected_outputs"]

    @property
    def watchdog_trips(self) -> int:
        return self.pipeline.loop.counters["watchdog_trips"]

    def act(self, observation: Observation) -> np.ndarray:
        """One control step at observation.time_s: a new frame arrives (at this step), then the tick."""
        now = observation.time_s
        frame = observation.frame
        decisions = []
        if frame is not None and frame.seq != self._last_seq:
            self._last_seq = frame.seq
            decisions.append(self.pipeline.on_image(frame.capture_time_s, frame.image, "rgb8", now))
        decisions.append(self.pipeline.on_timer(now, expected_s=now))
        self.timespans.extend(d.timespan for d in decisions if d is not None and d.stepped)
        return decisions[-1].command.copy()


# --------------------------------------------------------------------------- workers
# Default first evaluation seed: collection uses seeds from 0 (expert data) and 100,000 (DAgger rounds),
# so evaluating from here never flies an episode (scene, start, target) that was in the training data.
HELD_OUT_SEED = 1_000_000

_WORKER: dict[str, Any] = {}


def _init_worker(model: Any, backend: str, policy_source: Any = None,
                 fixed_timespan: float | None = None) -> None:
    """Once per worker process: load the model (`model`, `policy_source`: paths, or files shipped to a
    remote worker, see util.executors.ship)."""
    import torch

    torch.set_num_threads(1)
    _WORKER["controller"] = PolicyController.from_model(local_path(model), backend=backend,
                                                        policy_source=local_path(policy_source),
                                                        fixed_timespan=fixed_timespan)


def _runtime_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


def _fly(job: tuple) -> dict[str, Any]:
    """Worker: one closed-loop episode -> metrics (+ trajectory plot when asked)."""
    from liquid_control.simulation.episode import EpisodeConfig, run_episode

    suite_name, scenario, seed, duration_s, plot_path, bag_path = job
    controller: PolicyController = _WORKER["controller"]
    config = EpisodeConfig(render=True, duration_s=duration_s)
    if bag_path is None:
        result = run_episode((scenario, seed), controller, None, config)
    else:  # one bag per episode: camera images at capture time, cmd_vel, odom
        from liquid_control.bags.episode import EpisodeBagRecorder, RecordingController

        with EpisodeBagRecorder(bag_path) as recorder:
            result = run_episode((scenario, seed), RecordingController(controller, recorder), None, config)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (bool, int, float, str)) or v is None}
    spans = np.asarray(controller.timespans, dtype=float)
    metrics.update(suite=suite_name, failsafe_events=controller.failsafe_events,
                   watchdog_trips=controller.watchdog_trips, policy_steps=int(spans.size),
                   max_timespan=float(spans.max()) if spans.size else math.nan)
    if plot_path is not None:
        from liquid_control.evaluation.plots import save_plot

        Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
        save_plot(result, Path(plot_path))
    return metrics


# --------------------------------------------------------------------------- reports
def finite_json(value: Any) -> Any:
    """JSON has no NaN: null instead, through nested dicts and lists (reports written with json.dumps)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def summarise(metrics: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One report row: success with Wilson 95% interval, time to goal, final distance, failures."""
    from liquid_control.evaluation.stats import finite_mean, proportion

    success = proportion(m["success"] for m in metrics)
    return {
        "name": name, "episodes": len(metrics),
        "success": dataclasses.asdict(success),
        "time_to_goal_s": finite_mean(m["time_to_goal_s"] for m in metrics if m["success"]),
        "final_distance_m": finite_mean(m["final_distance_m"] for m in metrics),
        "crashes": sum(bool(m["crashed"]) for m in metrics),
        "left_arena": sum(bool(m["left_arena"]) for m in metrics),
        "timeouts": sum(m["reason"] in ("timeout", "lost_target") for m in metrics),
        "failsafe_events": sum(int(m.get("failsafe_events", 0)) for m in metrics),
        "watchdog_trips": sum(int(m.get("watchdog_trips", 0)) for m in metrics),
    }


@dataclass
class EvaluationReport:
    model: str
    suites: dict[str, dict[str, Any]]  # suite -> {"total": row, "scenarios": [rows], "seeds": [first, last]}
    episodes: list[dict[str, Any]]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "suites": self.suites, "episodes": self.episodes, "wall_s": self.wall_s}

    def markdown(self) -> str:
        lines = [f"Model `{self.model}`, closed loop in the simulator (perception + policy runtimes, as deployed).",
                 "", "| suite | scenario | episodes | success [95% Wilson] | time to goal (s) | final distance (m) "
                     "| crashes | timeouts |",
                 "|---|---|---:|---|---:|---:|---:|---:|"]
        for suite, report in self.suites.items():
            for row in [*report["scenarios"], report["total"]]:
                s = row["success"]
                label = "**all**" if row is report["total"] else row["name"]
                tg = "-" if math.isnan(row["time_to_goal_s"]) else f"{row['time_to_goal_s']:.1f}"
                lines.append(f"| {suite} | {label} | {row['episodes']} | {100 * s['rate']:.0f}% "
                             f"[{100 * s['low']:.0f}, {100 * s['high']:.0f}] | {tg} | "
                             f"{row['final_distance_m']:.2f} | {row['crashes']} | {row['timeouts']} |")
        return "\n".join(lines) + "\n"


def evaluate_suites(model: str | Path, suites: list[str], episodes: int | None = None, workers: int = 1,
                    base_seed: int = HELD_OUT_SEED, duration_s: float | None = None,
                    plots_dir: str | Path | None = None, record_dir: str | Path | None = None,
                    backend: str = "auto", progress: bool = True,
                    fixed_timespan: float | None = None, ray_address: str | None | bool = False) -> EvaluationReport:
    """Fly `model` on every suite (episode k of a scenario: seed base_seed + k) and summarise.

    `ray_address`: False -> `workers` local processes; None -> a local Ray with `workers` CPUs; an
    address -> that Ray cluster. The episodes are the same; plots and bags are written by the workers
    (on a multi-node cluster: on the workers' disks unless the folders are on a shared filesystem).

    With `record_dir`, every episode is also recorded as a rosbag2 MCAP bag
    `record_dir/<suite>/<scenario>_<seed>` (liquid-control evaluate-bag and replay read it)."""
    from tqdm import tqdm

    from liquid_control.models.model_file import load_model
    from liquid_control.simulation.suite import load_suite

    if workers < 1:
        raise ValueError(f"evaluate: workers must be >= 1, got {workers}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"evaluate: episodes must be >= 1, got {episodes}")
    checked_fixed_timespan(fixed_timespan)  # here too: before any worker starts
    bundle = load_model(model)  # fail early, with the model file's own error, before spawning workers
    if bundle.policy is None or bundle.perception is None:
        raise ValueError(f"evaluate: {model} must hold both a perception and a policy model")
    loaded = [load_suite(name) for name in suites]
    jobs = []
    for suite in loaded:
        for entry in suite.entries:
            for k in range(episodes or entry.episodes):
                seed = base_seed + k
                plot = None if plots_dir is None else \
                    str(Path(plots_dir) / suite.name / f"{entry.scenario.name}_{seed:06d}.png")
                bag = None if record_dir is None else \
                    str(Path(record_dir) / suite.name / f"{entry.scenario.name}_{seed:06d}")
                jobs.append((suite.name, entry.scenario, seed, duration_s, plot, bag))
    start = time.perf_counter()
    backend = _runtime_backend(backend)
    sources: tuple = (model, backend, None)
    export_dir = None
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    try:
        if backend == "onnxruntime":  # export + verify once here, not once per worker
            import tempfile

            from liquid_control.inference.export import export_model_file

            export_dir = tempfile.TemporaryDirectory(prefix="liquid_eval_")
            exported = export_model_file(model, export_dir.name)
            sources = (exported.perception_path, backend, exported.policy_path)
        with executor_for(workers, ray_address) as executor:
            setup = (ship(sources[0], executor), backend, ship(sources[2], executor), fixed_timespan)
            bar = tqdm(total=len(jobs), desc=f"evaluate {Path(model).name}", unit="ep", disable=not progress,
                       file=sys.stderr)
            try:
                for index, metrics in executor.run(_fly, jobs, _init_worker, setup):
                    results[index] = metrics  # job order, whatever order they finish in
                    bar.update()
            finally:
                bar.close()
    finally:
        if export_dir is not None:
            export_dir.cleanup()
    report: dict[str, dict[str, Any]] = {}
    for suite in loaded:
        ms = [m for m in results if m["suite"] == suite.name]
        rows = [summarise([m for m in ms if m["scenario"] == e.scenario.name], e.scenario.name)
                for e in suite.entries]
        seeds = [m["seed"] for m in ms]
        report[suite.name] = {"total": summarise(ms, suite.name), "scenarios": rows,
                              "seeds": [min(seeds), max(seeds)] if seeds else []}
    return EvaluationReport(model=str(model), suites=report, episodes=results, wall_s=time.perf_counter() - start)
