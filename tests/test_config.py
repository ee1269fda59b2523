"""ConfigBase / config_from_dict: one unknown-key check and one dict round trip for every config dataclass."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import yaml

from liquid_control.config import ConfigBase, ConfigError, config_from_dict
from liquid_control.models.perception import PerceptionConfig
from liquid_control.models.policy import PolicyConfig

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Inner(ConfigBase):
    rate_hz: float = 30.0
    sizes: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"Inner: rate_hz must be > 0, got {self.rate_hz}")


@dataclass
class Plain:  # a nested dataclass without the mixin (e.g. AugmentConfig) is read the same way
    gain: float = 1.0


@dataclass
class Outer(ConfigBase):
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    optional: Optional[Inner] = None
    plain: Plain = field(default_factory=Plain)
    scale: tuple[float, ...] = (1.0,)


def test_nested_mappings_build_nested_configs_and_lists_become_tuples():
    config = Outer.from_dict({"inner": {"sizes": [3, 4]}, "optional": {"rate_hz": 10}, "plain": {"gain": 2.0},
                              "scale": [1, 2]})
    assert config.inner == Inner(sizes=(3, 4)) and config.optional == Inner(rate_hz=10)
    assert config.plain == Plain(2.0) and config.scale == (1.0, 2.0) and isinstance(config.scale[0], float)
    assert Outer.from_dict(None) == Outer() and Outer.from_dict({"optional": None}).optional is None
    data = config.to_dict()
    assert data["inner"]["sizes"] == [3, 4] and data["scale"] == [1.0, 2.0]
    assert Outer.from_dict(json.loads(json.dumps(data))) == config  # survives JSON


@pytest.mark.parametrize("data, match", [
    ({"colour": "red"}, r"^Outer: unknown key\(s\) \['colour'\]; allowed: \['inner', 'name', 'optional'"),
    ({"inner": {"rate": 1}}, r"^Outer\.inner: unknown key\(s\) \['rate'\]"),
    ({"inner": {"rate_hz": -1}}, r"^Outer\.inner: rate_hz must be > 0, got -1$"),  # the class name is not repeated
    ({"inner": 5}, r"^Outer\.inner: expected a mapping, got 5$"),
    ({"plain": {"gain": 1, "bias": 0}}, r"^Outer\.plain: unknown key\(s\) \['bias'\]"),
])
def test_errors_name_where_the_bad_key_is(data, match):
    with pytest.raises(ConfigError, match=match):
        Outer.from_dict(data)


def test_a_mapping_is_required():
    with pytest.raises(ConfigError, match="recipe: expected a mapping, got \\[1\\]"):
        config_from_dict(Outer, [1], "recipe")


@pytest.mark.parametrize("cls", [PolicyConfig, PerceptionConfig])
def test_model_configs_round_trip_and_refuse_unknown_keys(cls):
    config = cls()
    data = json.loads(json.dumps(config.to_dict()))  # as stored in model files
    assert cls.from_dict(data) == config
    with pytest.raises(ValueError, match=f"{cls.__name__}: unknown key"):
        cls.from_dict({**data, "colour": "red"})


def test_the_training_recipes_read_with_the_same_base():
    """Every shipped recipe reads into TrainConfig (tuples from YAML lists); unknown keys are named."""
    from liquid_control.learning.recipe import TrainConfig, load_config

    for recipe in sorted((REPO / "config").glob("train_*.yaml")):
        config = load_config(recipe)
        assert isinstance(config, TrainConfig) and isinstance(config.augment.contrast, tuple), recipe.name
        optim = yaml.safe_load(recipe.read_text()).get("optim", {})  # a recipe that extends may name none
        assert {k: v for k, v in config.to_dict()["optim"].items() if k in optim} == optim, recipe.name
    with pytest.raises(ConfigError, match=r"recipe\.optim: unknown key\(s\) \['epoch'\]"):
        config_from_dict(TrainConfig, {"optim": {"epoch": 3}}, "recipe")
