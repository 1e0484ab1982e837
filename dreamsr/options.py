"""`SamplingOptions`: the one typed home of every sampling setting, its defaults and its validation.

Every entry point (``dreamsr upscale``/``eval``/``bench``, ``EvalConfig``, training validation, ``Upscaler``
from Python) holds one of these. A checkpoint may recommend some fields (``CheckpointInfo.sampling``, measured for
that model); :meth:`SamplingOptions.resolve` applies the recommendation under whatever the caller gave, so a
model's recommended sampling applies everywhere unless the caller overrides a field.

Conventions: ``tile``/``overlap`` are LR pixels (paper Sec. 6.2: 40x40 tiles, 5 px overlap; ``tile=0`` is one
tile); ``start`` is a trained step t0 of a truncated start (``None``: the full chain); ``eta`` ``None`` means the
sampler's own default (0 for DDIM, 1 for DDPM); ``seed`` seeds every random draw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping

from dreamsr.config import from_dict_strict
from dreamsr.errors import ConfigError

__all__ = ["SamplingOptions", "SAMPLER_NAMES", "MERGE_MODES", "ENSEMBLE_SIZES", "RECOMMENDABLE"]

SamplerName = Literal["ddim", "ddpm"]
MergeMode = Literal["step", "end"]
SAMPLER_NAMES: tuple[str, ...] = ("ddim", "ddpm")
MERGE_MODES: tuple[str, ...] = ("step", "end")
ENSEMBLE_SIZES: tuple[int, ...] = (1, 2, 4, 8)
# the fields a checkpoint may recommend (measured per model; see docs/models.md)
RECOMMENDABLE = frozenset({"steps", "sampler", "eta", "tile", "overlap", "start", "back_project", "ensemble"})


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample one image. Frozen; ``validate()`` runs on construction."""

    steps: int = 50  # respaced sampler steps over the trained chain
    sampler: SamplerName = "ddim"  # "ddim" (deterministic at eta 0) | "ddpm" (ancestral, Alg. 2)
    eta: float | None = None  # noise of each step; None: the sampler's default (DDIM 0, DDPM 1)
    seed: int = 0  # seed of every random draw (same seed, same image, whatever `batch`)
    tile: int = 40  # LR tile side in pixels (paper: 40); 0 = the whole image as one tile
    overlap: int = 5  # LR tile overlap in pixels (paper: 5); tile >= 2 * overlap
    batch: int = 4  # tiles per network call (speed only; the image does not change)
    merge: MergeMode = "step"  # "step": blend tiles at every step (no seams); "end": the paper's protocol
    start: int | None = None  # truncated start: trained step t0 to begin from the noised condition; None = full chain
    back_project: bool = False  # LR back-projection of every x0 estimate
    ensemble: int = 1  # geometric self-ensemble members: 1, 2, 4 or 8 (that many times the work)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for any field out of range (chain-independent checks; see :meth:`check_chain`)."""
        if int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.sampler not in SAMPLER_NAMES:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}, got {self.sampler!r}")
        if self.eta is not None and not (self.eta >= 0 and math.isfinite(self.eta)):
            raise ConfigError(f"eta must be >= 0, got {self.eta}")
        from dreamsr.tiling import validate_tiling  # here, not at the top: the CLI imports options before torch

        validate_tiling(self.tile, self.overlap)
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1, got {self.batch}")
        if self.merge not in MERGE_MODES:
            raise ConfigError(f"merge must be 'step' or 'end', got {self.merge!r}")
        if self.start is not None and self.start < 1:
            raise ConfigError(f"start must be a trained step >= 1 (None: the full chain), got {self.start}")
        if self.start is not None and self.start < self.steps:
            raise ConfigError(f"start ({self.start}) must be at least steps ({self.steps}): the chain from step "
                              f"{self.start} has only {self.start} steps (lower --steps or raise --start)")
        if self.ensemble not in ENSEMBLE_SIZES:
            raise ConfigError(f"ensemble must be {', '.join(map(str, ENSEMBLE_SIZES[:-1]))} or {ENSEMBLE_SIZES[-1]}, "
                              f"got {self.ensemble}")

    def check_chain(self, chain: int) -> None:
        """Raise ConfigError unless these options fit a process whose trained chain has ``chain`` steps."""
        top = chain if self.start is None else self.start
        if self.start is not None and not 1 <= self.start <= chain:
            raise ConfigError(f"start must be a trained step in [1, {chain}], got {self.start}")
        if self.steps > top:
            raise ConfigError(f"cannot take {self.steps} steps from a chain of {top} trained steps"
                              + (" (lower --steps or raise --start)" if self.start is not None else ""))

    # ---------------------------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, recommended: Mapping[str, Any] | None = None, **given: Any) -> "SamplingOptions":
        """Options from the defaults, then a checkpoint's ``recommended`` fields, then what the caller ``given``.

        A ``given`` value of ``None`` means "not given". ``start=0`` given means the full chain (it overrides a
        recommended start). A recommended truncated start applies only when it is at least the resolved number
        of steps (a user asking for more steps than the recommended chain has gets the full chain).
        """
        known = {f.name for f in fields(cls)}
        unknown = set(given) - known
        if unknown:
            raise ConfigError(f"unknown sampling option(s) {sorted(unknown)}; known: {sorted(known)}")
        rec = dict(recommended or {})
        bad = set(rec) - RECOMMENDABLE
        if bad:
            raise ConfigError(f"unknown recommended sampling keys {sorted(bad)}; allowed: {sorted(RECOMMENDABLE)}")
        chosen: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        steps = int(chosen.get("steps", rec.get("steps", cls.steps)))
        chosen["steps"] = steps
        for key in ("sampler", "eta", "tile", "overlap", "back_project", "ensemble"):
            if key not in chosen and rec.get(key) is not None:
                chosen[key] = rec[key]
        if "start" in chosen:
            chosen["start"] = int(chosen["start"]) or None  # 0: the full chain
        elif rec.get("start") is not None and int(rec["start"]) >= steps:
            chosen["start"] = int(rec["start"])  # a truncated chain of the recommended length or shorter
        return cls(**chosen)

    @classmethod
    def check_given(cls, **given: Any) -> None:
        """Raise ConfigError for any out-of-range ``given`` field (``None``: not given), before a model's
        recommendation is known (entry points call this before touching files or loading a model)."""
        cls.resolve(None, **{**given, "steps": 1 if given.get("steps") is None else given["steps"]})

    def replace(self, **changes: Any) -> "SamplingOptions":
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SamplingOptions":
        return from_dict_strict(cls, d)

    def describe(self) -> str:
        """One line for run headers, e.g. ``ddim 10 steps, tile 40/5, merge step, seed 0, start 500, back-projection``."""
        return (f"{self.sampler} {self.steps} steps" + (f" (eta {self.eta:g})" if self.eta is not None else "")
                + f", tile {self.tile or 'off'}" + (f"/{self.overlap}" if self.tile else "")
                + f", merge {self.merge}, seed {self.seed}"
                + (f", start {self.start}" if self.start else "") + (", back-projection" if self.back_project else "")
                + (f", ensemble of {self.ensemble}" if self.ensemble > 1 else ""))

    @property
    def sampler_kwargs(self) -> dict[str, float]:
        """Keyword arguments for the sampler function (``eta`` only when given)."""
        return {} if self.eta is None else {"eta": float(self.eta)}
