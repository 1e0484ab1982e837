"""Typed configs from plain dicts (checkpoint metadata, JSON records): one strict helper for every dataclass.

Unknown keys are an error naming them (a checkpoint written by a newer dreamsr, or a typo, never half-loads);
missing keys take the dataclass's defaults.
"""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any, Mapping, TypeVar

from dreamsr.errors import ConfigError

__all__ = ["from_dict_strict", "to_plain_dict"]

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
