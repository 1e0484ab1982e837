"""Diffusion processes, by the name a checkpoint's metadata gives (``process``); a plain dict, no registry.

Adding one: a module with a config dataclass and a class implementing :class:`dreamsr.processes.base.Process`,
plus one line in :data:`PROCESSES`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from dreamsr.diffusion import DiffusionConfig
from dreamsr.errors import CheckpointError
from dreamsr.processes.base import Process
from dreamsr.processes.gaussian import GaussianProcess
from dreamsr.processes.shift import ShiftConfig, ShiftProcess

__all__ = ["PROCESSES", "ProcessSpec", "get_process", "build_process", "process_config"]


class ProcessSpec:
    """A process's config type and constructor ``build(config, space)`` (space: a first stage or None)."""

    def __init__(self, config_type: Any, build: Callable[[Any, Any], Process]) -> None:
        self.config_type = config_type
        self.build = build


PROCESSES: dict[str, ProcessSpec] = {
    "gaussian": ProcessSpec(DiffusionConfig, GaussianProcess),
    "shift": ProcessSpec(ShiftConfig, ShiftProcess),
}


def get_process(name: str) -> ProcessSpec:
    """The spec of process ``name``; CheckpointError naming the known ones otherwise."""
    try:
        return PROCESSES[name]
    except KeyError:
        raise CheckpointError(f"unknown diffusion process {name!r}; this dreamsr knows "
                              f"{', '.join(sorted(PROCESSES))} (upgrade dreamsr?)") from None


def process_config(name: str, d: Mapping[str, Any]) -> Any:
    """The typed config of process ``name`` from its metadata dict."""
    return get_process(name).config_type.from_dict(dict(d))


def build_process(name: str, config: Any, space: Any = None) -> Process:
    """The process object of ``name`` for ``config``, running in ``space`` (a first stage; None: pixels)."""
    return get_process(name).build(config, space)
