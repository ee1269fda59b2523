"""One way to read configs from mappings (YAML, JSON, model-file metadata) into dataclasses.

`config_from_dict(cls, data)` builds dataclass `cls` from a mapping: a key that is not a
field is an error naming the key and the allowed ones; a field typed as a dataclass (or
`Optional` of one) is built recursively from a nested mapping; a list given for a `tuple[...]`
field becomes a tuple. `ConfigBase` puts that on a dataclass as `from_dict`, with the
inverse `to_dict` (plain dicts and lists, ready for JSON or YAML).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config with an unknown, missing or invalid entry; the message names where (e.g. `recipe.optim`)."""


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds, from its type hint (`Section`, `Section | None`, `Optional[Section]`)."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        return found[0] if len(found) == 1 else None
    return None


def _coerce(hint: Any, value: Any) -> Any:
    """A YAML/JSON list as the tuple a `tuple[X, ...]` field expects (elements cast to int/float)."""
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        element = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(element(v) for v in value) if element in (int, float) else tuple(value)
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Dataclass `cls` from `data` (None: the defaults); ConfigError on an unknown key or invalid value."""
    where = where or cls.__name__
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        nested = _dataclass_in(hints[name])
        if nested is not None and value is not None and not isinstance(value, nested):
            kwargs[name] = config_from_dict(nested, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(hints[name], value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        message = str(exc)
        own_prefix = f"{cls.__name__}: "  # a __post_init__ that already names its class
        raise ConfigError(f"{where}: {message.removeprefix(own_prefix)}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ConfigBase:
    """Mixin for config dataclasses: `from_dict` (config_from_dict) and `to_dict` (its inverse)."""

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
        return config_from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists (tuples become lists), nested configs included."""
        return _plain(dataclasses.asdict(self))
