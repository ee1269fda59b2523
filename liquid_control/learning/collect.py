"""Data collection: fly the expert (plain, perturbed, or a learned policy for DAgger) and store shards.

Every episode goes through `simulation.episode.run_episode`, the same loop evaluation uses.
Recoveries: in a *perturbed* episode the flown command is the expert's plus exploration
noise (`PerturbedController`), while the stored label is the clean expert command computed
from the same observation, so the data shows how to get back on track (DAgger-style
relabelling). In a *DAgger* episode a learned policy flies (closed loop, as deployed) and
the expert labels every step.

Episode k of a scenario uses seed ``base_seed + k``; whether it is perturbed is drawn from
that seed, so a re-run produces the same data set, and `collect` skips episodes whose shard
already exists (resume after a crash or Ctrl-C).

Episodes run on an executor (util/executors.py: in this process, a local process pool, or Ray tasks),
all through `_collect_job`: the worker flies the episode and compresses its shard, and this process
writes the bytes. So on a Ray cluster the shards land on the driver's disk; workers need no shared
filesystem (the DAgger policy file is sent to them too).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from liquid_control.learning.dataset import (EpisodeData, list_shards, read_shard, shard_bytes, shard_name,
                                             write_shard_bytes)
from liquid_control.simulation.expert import ExpertConfig, PerturbationConfig
from liquid_control.util.executors import check_address, executor_for, local_path, ship
from liquid_control.util.paths import write_text_atomic


@dataclass(frozen=True)
class CollectConfig:
    """How episodes are collected.

    height, width: stored image size (pixels) = the perception input size of the model to train.
    perturbed_fraction: share of episodes flown with exploration noise (the rest: clean expert).
    perturbation: the noise (see simulation.expert.PerturbationConfig).
    duration_s: override the scenarios' episode length (None: the scenario's).
    policy_path: a model file; when set, the policy flies (DAgger) and the expert only labels.
    policy_backend: runtime for that policy; "torch" loads in milliseconds per episode, while
        "onnxruntime" (the deploy path, numerically equal within 1e-5) exports for seconds first.
    expert: the expert's gains and limits (flies and labels; recorded in every shard's meta).
    decoy_fraction: share of the perturbed episodes whose flown expert now and then detours to a
        distractor as if it were the target (`DecoyController`; labels stay the clean expert's).
    """

    height: int = 48
    width: int = 64
    perturbed_fraction: float = 0.7
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    duration_s: float | None = None
    policy_path: str | None = None
    policy_backend: str = "torch"
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    decoy_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"CollectConfig: image size must be positive, got {self.height}x{self.width}")
        if not 0.0 <= self.perturbed_fraction <= 1.0:
            raise ValueError(f"CollectConfig: perturbed_fraction must be in [0, 1], got {self.perturbed_fraction}")
        if not 0.0 <= self.decoy_fraction <= 1.0:
            raise ValueError(f"CollectConfig: decoy_fraction must be in [0, 1], got {self.decoy_fraction}")


def is_perturbed(seed: int, fraction: float) -> bool:
    """Whether episode `seed` is flown with exploration noise (a deterministic draw from the seed)."""
    return bool(np.random.default_rng([int(seed), 0xC011EC7]).random() < fraction)


def has_decoys(seed: int, fraction: float) -> bool:
    """Whether perturbed episode `seed` also detours to distractors (a draw independent of is_perturbed's)."""
    return bool(np.random.default_rng([int(seed), 0xDEC0]).random() < fraction)


def collect_episode(scenario: Any, seed: int, config: CollectConfig = CollectConfig()) -> EpisodeData:
    """Fly one episode and return it as training data (one row per delivered frame)."""
    from liquid_control.simulation.camera import CameraConfig
    from liquid_control.simulation.episode import (DecoyController, EpisodeConfig, ExpertController,
                                                   PerturbedController, run_episode)

    # Segmentation is a by-product of ray casting (the image pixels are the same with or without it).
    episode_config = EpisodeConfig(camera=CameraConfig(segmentation=True), render=True, keep_frames=True,
                                   duration_s=config.duration_s)
    labeller = None
    if config.policy_path is not None:
        from liquid_control.evaluation.closed_loop import PolicyController

        controller: Any = PolicyController.from_model(config.policy_path, backend=config.policy_backend)
        labeller = ExpertController(episode_config.camera, config.expert)
        mode = "dagger"
    elif is_perturbed(seed, config.perturbed_fraction):
        flown: Any = ExpertController(episode_config.camera, config.expert)
        mode = "perturbed"
        if config.decoy_fraction > 0 and has_decoys(seed, config.decoy_fraction):
            flown, mode = DecoyController(flown, control_hz=episode_config.control_hz), "decoy"
        controller = PerturbedController(flown, config.perturbation, control_hz=episode_config.control_hz)
        labeller = ExpertController(episode_config.camera, config.expert)
    else:
        controller = ExpertController(episode_config.camera, config.expert)
        mode = "expert"
    result = run_episode((scenario, seed), controller, labeller, episode_config)
    labels = result.labels if result.labels is not None else result.commands
    rows, last_capture = [], -np.inf
    for k, frame in enumerate(result.frames or []):
        if frame is None or frame.capture_time_s <= last_capture:
            continue
        rows.append(k)
        last_capture = frame.capture_time_s
    if not rows:
        raise RuntimeError(f"episode {scenario.name}#{seed}: no camera frame was delivered")
    images = np.stack([cv2.resize(result.frames[k].image, (config.width, config.height),
                                  interpolation=cv2.INTER_AREA) for k in rows]).astype(np.uint8)
    segmentation = np.stack([cv2.resize(result.frames[k].segmentation, (config.width, config.height),
                                        interpolation=cv2.INTER_NEAREST) for k in rows]).astype(np.uint8)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (bool, int, float, str)) or v is None}
    return EpisodeData(
        images=images,
        capture_times_s=np.array([result.frames[k].capture_time_s for k in rows], dtype=np.float64),
        labels=labels[rows].astype(np.float32), commands=result.commands[rows].astype(np.float32),
        positions=result.positions[rows], yaws=result.yaws[rows], velocities_body=result.velocities_body[rows],
        targets=result.targets[rows], segmentation=segmentation,
        meta={"scenario": scenario.name, "seed": int(seed), "task": result.spec.task, "source": "simulation",
              "controller": mode, "frame_period_s": 1.0 / episode_config.camera.rate_hz,
              "control_hz": episode_config.control_hz, "steps": int(len(result.times_s)), "metrics": metrics,
              "image_encoding": "rgb8", "expert": asdict(config.expert)})


_WORKER: dict[str, Any] = {}


def _init_worker(policy: Any = None) -> None:
    """Once per worker process: where the DAgger policy file is (shipped to remote workers)."""
    import torch

    torch.set_num_threads(1)  # one worker per core; torch must not oversubscribe them
    _WORKER["policy_path"] = local_path(policy)


def _collect_job(job: tuple) -> tuple[str, int, str, bytes]:
    """Worker: fly one episode -> (scenario, seed, controller mode, shard bytes). The same function
    for every executor, so the data does not depend on where an episode was flown."""
    scenario, seed, config = job
    if config.policy_path is not None:
        config = replace(config, policy_path=_WORKER["policy_path"])
    episode = collect_episode(scenario, seed, config)
    return scenario.name, seed, episode.meta["controller"], shard_bytes(episode, f"{scenario.name}#{seed}")


@dataclass
class CollectSummary:
    out_dir: str
    planned: int
    skipped_existing: int
    written: int
    wall_s: float
    modes: dict[str, int]


def plan_jobs(suite: Any, episodes: int | None, base_seed: int) -> list[tuple[Any, int]]:
    """(scenario, seed) for every episode of the suite; `episodes` per scenario, or the suite's counts."""
    return [(entry.scenario, base_seed + k) for entry in suite.entries for k in range(episodes or entry.episodes)]


def collect(suite_name: str, out_dir: str | os.PathLike, episodes: int | None = None, workers: int = 1,
            base_seed: int = 0, config: CollectConfig = CollectConfig(), progress: bool = True,
            on_episode: Callable[[str, int], None] | None = None,
            ray_address: str | None | bool = False) -> CollectSummary:
    """Collect a suite into `out_dir` (one shard per episode), skipping shards that already exist.

    `ray_address`: False -> `workers` local processes; None -> a local Ray with `workers` CPUs; an
    address -> that Ray cluster (util/executors.py). The episodes and their shards are the same."""
    from tqdm import tqdm

    from liquid_control.simulation.suite import load_suite

    if workers < 1:
        raise ValueError(f"collect: workers must be >= 1, got {workers}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"collect: episodes must be >= 1, got {episodes}")
    suite = load_suite(suite_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = {p.name for p in list_shards(out)}
    planned = plan_jobs(suite, episodes, base_seed)
    _check_same_expert(out, sorted(existing), config.expert)
    jobs = [(sc, seed, config) for sc, seed in planned if shard_name(sc.name, seed) not in existing]
    modes: dict[str, int] = {}
    start = time.perf_counter()
    if not jobs and isinstance(ray_address, str):
        check_address(ray_address)  # nothing to fly, but a bad address is still an error
    with executor_for(workers, ray_address if jobs else False) as executor:
        bar = tqdm(total=len(jobs), desc=f"collect {suite.name}", unit="ep", disable=not progress, file=sys.stderr)
        try:
            for _, (name, seed, mode, data) in executor.run(_collect_job, jobs, _init_worker,
                                                            (ship(config.policy_path, executor),)):
                write_shard_bytes(out / shard_name(name, seed), data)
                modes[mode] = modes.get(mode, 0) + 1
                bar.update()
                if on_episode:
                    on_episode(name, seed)
        finally:
            bar.close()
    summary = CollectSummary(out_dir=str(out), planned=len(planned), skipped_existing=len(planned) - len(jobs),
                             written=len(jobs), wall_s=time.perf_counter() - start, modes=modes)
    record = {"suite": suite.name, "episodes_per_scenario": episodes, "base_seed": base_seed,
              "executor": "local" if ray_address is False else f"ray {ray_address or 'local'}",
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "config": {**asdict(config), "perturbation": asdict(config.perturbation)}, **asdict(summary)}
    _append_run(out / "collection.json", record)
    return summary


def _check_same_expert(out: Path, existing: list[str], expert: ExpertConfig) -> None:
    """Resuming must not mix labels: ValueError when the folder's shards were labelled by another expert.
    One shard tells (a folder is filled by one expert); shards from before the record count as the default."""
    if not existing:
        return
    recorded = read_shard(out / existing[0]).meta.get("expert", {})
    try:
        theirs = ExpertConfig(**recorded)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"collect: {out / existing[0]} records an expert this code cannot read ({exc})") from None
    if theirs != expert:
        changed = [f"{k}: {v} -> {getattr(expert, k)}" for k, v in asdict(theirs).items() if getattr(expert, k) != v]
        raise ValueError(f"collect: {out} holds episodes labelled by another expert ({'; '.join(changed)}); "
                         "collect into another folder")


def _append_run(path: Path, record: dict[str, Any]) -> None:
    """Add one collection run to `path` ({"runs": [...]}, written atomically): resumed runs keep the history."""
    runs: list[Any] = []
    try:
        runs = list(json.loads(path.read_text()).get("runs", []))
    except (OSError, ValueError, AttributeError):
        pass  # no (readable) record yet: start one
    write_text_atomic(path, json.dumps({"runs": [*runs, record]}, indent=1, default=str))
