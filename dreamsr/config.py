"""Typed configs from plain dicts (checkpoint metadata, JSON records): one strict helper for every dataclass.

Unknown keys are an error naming them (a checkpoint written by a newer dreamsr, or a typo, never half-loads);
missing keys take the dataclass's defaults. :func:`check_types` checks a dict read from an untrusted file (a
checkpoint's metadata) against a dataclass's annotations before anything is built from it.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from typing import Any, Mapping, TypeVar

from dreamsr.errors import ConfigError

__all__ = ["from_dict_strict", "to_plain_dict", "check_types"]

T = TypeVar("T")


def from_dict_strict(cls: type[T], d: Mapping[str, Any]) -> T:
    """``cls(**d)`` for a dataclass ``cls``; raises ConfigError naming any key ``cls`` does not have."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(d, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls) if f.init}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    return cls(**d)


def to_plain_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-friendly dict: ``asdict`` with every tuple field as a list (so a dict read back
    from JSON compares equal)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (values come from untrusted files)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(args[0], _type_name(args[0]))
    if is_dataclass(tp):
        return "a JSON object"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _matches(tp: Any, value: Any, where: str) -> bool:
    """Whether ``value`` has type ``tp`` (nested dataclasses are checked by :func:`check_types`, which raises)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arm, value, where) for arm in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, (list, tuple)) and all(_matches(args[0], v, where) for v in value)
    if is_dataclass(tp):
        if isinstance(value, tp):
            return True
        if isinstance(value, Mapping):
            check_types(tp, value, where)
            return True
        return False
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(value, Mapping)
    return True  # a type this check does not know: the dataclass's own validation decides


def check_types(cls: type, d: Any, where: str) -> None:
    """ConfigError unless ``d`` is a mapping whose values have the types ``cls``'s fields are annotated with.

    Integers must be integers (not ``4.0``, not ``true``), numbers finite, ``Literal`` fields one of their
    values, ``tuple[int, ...]`` lists of integers, nested dataclasses mappings checked the same way. Keys ``cls``
    does not have are left to :func:`from_dict_strict`. ``where`` (e.g. ``"network"``) starts the field's name in
    the message: ``network.inner_channels must be an integer, got 4.0``.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {_short(d)}")
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in d and not _matches(hints[f.name], d[f.name], f"{where}.{f.name}"):
            raise ConfigError(f"{where}.{f.name} must be {_type_name(hints[f.name])}, got {_short(d[f.name])}")
