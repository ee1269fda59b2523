"""Which epoch a training run keeps: validation loss, or closed-loop success flown through the deploy loop."""
from __future__ import annotations

import csv
import math

import pytest

from liquid_control.config import ConfigError
from liquid_control.learning.recipe import load_config
from liquid_control.learning.selection import CANDIDATE, improves, ranking_key
from liquid_control.learning.train import train
from liquid_control.models import load_model
from test_train import _synthetic_shards

NAN, INF = math.nan, math.inf


def test_ranking_known_answers():
    # val_loss: the lower loss wins, whatever a score says (the shipped behaviour)
    assert improves("val_loss", 0.1, NAN, 0.2, NAN)
    assert not improves("val_loss", 0.3, 0.9, 0.2, 0.1)
    # closed_loop: success first, then the lower loss; a flown epoch beats any epoch that was not flown
    assert improves("closed_loop", 0.5, 0.6, 0.1, 0.5)
    assert not improves("closed_loop", 0.05, 0.4, 0.1, 0.5)
    assert improves("closed_loop", 0.05, 0.5, 0.1, 0.5)
    assert not improves("closed_loop", 0.15, 0.5, 0.1, 0.5)
    assert improves("closed_loop", 0.9, 0.0, 0.1, NAN)
    assert not improves("closed_loop", 0.05, NAN, 0.1, 0.0)
    assert improves("closed_loop", 0.05, NAN, 0.1, NAN)  # before from_epoch: by loss, so DAgger has a model
    assert improves("closed_loop", 1.0, NAN, INF, NAN)  # the first epoch always
    assert ranking_key("closed_loop", 0.1, 0.7) > ranking_key("closed_loop", 0.1, 0.6)


def test_closed_loop_selection_flies_candidates_and_keeps_the_best_flown_epoch(tmp_path, repo_root):
    data = tmp_path / "data"
    _synthetic_shards(data, episodes=4, frames=30)
    run = tmp_path / "run"
    overrides = {"data.sources": [str(data)], "data.collect": None, "optim.epochs": 3, "optim.threads": 1,
                 "output.model": str(tmp_path / "tiny.safetensors"), "output.run_dir": str(run),
                 "selection.metric": "closed_loop", "selection.from_epoch": 2, "selection.episodes": 1,
                 "selection.workers": 1, "selection.duration_s": 1.0}
    result = train(load_config(repo_root / "config" / "train_tiny.yaml", overrides), progress=False)
    scores = [row["closed_loop_success"] for row in result.history]
    assert scores[0] is None  # before from_epoch: not flown
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores[1:]), scores
    keys = [ranking_key("closed_loop", row["val_loss"], NAN if row["closed_loop_success"] is None
                        else row["closed_loop_success"]) for row in result.history]
    expected = 1 + keys.index(max(keys))
    assert expected >= 2 and result.best_epoch == expected, (result.history, result.best_epoch)
    assert result.best_closed_loop_success == pytest.approx(scores[expected - 1])
    bundle = load_model(result.model_path)
    assert bundle.training["best_epoch"] == expected
    assert bundle.training["best_closed_loop_success"] == pytest.approx(scores[expected - 1])
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert rows[0]["closed_loop_success"] == "" and float(rows[2]["closed_loop_success"]) == pytest.approx(scores[2])
    assert not (run / CANDIDATE).exists()


@pytest.mark.parametrize("overrides, match", [
    ({"selection.metric": "reward"}, "selection.metric"),
    ({"selection.metric": "closed_loop", "selection.from_epoch": 9}, "from_epoch"),
    ({"selection.episodes": 0}, "selection"),
    ({"selection.duration_s": -1.0}, "duration_s"),
])
def test_bad_selection_settings_are_named(repo_root, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(repo_root / "config" / "train_tiny.yaml", overrides)


def test_unknown_selection_suite_fails_before_training(tmp_path, repo_root):
    config = load_config(repo_root / "config" / "train_tiny.yaml", {
        "data.sources": [str(tmp_path / "nothing")], "data.collect": None, "selection.metric": "closed_loop",
        "selection.suite": "no_such_suite", "output.run_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="selection.suite"):
        train(config, progress=False)
