"""The sweep file reader (learning/sweep.py): the shipped sweeps plan, bad files are one clear ConfigError.

No Ray here: tests/test_ray.py runs a sweep."""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liquid_control.cli import main as cli_main
from liquid_control.config import ConfigError
from liquid_control.learning.sweep import SweepConfig, load_sweep_config, plan

VALID = {"name": "t", "models": ["cfc", "gru"], "recipe": "config/train_{model}.yaml", "seeds": [0, 1],
         "recipes": {"default": {}, "short": {"optim.epochs": 1, "selection.from_epoch": 1}},
         "overrides": {"optim.threads": 1},
         "evaluate": {"suites": ["occlusion"], "episodes": 2, "seed": 5, "duration_s": 1.0, "backend": "torch"},
         "out_dir": "runs/x"}


def _write(data, folder) -> Path:
    path = Path(folder) / "sweep.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_shipped_sweeps_plan_their_runs(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)  # recipe paths are relative to the working directory, like `train --config`
    time_sweep = load_sweep_config("config/sweep_time.yaml")
    runs = plan(time_sweep)
    assert len(runs) == 6 * 3 and {r.model for r in runs} == {"cfc", "gru", "lstm", "mlp", "gru_time", "lstm_time"}
    assert time_sweep.evaluate.suites == ["occlusion", "variable_rate"]
    by_id = {r.run_id: r for r in runs}
    gru_time = by_id["gru_time-default-seed2"].train
    assert gru_time.seed == 2 and gru_time.model.kind == "gru" and gru_time.model.policy["rnn_time_input"] is True
    assert gru_time.output.model.endswith("runs/sweep_time/runs/gru_time-default-seed2/model.safetensors")
    assert by_id["cfc-default-seed0"].train.output.model != "models/default_cfc.safetensors"  # never overwritten
    assert {r.label for r in runs} == {"cfc", "gru", "lstm", "mlp", "gru_time", "lstm_time"}
    assert len(plan(load_sweep_config("config/sweep_tiny.yaml"))) == 2


def test_two_recipes_label_rows_by_model_and_recipe(repo_root, monkeypatch, tmp_path):
    monkeypatch.chdir(repo_root)
    runs = plan(SweepConfig.from_dict({**VALID, "out_dir": str(tmp_path)}))
    assert len(runs) == 2 * 2 * 2
    short = [r for r in runs if r.recipe == "short"]
    assert {r.label for r in short} == {"cfc (short)", "gru (short)"}
    assert all(r.train.optim.epochs == 1 and r.train.optim.threads == 1 for r in short)


def test_each_data_folder_is_collected_by_its_recipes_expert(repo_root, monkeypatch, tmp_path):
    from liquid_control.learning.sweep import data_collections

    monkeypatch.chdir(repo_root)
    stiff = {"expert.chase_forward_gain": 2.0}
    runs = plan(SweepConfig.from_dict({**VALID, "out_dir": str(tmp_path), "recipes": {"default": {}, "stiff": stiff}}))
    with pytest.raises(ConfigError, match="two recipes collect different data"):
        data_collections(runs)  # one folder, two experts: the labels would mix
    own = {**stiff, "data.sources": [str(tmp_path / "stiff_data")]}
    runs = plan(SweepConfig.from_dict({**VALID, "out_dir": str(tmp_path), "recipes": {"default": {}, "stiff": own}}))
    experts = {folder: expert.chase_forward_gain for folder, *_, expert in data_collections(runs)}
    assert experts[str(tmp_path / "stiff_data")] == 2.0 and len(experts) == 2


@pytest.mark.parametrize("change, message", [
    ({"models": []}, "models"), ({"models": ["cfc", "cfc"]}, "repeat"), ({"models": ["a b"]}, "not a name"),
    ({"seeds": [0, 0]}, "repeated"), ({"seeds": [True]}, "seeds"), ({"seeds": "0"}, "seeds"),
    ({"recipe": "config/train.yaml"}, "{model}"), ({"recipes": {"x": {"seed": 3}}}, "set by the sweep"),
    ({"overrides": {"output.model": "m"}}, "set by the sweep"), ({"overrides": {"a..b": 1}}, "recipe key"),
    ({"evaluate": {"suites": []}}, "suites"), ({"evaluate": {"backend": "tensorrt"}}, "backend"),
    ({"evaluate": {"episodes": 0}}, "episodes"), ({"nope": 1}, "unknown key"), ({"evaluate": {"x": 1}}, "unknown"),
])
def test_bad_sweep_files_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_sweep_config(_write({**VALID, **change}, tmp_path))


def test_sweep_cli_errors_are_one_line(tmp_path, capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    assert cli_main(["sweep", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = _write({**VALID, "models": ["nosuchmodel"], "recipe": "config/train_{model}.yaml"}, tmp_path)
    assert cli_main(["sweep", "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training config config/train_nosuchmodel.yaml does not exist")
    good = _write({**VALID, "out_dir": str(tmp_path / "out")}, tmp_path)
    assert cli_main(["sweep", "--config", str(good), "--dry-run"]) == 0
    assert "8 runs, 8 to run" in capsys.readouterr().out
    # A run is finished when its model and its report exist; only those count.
    run = tmp_path / "out" / "runs" / "cfc-default-seed0"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"m")
    assert cli_main(["sweep", "--config", str(good), "--dry-run"]) == 0
    assert "8 runs, 8 to run" in capsys.readouterr().out
    (run / "report.json").write_text("{}")
    assert cli_main(["sweep", "--config", str(good), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 runs, 7 to run" in out and "cfc-default-seed0: finished" in out
    assert cli_main(["sweep", "--config", str(good), "--ray", "bad address"]) == 2
    assert "error: --ray 'bad address'" in capsys.readouterr().err


# Random damage to a valid file: a value replaced by junk, a key dropped or added, text garbled.
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True), st.text(max_size=12),
                 st.lists(st.one_of(st.integers(-2, 5), st.text(max_size=5)), max_size=4),
                 st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))


@settings(max_examples=80, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_sweep_files_give_a_config_or_a_config_error(data):
    doc = copy.deepcopy(VALID)
    action = data.draw(st.sampled_from(["replace", "drop", "add", "text"]))
    paths = [p for p in _paths(doc) if p]
    where = data.draw(st.sampled_from(paths))
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if action == "replace":
        parent[where[-1]] = data.draw(JUNK)
    elif action == "drop":
        del parent[where[-1]]
    elif action == "add":
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(JUNK)
    with tempfile.TemporaryDirectory() as folder:
        if action == "text":
            text = yaml.safe_dump(doc)
            cut = data.draw(st.integers(0, len(text)))
            path = _write(text[:cut] + data.draw(st.text(max_size=6)) + text[cut:], folder)
        else:
            path = _write(doc, folder)
        try:
            config = load_sweep_config(path)
        except ConfigError as err:
            assert str(err) and "Traceback" not in str(err)
            return
    # Accepted: then it is a usable sweep.
    assert isinstance(config, SweepConfig) and config.models and config.seeds and config.evaluate.suites
    assert all(isinstance(s, int) and not isinstance(s, bool) for s in config.seeds)
    assert all(isinstance(v, dict) for v in config.recipes.values()) and isinstance(config.overrides, dict)
    assert isinstance(config.out_dir, str) and os.fspath(config.out_dir)


def test_episodes_in_the_callers_process_leave_its_torch_threads_alone():
    """A training that collects DAgger episodes in its own process (workers 1) keeps its thread count."""
    import torch

    from liquid_control.learning import collect as collect_module
    from liquid_control.util.executors import SerialExecutor

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = list(SerialExecutor().run(lambda job: torch.get_num_threads(), [0, 1], collect_module._init_worker,
                                         (None,)))
        assert seen == [(0, 1), (1, 1)]  # the episodes ran on one thread...
        assert torch.get_num_threads() == 2  # ...and the caller has its two back
    finally:
        torch.set_num_threads(before)
