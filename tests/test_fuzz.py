"""Property-based fuzzing (hypothesis) of every public entry point that reads outside input.

Property, for each: a clear project error (ModelFileError, ExportError, BagError, ScenarioError,
ConfigError or a ValueError naming the problem) or a correct result, never another exception, never a
silently wrong or partial result, never more than a few seconds. The mutations and the "correct result"
checks live in tests/fuzz_targets.py, shared with benchmarks/fuzz.py (>= 10,000 cases, docs/BENCHMARKS.md).

Example counts are small and the runs derandomized (the "ci" profile below), so the suite stays fast and
repeatable; set HYPOTHESIS_PROFILE=dev for fresh random examples.
"""
import json
import math
import os

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_targets as ft

settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CASE_LIMIT_S = 10.0  # "a few seconds" on a loaded 2-core machine; every case here takes well under 1 s idle
CLI_LIMIT_S = 30.0  # a CLI case may import matplotlib and evaluate a whole (small) bag


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return ft.build_context(tmp_path_factory.mktemp("fuzz"), onnx_policy="handmade", perception_onnx=False)


def check(target, ctx, rng, limit=CASE_LIMIT_S):
    outcome, elapsed = ft.run_case(ft.TARGETS[target], ctx, rng, limit)
    assert outcome.kind in ("ok", "handled"), f"{target}: {outcome.kind}: {outcome.detail} ({elapsed:.2f} s)"
    return outcome


@settings(max_examples=60)
@given(rng=st.randoms(use_true_random=False))
def test_model_file_mutations(ctx, rng):
    check("model_file", ctx, rng)


@settings(max_examples=30)
@given(rng=st.randoms(use_true_random=False))
def test_onnx_file_mutations(ctx, rng):
    check("onnx", ctx, rng)


@settings(max_examples=60)
@given(rng=st.randoms(use_true_random=False))
def test_image_decoding_and_perception(ctx, rng):
    check("image", ctx, rng)


@settings(max_examples=40)
@given(rng=st.randoms(use_true_random=False))
def test_bag_truncations_flips_and_schemas(ctx, rng):
    check("bag", ctx, rng)


@settings(max_examples=25)
@given(rng=st.randoms(use_true_random=False))
def test_scenario_mutations(ctx, rng):
    check("scenario", ctx, rng)


@settings(max_examples=30)
@given(rng=st.randoms(use_true_random=False))
def test_training_recipe_mutations(ctx, rng):
    check("recipe", ctx, rng)


@settings(max_examples=60)
@given(rng=st.randoms(use_true_random=False))
def test_runtime_steps(ctx, rng):
    check("runtime", ctx, rng)


@settings(max_examples=30)
@given(rng=st.randoms(use_true_random=False))
def test_cli_arguments(ctx, rng):
    check("cli", ctx, rng, CLI_LIMIT_S)


# -- hypothesis-generated values straight into the loaders (shrinks to a minimal failing value) --------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
scenario_keys = st.sampled_from(["start", "target", "distractors", "timing", "occlusion", "duration_s",
                                 "arena_half_size_m", "airframes", "task", "description"])


@settings(max_examples=30)
@given(key=scenario_keys, value=json_values)
def test_scenario_top_level_values(tmp_path_factory, key, value):
    from liquid_control.simulation.scenario import ScenarioError, load_scenario

    path = tmp_path_factory.mktemp("scenario") / "s.yaml"
    data = {"task": "fly_to_target", key: value}
    path.write_text(json.dumps(data, allow_nan=True))
    try:
        scenario = load_scenario(path)
    except ScenarioError as error:
        assert 0 < len(str(error)) < ft.MAX_MESSAGE
        return
    assert scenario.arena_half_size_m >= 2.0


@settings(max_examples=60)
@given(timespan=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5),
                          st.none()),
       scale=st.floats(min_value=-1e300, max_value=1e300))
def test_policy_step_timespans_and_feature_scales(ctx, timespan, scale):
    runtime = ft._policy(ctx, "torch")
    before = runtime.state
    try:
        command = runtime.step(np.full(runtime.feature_size, scale), timespan)
    except ValueError:
        assert np.array_equal(runtime.state, before)
        return
    assert command.shape == (4,) and np.isfinite(command).all()
    assert isinstance(timespan, (int, float)) and math.isfinite(float(timespan)) and float(timespan) >= 0


@settings(max_examples=25)
@given(section=st.sampled_from(["optim", "model", "data", "augment", "output", "extends"]), value=json_values)
def test_recipe_section_values(ctx, tmp_path_factory, section, value):
    from liquid_control.config import ConfigError
    from liquid_control.learning.recipe import load_config

    path = tmp_path_factory.mktemp("recipe") / "r.yaml"
    data = yaml.safe_load(ctx.recipe_text)
    data[section] = value
    path.write_text(json.dumps(data, allow_nan=True))
    try:
        load_config(path)
    except ConfigError as error:
        assert 0 < len(str(error)) < ft.MAX_MESSAGE
