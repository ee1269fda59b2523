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

from liquid_control.util.safe_input import short_repr

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


def _optional(hint: Any) -> bool:
    """Whether a type hint allows None (`X | None`, `Optional[X]`)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _coerce(hint: Any, value: Any) -> Any:
    """A YAML/JSON list as the tuple a `tuple[X, ...]` field expects (elements cast to int/float)."""
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        element = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(element(v) for v in value) if element in (int, float) else tuple(value)
    return value


_SCALAR_TYPES = {int: "an integer", float: "a number", str: "text", bool: "true or false"}


def _scalar_type(hint: Any) -> tuple[type | None, bool]:
    """(int/float/str/bool the field holds or None, whether None is allowed) from its type hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 and args[0] in _SCALAR_TYPES else None), optional
    return (hint if hint in _SCALAR_TYPES else None), False


def _check_scalar(hint: Any, value: Any, where: str) -> None:
    """A YAML/JSON value for an int/float/str/bool field must have that type (an int is a float too;
    True is not a number), so a wrong type is a ConfigError naming the key, not a TypeError later."""
    kind, optional = _scalar_type(hint)
    if kind is None or (value is None and optional):
        return
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN fails
    if not ok:
        raise ConfigError(f"{where}: got {short_repr(value)}; expected {_SCALAR_TYPES[kind]}")


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Dataclass `cls` from `data` (None: the defaults); ConfigError on an unknown key or invalid value."""
    where = where or cls.__name__
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {short_repr(data)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in data if key not in fields)  # YAML keys may be ints, None...
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        nested = _dataclass_in(hints[name])
        if nested is not None and value is None and not _optional(hints[name]):
            kwargs[name] = nested()  # an empty YAML section (`optim:`) means its defaults
        elif nested is not None and value is not None and not isinstance(value, nested):
            kwargs[name] = config_from_dict(nested, value, f"{where}.{name}")
        else:
            _check_scalar(hints[name], value, f"{where}.{name}")
            try:
                kwargs[name] = _coerce(hints[name], value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigError(f"{where}.{name}: got {short_repr(value)} ({exc})") from None
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
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
