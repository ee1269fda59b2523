"""Success by scene factor (evaluation/breakdown.py, `evaluate --compare ... --by`): known answers on
reports whose outcome is a function of one drawn factor, and clear errors on bad reports."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liquid_control.evaluation.breakdown import FACTORS, breakdown, breakdown_markdown, factor_value
from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import load_scenario

SEEDS = range(1_000_000, 1_000_024)


def _report(scenario: str, suite: str, outcome) -> dict:
    spec_of = load_scenario(scenario)
    return {"episodes": [{"scenario": scenario, "seed": seed, "suite": suite,
                          "success": bool(outcome(sample_episode(spec_of, seed)))} for seed in SEEDS]}


def test_a_categorical_factor_that_decides_success_shows_as_all_or_nothing_rows():
    grey = (0.6, 0.6, 0.62)
    report = _report("ood_appearance_fly_to_target", "ood_appearance", lambda s: factor_value(s, "sky_colour") == grey)
    other = _report("ood_appearance_fly_to_target", "ood_appearance", lambda s: True)
    rows, cells = breakdown([("grey_only", [report]), ("always", [other])], "sky_colour")
    assert len(rows) == 3  # the scenario's three skies
    for suite, group in rows:
        ok, n = cells[("grey_only", suite, group)]
        assert ok == (n if group == "(0.60, 0.60, 0.62)" else 0) and n > 0
        assert cells[("always", suite, group)] == [n, n]
    assert sum(cells[("always", s, g)][1] for s, g in rows) == len(SEEDS)


def test_a_numeric_factor_is_binned_and_the_bins_follow_the_outcome():
    scenario = load_scenario("train_fly_to_target")
    sizes = [sample_episode(scenario, seed).target_size_m for seed in SEEDS]
    middle = (min(sizes) + max(sizes)) / 2  # the edge between two equal-width bins
    report = _report("train_fly_to_target", "train", lambda s: s.target_size_m >= middle)
    rows, cells = breakdown([("m", [report])], "target_size_m", bins=2)
    assert [g for _, g in rows] == sorted((g for _, g in rows), key=lambda g: float(g[1:].split(",")[0]))
    assert len(rows) == 2
    low, high = (cells[("m", "train", g)] for _, g in rows)
    assert low[0] == 0 < low[1] and high[0] == high[1] > 0  # small targets fail, large ones succeed
    table = breakdown_markdown([("m", [report])], "target_size_m", bins=2)
    assert table.startswith("| suite | target_size_m | m |") and table.count("\n") == 4


def test_suite_filter_and_derived_factors():
    train = _report("train_fly_to_target", "train", lambda s: True)
    ranged = _report("ood_range_fly_to_target", "ood_range", lambda s: True)
    rows, _ = breakdown([("m", [train, ranged])], "target_range_m", bins=3, suites=["ood_range"])
    assert {suite for suite, _ in rows} == {"ood_range"}
    assert float(rows[0][1][1:].split(",")[0]) >= 8.0  # ood_range draws 8-14 m
    rows, cells = breakdown([("m", [train])], "distractor_count")
    assert [g for _, g in rows] == ["0", "1", "2", "3"]  # train draws 0-3 distractors: a row per count
    assert sum(cells[("m", s, g)][1] for s, g in rows) == len(SEEDS)
    assert "distractor_count" in FACTORS and "target_range_m" in FACTORS and "seed" not in FACTORS


@pytest.mark.parametrize("models,factor,message", [
    ([("m", [{"episodes": []}])], "nope", "unknown factor"),
    ([("m", [{"wall_s": 1}])], "sky_colour", "without an episode list"),
    ([("m", [{"episodes": [{"scenario": "train_fly_to_target"}]}])], "sky_colour", "lacks scenario"),
    ([("m", [{"episodes": [{"scenario": "no_such", "seed": 1, "suite": "x", "success": True}]}])], "sky_colour",
     "cannot draw scenario"),
    ([("m", [{"episodes": [{"scenario": "train_chase", "seed": -3, "suite": "x", "success": True}]}])],
     "sky_colour", "seed must be"),
    ([("m", [{"episodes": []}])], "sky_colour", "no episodes"),
])
def test_bad_reports_and_factors_raise_a_clear_error(models, factor, message):
    with pytest.raises(ValueError, match=message):
        breakdown(models, factor)


episode_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 2_000_000), st.text(max_size=8),
                           st.floats(allow_nan=True), st.sampled_from(["train_chase", "ood_range_target_loop"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["scenario", "seed", "suite", "success"]), episode_values),
                max_size=4),
       st.sampled_from(["sky_colour", "light_strength", "target_range_m", "bogus"]))
def test_any_episode_list_gives_a_table_or_a_value_error(episodes, factor):
    try:
        breakdown_markdown([("m", [{"episodes": episodes}])], factor)
    except ValueError:
        pass


def test_cli_by_groups_compared_reports_and_rejects_flying_with_by(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report("train_fly_to_target", "train", lambda s: s.target_shape == "sphere")))
    cli = [sys.executable, "-m", "liquid_control.cli", "evaluate"]
    done = subprocess.run(cli + ["--compare", f"m={path}", "--by", "target_shape"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    sphere = [line for line in done.stdout.splitlines() if "| sphere |" in line]
    assert len(sphere) == 1 and sphere[0].split("|")[3].strip().endswith("(100%)")
    assert "(0%)" in done.stdout  # boxes and cylinders
    done = subprocess.run(cli + ["--model", str(path), "--by", "sky_colour"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "--by groups --compare reports" in done.stderr
