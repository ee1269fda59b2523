"""Seed sweeps: models x recipes x seeds, each trained and then evaluated, as Ray tasks; one comparison table.

A sweep file (config/sweep_*.yaml, `SweepConfig`; unknown keys are errors):

    name: time
    models: [cfc, gru]                     # each model's training recipe: `recipe` with {model} filled in
    recipe: config/train_{model}.yaml
    seeds: [0, 1, 2]                       # the recipe's `seed` (initialisation, data split, sampling)
    recipes: {default: {}}                 # recipe variants: name -> overrides (as `train --set`)
    overrides: {}                          # overrides for every run
    evaluate: {suites: [occlusion], episodes: 20, seed: 1000000, duration_s: null, backend: auto}
    out_dir: runs/sweep_time

Run `<model>-<recipe>-seed<k>` is `liquid-control train` on its recipe with the overrides, seed k and
its own output paths (`out_dir/runs/<run>/model.safetensors`, `.../train/`), followed by `evaluate` of
that model on the suites; its report goes to `out_dir/runs/<run>/report.json`. At the end the reports
become one table (`evaluate --compare`: a row per model and recipe, cells mean and min-max over the
seeds) in `out_dir/comparison.md` and `.json`.

Order of work: first the recipes' training data is collected once per distinct data folder (the
`data.collect` sections, episodes as Ray tasks, resuming), then each run is one Ray task declaring
`optim.threads` CPUs, so Ray runs as many trainings at once as the CPUs allow. A run whose model and
report exist is skipped (re-running a killed sweep resumes it). The training tasks read the data and
write their models where the driver says: a multi-node cluster needs those folders on a shared
filesystem (docs/SCALE.md).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from liquid_control.config import ConfigBase, ConfigError
from liquid_control.evaluation.closed_loop import HELD_OUT_SEED
from liquid_control.util.paths import write_text_atomic
from liquid_control.util.safe_input import InputError, load_yaml_file, short_repr

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Set by the sweep for every run; a sweep file may not override them.
_OWNED = ("seed", "output", "output.model", "output.run_dir")
BACKENDS = ("auto", "onnxruntime", "torch")


def _names(value: Any, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of names, got {short_repr(value)}")
    for item in value:
        if not isinstance(item, str) or not _NAME.fullmatch(item):
            raise ConfigError(f"{where}: {short_repr(item)} is not a name (letters, digits, '_', '.', '-')")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: names repeat in {short_repr(value)}")


def _overrides(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of recipe keys (e.g. optim.epochs) to values, "
                          f"got {short_repr(value)}")
    for key in value:
        if not isinstance(key, str) or not key or not all(_NAME.fullmatch(p) for p in key.split(".")):
            raise ConfigError(f"{where}: {short_repr(key)} is not a recipe key like optim.epochs")
        if key in _OWNED or key.startswith("output."):
            raise ConfigError(f"{where}: {key} is set by the sweep for every run (seeds, output paths)")


@dataclass
class SweepEvaluation(ConfigBase):
    """What each trained model is evaluated on (as `liquid-control evaluate`)."""

    suites: list[str] = field(default_factory=lambda: ["train"])
    episodes: int | None = None  # per scenario; None: the suites' counts
    seed: int = HELD_OUT_SEED
    duration_s: float | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.suites, list) or not self.suites or \
                not all(isinstance(s, str) and s.strip() for s in self.suites):
            raise ConfigError(f"suites: expected a non-empty list of suite names or paths, got "
                              f"{short_repr(self.suites)}")
        if self.episodes is not None and self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if self.duration_s is not None and not 0 < self.duration_s < 1e5:
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {short_repr(self.backend)}")


@dataclass
class SweepConfig(ConfigBase):
    name: str = "sweep"
    models: list[str] = field(default_factory=list)
    recipe: str = "config/train_{model}.yaml"
    seeds: list[int] = field(default_factory=lambda: [0])
    recipes: dict[str, Any] = field(default_factory=lambda: {"default": {}})
    overrides: dict[str, Any] = field(default_factory=dict)
    evaluate: SweepEvaluation = field(default_factory=SweepEvaluation)
    out_dir: str = "runs/sweep"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"name: {short_repr(self.name)} is not a name (letters, digits, '_', '.', '-')")
        _names(self.models, "models")
        if not isinstance(self.recipe, str) or not self.recipe.strip():
            raise ConfigError("recipe: expected a path like config/train_{model}.yaml")
        if len(self.models) > 1 and "{model}" not in self.recipe:
            raise ConfigError(f"recipe: {self.recipe!r} must contain {{model}} when there are several models")
        if "{" in self.recipe.replace("{model}", "") or "}" in self.recipe.replace("{model}", ""):
            raise ConfigError(f"recipe: {self.recipe!r} may contain only the placeholder {{model}}")
        if not isinstance(self.seeds, list) or not self.seeds or \
                not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in self.seeds):
            raise ConfigError(f"seeds: expected a non-empty list of integers in [0, 2^32), got "
                              f"{short_repr(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: repeated seeds in {short_repr(self.seeds)}")
        if not isinstance(self.recipes, dict) or not self.recipes:
            raise ConfigError(f"recipes: expected a mapping of variant names to overrides, got "
                              f"{short_repr(self.recipes)}")
        _names(list(self.recipes), "recipes")
        for name, overrides in self.recipes.items():
            self.recipes[name] = {} if overrides is None else overrides
            _overrides(self.recipes[name], f"recipes.{name}")
        _overrides(self.overrides, "overrides")
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise ConfigError("out_dir: expected a folder path")


def load_sweep_config(path: str | os.PathLike) -> SweepConfig:
    """Read a sweep file; ConfigError naming the problem (file, key, value)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep config {path} does not exist")
    try:
        data = load_yaml_file(path)
    except InputError as exc:
        raise ConfigError(f"sweep config {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep config {path}: the top level must be a mapping, got {short_repr(data)}")
    return SweepConfig.from_dict(data, f"sweep config {path}")


# --------------------------------------------------------------------------- plan
@dataclass
class SweepRun:
    run_id: str
    label: str  # its row in the comparison table (the seeds of one model and recipe share it)
    model: str
    recipe: str
    seed: int
    train: Any  # TrainConfig with the run's seed and output paths
    folder: Path

    @property
    def report_path(self) -> Path:
        return self.folder / "report.json"

    def done(self) -> bool:
        return self.report_path.is_file() and Path(self.train.output.model).is_file()


def plan(config: SweepConfig) -> list[SweepRun]:
    """Every run of the sweep, its training recipe read and checked (a bad recipe fails before any work)."""
    from liquid_control.learning.recipe import load_config

    out = Path(config.out_dir).absolute()  # Ray workers need not share this process's working directory
    runs = []
    for model in config.models:
        recipe_path = config.recipe.replace("{model}", model)
        for recipe_name, recipe_overrides in config.recipes.items():
            for seed in config.seeds:
                run_id = f"{model}-{recipe_name}-seed{seed}"
                folder = out / "runs" / run_id
                overrides = {**config.overrides, **recipe_overrides, "seed": seed,
                             "output.model": str(folder / "model.safetensors"),
                             "output.run_dir": str(folder / "train"),
                             # DAgger episodes inside a task run in it (it holds optim.threads CPUs)
                             "dagger.workers": 1}
                train = _absolute_paths(load_config(recipe_path, overrides))
                label = model if len(config.recipes) == 1 else f"{model} ({recipe_name})"
                runs.append(SweepRun(run_id, label, model, recipe_name, seed, train, folder))
    return runs


def _absolute_paths(train: Any) -> Any:
    """The recipe with its data folders (and init_from) absolute, as a Ray worker in another folder needs."""
    data = replace(train.data, sources=[str(Path(p).absolute()) for p in train.data.sources])
    model = train.model if train.model.init_from is None else \
        replace(train.model, init_from=str(Path(train.model.init_from).absolute()))
    return replace(train, data=data, model=model)


def data_collections(runs: list[SweepRun]) -> list[tuple[str, Any, int, int, Any]]:
    """(folder, collect section, height, width, expert) for each distinct training-data folder to collect."""
    seen: dict[str, tuple[str, Any, int, int, Any]] = {}
    for run in runs:
        section = run.train.data.collect
        if section is None:
            continue
        folder = run.train.data.sources[0]
        size = (int(run.train.model.perception.get("height", 48)), int(run.train.model.perception.get("width", 64)))
        entry = (folder, section, *size, run.train.expert)
        if folder in seen and seen[folder] != entry:
            raise ConfigError(f"sweep: two recipes collect different data into {folder}; give them their own "
                              "data.sources")
        seen[folder] = entry
    return list(seen.values())


# --------------------------------------------------------------------------- one run (a Ray task)
def _run_job(job: tuple) -> dict[str, Any]:
    """Train one run, then evaluate it; returns its evaluation report (JSON-safe) and training summary."""
    from liquid_control.evaluation.closed_loop import evaluate_suites, finite_json
    from liquid_control.learning.train import train

    train_config, evaluation = job
    result = train(train_config, progress=False)
    report = evaluate_suites(result.model_path, list(evaluation.suites), episodes=evaluation.episodes, workers=1,
                             base_seed=evaluation.seed, duration_s=evaluation.duration_s,
                             backend=evaluation.backend, progress=False)
    summary = {"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run, "wall_s": result.wall_s}
    return {"report": finite_json({**report.to_dict(), "training": summary}), "train_wall_s": result.wall_s}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1))


@dataclass
class SweepSummary:
    runs: int
    trained: int
    skipped: int
    table_markdown: Path
    table_json: Path
    wall_s: float


def run_sweep(config: SweepConfig, ray_address: str | None | bool = None, cpus: int | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None) -> SweepSummary:
    """Collect the data, train + evaluate every unfinished run as Ray tasks, write the comparison table.

    `ray_address`: None -> a local Ray with `cpus` CPUs (default: this machine's); an address -> that
    cluster; False -> no Ray (runs one after another in this process)."""
    from tqdm import tqdm

    from liquid_control.evaluation.results_tables import comparison_data, comparison_markdown
    from liquid_control.learning.collect import CollectConfig, collect
    from liquid_control.util.executors import RayExecutor, SerialExecutor, ray_session

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    start = time.perf_counter()
    runs = plan(config)
    collections = data_collections(runs)
    todo = [run for run in runs if not run.done()]
    log(f"sweep {config.name}: {len(runs)} runs, {len(runs) - len(todo)} finished already")
    out = Path(config.out_dir)

    def work(ray_or_local: str | None | bool) -> None:
        for folder, section, height, width, expert in collections if todo else []:
            collect(section.suite, folder, episodes=section.episodes, workers=section.workers,
                    base_seed=section.seed, progress=progress, ray_address=ray_or_local,
                    config=CollectConfig(height=height, width=width, perturbed_fraction=section.perturbed_fraction,
                                         decoy_fraction=section.decoy_fraction, duration_s=section.duration_s,
                                         expert=expert))
        for run in todo:  # the data is there now: the tasks only train and evaluate
            run.train = replace(run.train, data=replace(run.train.data, collect=None))
        if ray_or_local is False:
            executor: Any = SerialExecutor()
        else:
            executor = RayExecutor(num_cpus=lambda job: job[0].optim.threads)
            if ray_or_local is None:  # a local Ray cannot grow: a task wanting more CPUs would wait forever
                have = executor.ray.cluster_resources().get("CPU", 0)
                for run in todo:
                    if run.train.optim.threads > have:
                        raise ConfigError(f"sweep: {run.run_id} trains with optim.threads="
                                          f"{run.train.optim.threads} CPUs, the local Ray has {have:g} "
                                          "(give --cpus or lower optim.threads in overrides)")
        evaluation = replace(config.evaluate, suites=[str(Path(s).absolute()) if Path(s).is_file() else s
                                                      for s in config.evaluate.suites])
        bar = tqdm(total=len(todo), desc=f"sweep {config.name}", unit="run", disable=not progress, file=sys.stderr)
        try:
            for index, result in executor.run(_run_job, [(run.train, evaluation) for run in todo]):
                run = todo[index]
                _write_json(run.report_path, result["report"])  # last: a run with a report is finished
                log(f"{run.run_id}: trained in {result['train_wall_s'] / 60:.1f} min, report {run.report_path}")
                bar.update()
        finally:
            bar.close()

    if todo and ray_address is not False:
        with ray_session(ray_address, cpus or os.cpu_count() or 1):
            work(ray_address)
    else:
        work(False)
    models = []
    for run in runs:
        try:
            models.append((run.label, [json.loads(run.report_path.read_text())]))
        except (OSError, ValueError) as err:
            raise ConfigError(f"sweep: cannot read the report of {run.run_id} ({err})") from err
    table = comparison_markdown(models)
    header = (f"Sweep `{config.name}`: success per suite, mean and min-max over seeds "
              f"{', '.join(map(str, config.seeds))} (liquid-control sweep; evaluation seeds from "
              f"{config.evaluate.seed}).\n\n")
    md_path, json_path = out / "comparison.md", out / "comparison.json"
    out.mkdir(parents=True, exist_ok=True)
    md_path.write_text(header + table)
    _write_json(json_path, {"sweep": config.to_dict(), **comparison_data(models),
                            "runs": {run.run_id: {"label": run.label, "seed": run.seed,
                                                  "report": str(run.report_path)} for run in runs}})
    return SweepSummary(runs=len(runs), trained=len(todo), skipped=len(runs) - len(todo), table_markdown=md_path,
                        table_json=json_path, wall_s=time.perf_counter() - start)
