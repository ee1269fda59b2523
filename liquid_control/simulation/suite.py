"""Suite files (``sim/suites/<name>.yaml``): named lists of scenarios with episode counts.

The `train` suite is the training distribution; each `ood_*` suite and the `occlusion` and
`variable_rate` suites shift one factor (tests/test_scenarios.py checks it). No ROS here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liquid_control.simulation.scenario import Scenario, ScenarioError, load_scenario, read_yaml, scenario_path
from liquid_control.util.paths import share_path

@dataclass(frozen=True)
class SuiteEntry:
    scenario: Scenario
    episodes: int


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[SuiteEntry, ...]

    @property
    def total_episodes(self) -> int:
        return sum(e.episodes for e in self.entries)


def suite_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return share_path("sim", "suites", f"{text}.yaml")


def list_suites() -> list[str]:
    return sorted(p.stem for p in share_path("sim", "suites").glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite file: ``scenarios: [{scenario: <name>, episodes: <n>}, ...]``."""
    path = suite_path(name_or_path)
    data = read_yaml(path)
    unknown = sorted(set(data) - {"description", "scenarios"})
    if unknown:
        raise ScenarioError(path, unknown[0], "unknown key; allowed keys: ['description', 'scenarios']")
    items = data.get("scenarios")
    if not isinstance(items, list) or not items:
        raise ScenarioError(path, "scenarios", f"got {items!r}; allowed: a non-empty list of "
                                               "{scenario: <name>, episodes: <count >= 1>}")
    entries = []
    for i, item in enumerate(items):
        key = f"scenarios[{i}]"
        if not isinstance(item, dict) or set(item) != {"scenario", "episodes"}:
            raise ScenarioError(path, key, f"got {item!r}; allowed: {{scenario: <name>, episodes: <count >= 1>}}")
        episodes = item["episodes"]
        if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
            raise ScenarioError(path, f"{key}.episodes", f"got {episodes!r}; allowed: an integer >= 1")
        if not isinstance(item["scenario"], str):
            raise ScenarioError(path, f"{key}.scenario", f"got {item['scenario']!r}; allowed: a scenario name")
        scenario_file = scenario_path(item["scenario"])
        if not scenario_file.is_file():
            raise ScenarioError(path, f"{key}.scenario", f"scenario {item['scenario']!r} not found ({scenario_file})")
        entries.append(SuiteEntry(load_scenario(scenario_file), episodes))
    description = data.get("description", "")
    return Suite(name=path.stem, description=str(description), entries=tuple(entries))
