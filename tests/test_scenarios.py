"""Scenario/suite files: every shipped file loads, sampling is seeded, each malformation is named."""
import math
import textwrap

import numpy as np
import pytest

from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import ScenarioError, load_scenario
from liquid_control.simulation.suite import list_suites, load_suite

OOD_SUITES = ["ood_appearance", "ood_lighting", "ood_distractors", "ood_range", "ood_dynamics", "ood_timing"]
TIME_SUITES = ["occlusion", "variable_rate"]  # tasks where time matters: also one factor each


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- shipped files

def test_all_shipped_suites_load_with_train_and_six_ood():
    names = list_suites()
    assert "train" in names and set(OOD_SUITES + TIME_SUITES) <= set(names)
    for name in names:
        suite = load_suite(name)
        assert suite.total_episodes >= 100, name


def changed_keys(scenario, base) -> set[str]:
    """Top-level keys, or `section.key` inside a section, where two scenarios' merged files differ."""
    changed = set()
    for key in scenario.raw:
        mine, theirs = scenario.raw[key], base.raw[key]
        if isinstance(mine, dict) and isinstance(theirs, dict):
            changed |= {f"{key}.{k}" for k in mine if mine[k] != theirs[k]}
        elif mine != theirs:
            changed.add(key)
    return changed - {"description"}


@pytest.mark.parametrize("suite_name", OOD_SUITES + TIME_SUITES)
def test_each_ood_scenario_shifts_exactly_one_factor_of_its_train_scenario(suite_name):
    # A factor is a whole section ("lighting") or single keys ("timing.rate_hz").
    factor = {
        "ood_appearance": {"ground", "sky"}, "ood_lighting": {"lighting"}, "ood_distractors": {"distractors"},
        "ood_range": {"target", "loop"}, "ood_dynamics": {"wind", "airframes"},
        "ood_timing": {"timing.frame_drop_prob", "timing.latency_mean_s", "timing.latency_jitter_s"},
        "occlusion": {"occlusion"}, "variable_rate": {"timing.rate_hz", "timing.rate_change_s"},
    }[suite_name]
    for entry in load_suite(suite_name).entries:
        ood = entry.scenario
        train = load_scenario("train_" + ood.task)
        changed = changed_keys(ood, train)
        assert changed and all(key in factor or key.split(".")[0] in factor for key in changed), (ood.name, changed)
        assert ood.task == train.task


def test_each_combined_scenario_shifts_two_factors_at_once():
    """The `combined` suite probes generality: two shifts of train at once (a factor being a section, the
    ground and sky together being appearance), neither a time-suite factor."""
    entries = load_suite("combined").entries
    assert {e.scenario.task for e in entries} == {"fly_to_target", "target_loop", "chase"}
    for entry in entries:
        scenario = entry.scenario
        changed = changed_keys(scenario, load_scenario("train_" + scenario.task))
        factors = {{"ground": "appearance", "sky": "appearance"}.get(k.split(".")[0], k.split(".")[0]) for k in changed}
        assert len(factors) == 2 and not factors & {"occlusion"}, (scenario.name, factors)
        assert scenario.section("timing")["rate_hz"] is None, scenario.name


def test_the_time_suites_switch_their_factor_on():
    for entry in load_suite("occlusion").entries:
        section = entry.scenario.section("occlusion")
        assert section["count"].low >= 1 and set(section["modes"]) == {"occluder", "blackout"}
        assert (section["duration_s"].low, section["duration_s"].high) == (0.3, 1.5)
    assert {e.scenario.task for e in load_suite("occlusion").entries} == {"fly_to_target", "target_loop", "chase"}
    for entry in load_suite("variable_rate").entries:
        rate = entry.scenario.section("timing")["rate_hz"]
        assert (rate.low, rate.high) == (8.0, 60.0)
    assert "chase" in {e.scenario.task for e in load_suite("variable_rate").entries}
    for name in ["train", *OOD_SUITES, "combined"]:  # and no other suite has them
        for entry in load_suite(name).entries:
            assert entry.scenario.section("occlusion")["count"].high == 0, entry.scenario.name
            assert entry.scenario.section("timing")["rate_hz"] is None, entry.scenario.name


def test_ood_values_are_the_ones_the_issue_asks_for():
    fly_range = load_scenario("ood_range_fly_to_target").section("target")["range_m"]
    assert (fly_range.low, fly_range.high) == (8.0, 14.0)
    timing = load_scenario("ood_timing_chase").section("timing")
    assert timing["frame_drop_prob"].low == 0.3 and timing["latency_jitter_s"].low == 0.05
    assert load_scenario("ood_dynamics_target_loop").airframes == ("quad250",)
    train_textures = set(load_scenario("train_fly_to_target").section("ground")["textures"])
    assert not train_textures & set(load_scenario("ood_appearance_fly_to_target").section("ground")["textures"])


# ---------------------------------------------------------------- sampling

def test_same_scenario_and_seed_give_identical_episode_and_seeds_differ():
    scenario = load_scenario("train_target_loop")
    a, b = sample_episode(scenario, 7), sample_episode(scenario, 7)
    assert a == b
    c = sample_episode(scenario, 8)
    assert c.targets != a.targets


def test_samples_respect_the_scenario_ranges():
    scenario = load_scenario("train_fly_to_target")
    for seed in range(40):
        ep = sample_episode(scenario, seed)
        start, target = np.array(ep.start_position), np.array(ep.targets[0])
        horizontal = np.linalg.norm((target - start)[:2])
        assert 3.0 - 1e-9 <= horizontal <= 8.0 + 1e-9
        bearing = math.atan2(*(target - start)[1::-1]) - ep.start_yaw_rad
        bearing = (bearing + math.pi) % (2 * math.pi) - math.pi
        assert abs(math.degrees(bearing)) <= 15.0 + 1e-6
        assert 0.8 <= start[2] <= 1.5 and 0.7 <= target[2] <= 1.6
        assert ep.target_colour in [(0.9, 0.1, 0.1), (0.8, 0.05, 0.15), (0.95, 0.25, 0.1)]
        assert len(ep.distractors) <= 3
        assert math.isclose(np.linalg.norm(ep.light_direction), 1.0)


def test_loop_targets_and_chase_path_have_the_promised_geometry():
    loop = load_scenario("train_target_loop")
    for seed in range(20):
        ep = sample_episode(loop, seed)
        assert 3 <= len(ep.targets) <= 4
        legs = np.diff(np.array(ep.targets)[:, :2], axis=0)
        assert np.all(np.linalg.norm(legs, axis=1) <= 6.0 + 1e-9)
    chase = sample_episode(load_scenario("train_chase"), 3)
    pts = np.array(chase.chase_path.points)
    speeds = np.linalg.norm(np.diff(pts[:, :2], axis=0), axis=1) / chase.chase_path.dt_s
    assert speeds.max() <= 1.0 + 1e-9 and speeds.min() > 0.1
    assert np.allclose(chase.chase_path.position(0.0), chase.targets[0])
    start_range = np.linalg.norm(np.array(chase.targets[0])[:2] - np.array(chase.start_position)[:2])
    assert 1.3 <= start_range <= 1.7


def test_distractors_keep_clear_of_the_flight_path():
    scenario = load_scenario("ood_distractors_fly_to_target")
    for seed in range(10):
        ep = sample_episode(scenario, seed)
        a, b = np.array(ep.start_position[:2]), np.array(ep.targets[0][:2])
        for obj in ep.distractors:
            p = np.array(obj.position[:2])
            t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
            assert np.linalg.norm(p - (a + t * (b - a))) >= 1.5


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="seed"):
        sample_episode(load_scenario("train_chase"), -1)


# ---------------------------------------------------------------- malformed files: one test per kind

@pytest.mark.parametrize("body, key, fragment", [
    ("task: fly_to_target\nwind: {speed: 1}\n", "wind.speed", "unknown key"),
    ("task: fly_to_target\nbogus: 1\n", "bogus", "unknown key"),
    ("description: no task\n", "task", "missing"),
    ("task: hover\n", "task", "fly_to_target"),
    ("task: fly_to_target\ntarget: {range_m: far}\n", "target.range_m", "[low, high]"),
    ("task: fly_to_target\ntarget: {range_m: [9, 3]}\n", "target.range_m", "low 9 > high 3"),
    ("task: fly_to_target\ntarget: {range_m: [3, 80]}\n", "target.range_m", "out of range"),
    ("task: fly_to_target\ntiming: {frame_drop_prob: 1.5}\n", "timing.frame_drop_prob", "<= 0.9"),
    ("task: fly_to_target\ndistractors: {count: [1.5, 3]}\n", "distractors.count", "whole numbers"),
    ("task: fly_to_target\ntarget: {shapes: [cone]}\n", "target.shapes", "unknown ['cone']"),
    ("task: fly_to_target\nground: {colours: [[0.1, 0.2]]}\n", "ground.colours", "[r, g, b]"),
    ("task: fly_to_target\nsky: {colours: [[0.1, 0.2, 2.0]]}\n", "sky.colours", "0..1"),
    ("task: fly_to_target\nairframes: [jumbo]\n", "airframes", "quad250"),
    ("task: fly_to_target\nduration_s: -3\n", "duration_s", "[1.0, 600.0]"),
    ("task: fly_to_target\nlighting: 3\n", "lighting", "mapping"),
    ("task: fly_to_target\nextends: no_such_scenario\n", "extends", "not found"),
    ("- just\n- a list\n", "", "mapping"),
    ("task: [unclosed\n", "", "not valid YAML"),
])
def test_malformed_scenario_names_file_key_and_allowed(tmp_path, body, key, fragment):
    path = write(tmp_path, "broken.yaml", body)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert err.file == str(path) and err.key == key
    assert str(path) in str(err) and fragment in str(err)


def test_missing_scenario_file_and_circular_extends(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nothing.yaml")
    write(tmp_path, "a.yaml", "extends: b.yaml\ntask: chase\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\ntask: chase\n")
    with pytest.raises(ScenarioError, match="circular"):
        load_scenario(tmp_path / "a.yaml")


def test_bad_value_inherited_through_extends_names_the_chain(tmp_path):
    write(tmp_path, "base.yaml", "task: chase\nwind: {speed_mps: [0, 99]}\n")
    path = write(tmp_path, "child.yaml", "extends: base.yaml\nduration_s: 10\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.key == "wind.speed_mps" and "extends 'base.yaml'" in str(info.value)


def test_extends_replaces_only_named_keys(tmp_path):
    path = write(tmp_path, "x.yaml", "extends: train_fly_to_target\ntarget: {range_m: [4, 5]}\n")
    scenario = load_scenario(path)
    base = load_scenario("train_fly_to_target")
    assert scenario.section("target")["range_m"].low == 4.0
    assert scenario.section("target")["shapes"] == base.section("target")["shapes"]
    assert scenario.task == "fly_to_target"


@pytest.mark.parametrize("body, key", [
    ("scenarios: []\n", "scenarios"),
    ("scenarios:\n  - {scenario: train_chase, episodes: 0}\n", "scenarios[0].episodes"),
    ("scenarios:\n  - {scenario: nope, episodes: 3}\n", "scenarios[0].scenario"),
    ("scenarios:\n  - {scenario: train_chase}\n", "scenarios[0]"),
    ("runs: 3\nscenarios:\n  - {scenario: train_chase, episodes: 1}\n", "runs"),
])
def test_malformed_suite_names_the_key(tmp_path, body, key):
    path = write(tmp_path, "suite.yaml", body)
    with pytest.raises(ScenarioError) as info:
        load_suite(path)
    assert info.value.key == key and str(path) in str(info.value)


# ---------------------------------------------------------------- Wilson interval
