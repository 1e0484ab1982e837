"""The :class:`Upscaler`: network + diffusion process + tiling -> a super-resolved image.

Data flow of :meth:`Upscaler.upscale` for an LR image ``lr`` [3, h, w] in [0, 1] and scale s:

1. ``up`` = bicubic(lr) to [3, h*s, w*s], mapped to [-1, 1], computed once on the whole image (so every tile sees
   the same pixels as the untiled image); the family turns (lr, up) into the network's condition
   (:meth:`dreamsr.families.base.Family.condition`: SR3 uses ``up``);
2. the LR tile grid (paper Sec. 6.2: 40x40 tiles, 5 px overlap; :mod:`dreamsr.tiling`) is scaled by s to the
   HR grid; images smaller than a tile are padded by reflection and cropped back;
3. ``merge="step"`` (default): the whole (padded) HR image is one sample. At every step the network
   predicts (ε, or x0, as the process says) for all tiles (in batches of ``batch``), the tiles' predictions are
   blended with feathered weights summing to 1, and the process takes one step on the whole image. The noise is
   one image-sized draw, so it is shared where tiles overlap, there are no seams, and the result does not depend
   on ``batch``. ``merge="end"``: the paper's protocol; each tile is sampled on its own (its own generator, seeded
   from ``seed`` and the tile index, so ``batch`` does not matter either) and the finished tiles are blended.
4. the sampled signal is mapped back to an image by the process (Gaussian: identity for the ``image`` target,
   ``up + y0 / residual_scale`` for ``residual``), cropped, and returned in [0, 1].

The settings are one :class:`~dreamsr.options.SamplingOptions`, resolved against the checkpoint's recommendation.
Options: a truncated start (``start`` = trained step t0: sampling begins from the condition noised to
level t0, Eq. 3, instead of pure noise) and LR back-projection (after each y0_hat, the HR estimate is
corrected so its bicubic downsample matches the LR input: hr += up(lr - down(hr)), Irani & Peleg's
iterative back-projection (``BACK_PROJECTION_ITERS`` rounds), applied to the *image* whatever the diffused
target), and a geometric self-ensemble (``ensemble`` = 2, 4 or 8: the LR image is flipped/rotated, each
version is super-resolved with the same options and seed, the results are mapped back and averaged; EDSR's
"+" models, Lim et al. 2017). The members are the dihedral transforms in :data:`ENSEMBLE_TRANSFORMS` order:
2 = identity and horizontal flip, 4 adds the two 180-degree ones, 8 adds the four that swap height and width.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dreamsr.checkpoint import CheckpointInfo, load_checkpoint
from dreamsr.errors import ConfigError, InputError, SamplingError
from dreamsr.families import get_family
from dreamsr.images import (DEFAULT_MAX_PIXELS, LoadedImage, OutputExistsError, format_for_path, from_model,
                            load_image, resize, save_image, to_model)
from dreamsr.options import ENSEMBLE_SIZES, SamplingOptions
from dreamsr.runtime import autocast, resolve_device, resolve_precision
from dreamsr.tiling import TileGrid, accumulate, align_to_unit, make_grid, reflect_pad, split

__all__ = ["Upscaler", "UpscaleResult", "Plan", "ProgressFn", "MIN_SIDE", "BACK_PROJECTION_ITERS", "tile_seed",
           "output_size", "ENSEMBLE_SIZES", "ENSEMBLE_TRANSFORMS", "dihedral"]

ProgressFn = Callable[[int, int], None]  # (model calls done, model calls in total) after every tile batch

MIN_SIDE = 4  # smallest LR side (px) accepted: a 1x1 or 2x3 image carries nothing to super-resolve
# Back-projection iterations per y0_hat. One iteration of hr += U(lr - D(hr)) removes only ~half of the
# LR mismatch (bicubic U then antialiased D attenuates); three leave ~15-20% (measured at x2 and x4).
BACK_PROJECTION_ITERS = 3
# Self-ensemble members as (quarter turns counter-clockwise, horizontal flip first); a prefix of length 1, 2, 4
# or 8 is a group, so every member's inverse is in the same ensemble.
ENSEMBLE_TRANSFORMS: tuple[tuple[int, bool], ...] = ((0, False), (0, True), (2, False), (2, True),
                                                     (1, False), (1, True), (3, False), (3, True))


def dihedral(x: torch.Tensor, turns: int, flip: bool, *, inverse: bool = False) -> torch.Tensor:
    """Apply (or undo, with ``inverse``) one of :data:`ENSEMBLE_TRANSFORMS` to ``x`` [..., H, W]: a horizontal
    flip when ``flip``, then ``turns`` counter-clockwise quarter turns."""
    if not inverse:
        x = x.flip(-1) if flip else x
        return torch.rot90(x, turns % 4, dims=(-2, -1))
    x = torch.rot90(x, -(turns % 4), dims=(-2, -1))
    return x.flip(-1) if flip else x


def tile_seed(seed: int, index: int) -> int:
    """Seed of tile ``index``'s own generator in ``merge="end"`` mode (independent of the batch size)."""
    return (int(seed) * 1_000_003 + int(index)) % (2 ** 63)


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Output (H, W) for a final ``scale`` (rounded to the nearest pixel, at least 1)."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


@dataclass(frozen=True)
class Plan:
    """What an upscale of one image will do: tiles, steps, network calls and the tile batch's shapes."""

    tiles: int  # tiles per step
    steps: int  # sampler steps
    ensemble: int  # self-ensemble members
    batch: int  # tiles per network call
    calls: int  # network calls in total (ensemble x steps x tile batches)
    signal_tile: tuple[int, int]  # (h, w) of a tile in the process's signal space
    cond_tile: tuple[int, int]  # (h, w) of a tile of the network's condition


@dataclass(frozen=True)
class _Geometry:
    ha: int  # LR height after alignment padding
    wa: int
    grid: TileGrid  # LR grid
    hgrid: TileGrid  # HR pixel grid
    sgrid: TileGrid  # the process's signal grid


@dataclass
class UpscaleResult:
    """What :meth:`Upscaler.upscale_file` did."""

    input: Path
    output: Path
    in_size: tuple[int, int]  # (H, W) of the input
    out_size: tuple[int, int]  # (H, W) written
    native_scale: int  # the model's factor
    scale: float  # the factor written (native, or another one by a final bicubic resize)
    seconds: float
    warnings: list[str] = field(default_factory=list)


class Upscaler:
    """Holds a network, its checkpoint info (family, process, native scale) and the device/precision choices.

    ``model`` is any module called as ``model(y_t, cond, level) -> prediction`` (the family's network, see
    :mod:`dreamsr.families.base`); it is moved to ``device`` (in place, as ``nn.Module.to``), optionally to
    channels_last, and put in eval mode only while sampling (its previous mode is restored, so a training loop can
    validate with its own model). ``precision`` goes through :func:`~dreamsr.runtime.resolve_precision` ("auto":
    bf16/fp16 on CUDA, fp32 elsewhere); anything but fp32 runs the network under autocast.

    Sampling settings are a :class:`~dreamsr.options.SamplingOptions`; :meth:`options` resolves them against the
    checkpoint's recommendation (``info.sampling``), so every caller gets the model's recommended sampling unless
    it overrides a field.
    """

    def __init__(self, model: nn.Module, info: CheckpointInfo, *, device: str | torch.device = "cpu",
                 precision: str = "fp32", channels_last: bool = True) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = bool(channels_last)
        self.info = info
        self.scale: int = int(info.scale)
        if self.scale < 1:
            raise ConfigError(f"checkpoint scale must be >= 1, got {self.scale}")
        self.family = get_family(info.family)
        self.process = info.build_process(model)
        self.size_multiple = self.family.size_multiple(info.network)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | torch.device = "auto",
                        precision: str = "auto", channels_last: bool = True) -> "Upscaler":
        """Load a dreamsr safetensors checkpoint (fp32 weights) and wrap it."""
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        model, info = load_checkpoint(path, device=dev)
        return cls(model, info, device=dev, precision=precision, channels_last=channels_last)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, device: str | torch.device = "auto",
                        precision: str = "auto", channels_last: bool = True) -> "Upscaler":
        """A checkpoint file, a registry name or an ``hf://`` URL (resolved by :mod:`dreamsr.jobs.weights`)."""
        from dreamsr.jobs.weights import resolve_weights

        p = Path(name_or_path)
        path = resolve_weights(weights=str(p)) if p.suffix == ".safetensors" or p.is_file() \
            else resolve_weights(model=str(name_or_path))
        return cls.from_checkpoint(path, device=device, precision=precision, channels_last=channels_last)

    # ------------------------------------------------------------------------------------------------
    def options(self, base: SamplingOptions | None = None, *, profile: str | None = None,
                **given: object) -> SamplingOptions:
        """The sampling settings to use: ``base`` with ``given`` fields replaced, or (no ``base``) the defaults
        under this model's recommendation (its named ``profile``'s, else its default) under ``given`` (a ``None``
        value means "not given"); checked against the process's trained chain. Raises ConfigError before any
        work (also for a profile the model does not have)."""
        if base is None:
            rec = self.info.sampling_for(profile)
            opts = SamplingOptions.resolve({**self.process.sampling_defaults, **rec}, **given)
        else:
            changes = {k: v for k, v in given.items() if v is not None}
            opts = base.replace(**changes) if changes else base
        opts.check_chain(self.process.chain)
        return opts

    def _predict(self, y_t: torch.Tensor, cond: torch.Tensor, level: torch.Tensor,
                 origin: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """One network call on a tile batch: y_t [n, C, th, tw], cond [n, C', ...] float32, level [n] ->
        prediction [n, C, th, tw] float32. Tiles whose sides are not multiples of the network's size multiple
        are padded by reflection (the condition by the same fraction of its size) and the prediction cropped.
        ``origin`` (only with a :meth:`_halo`): the tiles' LR offsets; ``cond`` then carries the halo."""
        th, tw = y_t.shape[-2:]
        m = self.size_multiple
        ph, pw = (-th) % m, (-tw) % m
        if ph or pw:
            ch, cw = cond.shape[-2:]
            y_t = reflect_pad(y_t, ph, pw)
            cond = reflect_pad(cond, ph * ch // th, pw * cw // tw)
        if self.channels_last:
            y_t = y_t.contiguous(memory_format=torch.channels_last)
            cond = cond.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            if origin is None:
                out = self.model(y_t, cond, level)
            else:  # a network whose LR lookups depend on the tile's place (IDM under the release's resize rule)
                out = self.model(y_t, cond, level, origin=origin, halo=self._halo())
        out = out.float()[..., :th, :tw].contiguous()
        if not bool(torch.isfinite(out).all()):
            raise SamplingError(self._non_finite("the network's prediction"))
        return out

    def _non_finite(self, what: str) -> str:
        hint = "" if self.precision == "fp32" else "; try --precision fp32"
        return (f"{what} holds NaN or inf values ({self.info.family} model, {self.precision}); sampling stopped "
                f"and no image was written{hint}")

    def back_projection(self, up: torch.Tensor, lr: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """x0_fn for the process: correct y0_hat [B, C, H, W] (signal space) so that the bicubic downsample of
        the HR *image* matches ``lr`` [B, 3, h, w] ([-1, 1], H = h * scale); ``up`` [B, 3, H, W] is bicubic(lr)."""
        proc = self.process
        lr_size, hr_size = tuple(lr.shape[-2:]), tuple(up.shape[-2:])

        def x0_fn(y0_hat: torch.Tensor) -> torch.Tensor:
            img = proc.from_signal(y0_hat, up)
            for _ in range(BACK_PROJECTION_ITERS):  # back-projection: hr += U(lr - D(hr)), bicubic U and D
                img = img + resize(lr - resize(img, lr_size), hr_size)
            return proc.to_signal(img.clamp(-1, 1), up)

        return x0_fn

    # ------------------------------------------------------------------------------------------------
    def _geometry(self, h: int, w: int, s: float, opts: SamplingOptions) -> _Geometry:
        """The aligned LR/HR/signal grids of an ``h`` x ``w`` LR image at scale ``s``: tiles, their offsets and
        the LR image are aligned to the family's unit at this scale (SR3: 1 px), so every tile's output grid is in
        phase with the whole image's."""
        unit, _ = self.family.unit(self.info.network, s)
        tile, overlap = align_to_unit(opts.tile, opts.overlap, unit)
        ha, wa = -(-h // unit) * unit, -(-w // unit) * unit
        grid = make_grid(ha, wa, tile, overlap)
        return _Geometry(ha, wa, grid, grid.scaled(s), grid.scaled(s / self.family.factor(self.info.network)))

    def plan(self, height: int, width: int, options: SamplingOptions | None = None, *, scale: float | None = None,
             **given: object) -> Plan:
        """What :meth:`upscale` will do for an ``height`` x ``width`` LR image with the same settings (nothing runs)."""
        opts = self.options(options, **given)
        s = float(self.scale if scale is None else scale)
        self.family.check_scale(self.info.network, self.scale, s)
        geo = self._geometry(height, width, s, opts)
        batches = math.ceil(len(geo.sgrid) / opts.batch)
        return Plan(tiles=len(geo.sgrid), steps=opts.steps, ensemble=opts.ensemble, batch=opts.batch,
                    calls=opts.ensemble * opts.steps * batches,
                    signal_tile=(geo.sgrid.tile_h, geo.sgrid.tile_w),
                    cond_tile=self._cond_grid(geo.grid, geo.hgrid, geo.sgrid).tile_h_w)

    def model_calls(self, height: int, width: int, options: SamplingOptions | None = None, **given: object) -> int:
        """Network calls (tile batches) that :meth:`upscale` makes for an ``height`` x ``width`` LR image with
        the same ``options``/``given`` settings."""
        return self.plan(height, width, options, **given).calls

    @torch.no_grad()
    def time_call(self, plan: Plan, repeats: int = 1) -> float:
        """Seconds of one network call of ``plan``'s tile batch on this machine (the median of ``repeats`` timed
        calls after one warm-up call), with random inputs of the plan's shapes: for time estimates."""
        probe = self.process.anchor(torch.zeros(1, 3, 8 * self.family.factor(self.info.network), 8))
        c_sig = int(probe.shape[1])
        n = min(plan.batch, plan.tiles)
        y_t = torch.randn(n, c_sig, *plan.signal_tile, device=self.device)
        cond = torch.randn(n, 3, *plan.cond_tile, device=self.device)
        level = torch.full((n,), 0.5, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            self._predict(y_t, cond, level)  # warm-up (first-call set-up, allocator)
            times = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                self._predict(y_t, cond, level)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                times.append(time.perf_counter() - t0)
        finally:
            self.model.train(was_training)
        return sorted(times)[len(times) // 2]

    @property
    def scales(self) -> tuple[float, float]:
        """(min, max) output scale the network samples at: (scale, scale) for a fixed-scale family."""
        return self.family.scales(self.info.network, self.scale)

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, options: SamplingOptions | None = None, *, scale: float | None = None,
                callback: ProgressFn | None = None, **given: object) -> torch.Tensor:
        """Super-resolve ``lr`` [3, h, w] float in [0, 1] by ``scale`` (default: the model's native ``scale``;
        a continuous-scale family takes any scale in :attr:`scales`, a fixed one only its own).

        Returns [3, round(h*scale), round(w*scale)] float32 in [0, 1] on ``lr``'s device (the model samples at
        that size: no resize after it).

        ``options`` (default: this model's recommended sampling, see :meth:`options`) with any ``given`` field
        (``steps=...``, ``seed=...``; :class:`~dreamsr.options.SamplingOptions` names them) replaced;
        ``callback(done, total)`` after every network call (``total`` counts every ensemble member's calls).
        A prediction or a result holding NaN or inf stops sampling with :class:`~dreamsr.errors.SamplingError`.
        """
        opts = self.options(options, **given)
        s = float(self.scale if scale is None else scale)
        self.family.check_scale(self.info.network, self.scale, s)
        if opts.ensemble > 1:
            acc: torch.Tensor | None = None
            single = opts.replace(ensemble=1)
            for k, (turns, flip) in enumerate(ENSEMBLE_TRANSFORMS[:opts.ensemble]):
                def member_cb(done: int, total: int, k: int = k) -> None:
                    if callback is not None:
                        callback(k * total + done, opts.ensemble * total)

                sr = self.upscale(dihedral(lr, turns, flip), single, scale=s, callback=member_cb)
                sr = dihedral(sr, turns, flip, inverse=True)
                acc = sr if acc is None else acc + sr
            assert acc is not None
            return acc / opts.ensemble
        if lr.dim() != 3 or lr.shape[0] != 3:
            raise InputError(f"expected an RGB image [3, h, w], got shape {tuple(lr.shape)}")
        h, w = int(lr.shape[1]), int(lr.shape[2])
        if min(h, w) < MIN_SIDE:
            raise InputError(f"image is {w}x{h} px; dreamsr needs at least {MIN_SIDE}x{MIN_SIDE}")
        if not bool(torch.isfinite(lr).all()):
            raise InputError("image contains NaN or infinite values")
        geo = self._geometry(h, w, s, opts)
        ha, wa, grid, hgrid, sgrid = geo.ha, geo.wa, geo.grid, geo.hgrid, geo.sgrid
        lr_dev = lr.device
        lr_m = to_model(lr.to(self.device, torch.float32).clamp(0, 1))  # [-1, 1]
        lr_a = reflect_pad(lr_m, ha - h, wa - w)
        out_h, out_w = output_size(h, w, s)
        # the bicubic estimate on the whole image (not clamped, as in training)
        up = resize(lr_a, output_size(ha, wa, s))
        up_p = reflect_pad(up, *hgrid.pad)  # [3, Hp, Wp]
        lr_p = reflect_pad(lr_a, *grid.pad)  # [3, hp, wp]
        n_batches = math.ceil(len(hgrid) / opts.batch)
        total = opts.steps * n_batches
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if callback is not None:
                callback(done, total)

        was_training = self.model.training
        self.model.eval()
        try:
            run = self._sample_step if opts.merge == "step" else self._sample_end
            y = run(up_p, lr_p, grid, hgrid, sgrid, opts, tick)
        finally:
            self.model.train(was_training)
        if not bool(torch.isfinite(y).all()):
            raise SamplingError(self._non_finite("the sampled image"))
        return from_model(y[:, :out_h, :out_w]).to(lr_dev)

    def _cond_grid(self, grid: TileGrid, hgrid: TileGrid, sgrid: TileGrid) -> TileGrid:
        """The grid the family's condition is cut with."""
        return {"hr": hgrid, "lr": grid, "signal": sgrid}[self.family.cond_grid]

    def _halo(self) -> int:
        """LR pixels an LR-condition tile carries above and left of its own (the network's ``halo``: IDM under
        the release's resize rule reads the whole image's nearest-index vector, which may pick the pixel before
        a tile); 0 for every other network."""
        return int(getattr(self.model, "halo", 0)) if self.family.cond_grid == "lr" else 0

    def _cut_cond(self, cond: torch.Tensor, cgrid: TileGrid, idx: list[int]
                  ) -> tuple[torch.Tensor, list[tuple[int, int]] | None]:
        """Tiles ``idx`` of the whole condition ``cond`` [C', H', W'] and their origins: with a :meth:`_halo`, each
        tile extended by it above and left (reflection at the image's top/left border) and its (y, x) offset;
        else the plain cut and None."""
        halo = self._halo()
        if halo == 0:
            return split(cond, cgrid, idx), None
        padded = torch.nn.functional.pad(cond[None], (halo, 0, halo, 0), mode="reflect")[0]
        boxes = [cgrid.boxes()[k] for k in idx]
        tiles = torch.stack([padded[:, y:y + cgrid.tile_h + halo, x:x + cgrid.tile_w + halo] for y, x in boxes])
        return tiles, boxes

    def _sample_step(self, up_p: torch.Tensor, lr_p: torch.Tensor, grid: TileGrid, hgrid: TileGrid,
                     sgrid: TileGrid, opts: SamplingOptions, tick: Callable[[], None]) -> torch.Tensor:
        """Step-blend mode: the whole padded image is one sample (in the process's signal space, cut by ``sgrid``);
        predictions are merged over tiles at every step."""
        proc, fam = self.process, self.family
        weights = sgrid.weights(torch.float32)
        chunks = [list(range(i, min(i + opts.batch, len(sgrid)))) for i in range(0, len(sgrid), opts.batch)]
        gen = torch.Generator("cpu").manual_seed(int(opts.seed))
        up_b, lr_b = up_p.unsqueeze(0), lr_p.unsqueeze(0)
        anchor = proc.anchor(up_b)  # [1, C, Hs, Ws] in the signal space
        noise = torch.randn(tuple(anchor.shape), generator=gen, dtype=torch.float32).to(self.device)
        cond = fam.condition(lr_b, up_b, tuple(anchor.shape[-2:]))[0]
        cgrid = self._cond_grid(grid, hgrid, sgrid)

        def model_fn(y_t: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(y_t[0])
            for idx in chunks:
                cond_t, origin = self._cut_cond(cond, cgrid, idx)
                e = self._predict(split(y_t, sgrid, idx), cond_t, level[:1].expand(len(idx)), origin)
                accumulate(out, e, sgrid, idx, weights)  # feathered blend, weights sum to 1
                tick()
            return out.unsqueeze(0)

        x0_fn = self.back_projection(up_b, lr_b) if opts.back_project else None
        y0 = proc.sample(model_fn, noise, anchor, steps=opts.steps, sampler=opts.sampler, generator=gen,
                         start=opts.start, x0_fn=x0_fn, **opts.sampler_kwargs)
        return proc.from_signal(y0, up_b)[0]

    def _sample_end(self, up_p: torch.Tensor, lr_p: torch.Tensor, grid: TileGrid, hgrid: TileGrid,
                    sgrid: TileGrid, opts: SamplingOptions, tick: Callable[[], None]) -> torch.Tensor:
        """Merge-at-end mode (paper Sec. 6.2): tiles sampled independently, decoded, and blended once finished."""
        proc, fam = self.process, self.family
        weights = hgrid.weights(torch.float32)
        out = torch.zeros_like(up_p)
        for i in range(0, len(hgrid), opts.batch):
            idx = list(range(i, min(i + opts.batch, len(hgrid))))
            gens = [torch.Generator("cpu").manual_seed(tile_seed(opts.seed, k)) for k in idx]
            up_t, lr_t = split(up_p, hgrid, idx), split(lr_p, grid, idx)
            anchor = proc.anchor(up_t)
            noise = torch.stack([torch.randn(tuple(anchor.shape[1:]), generator=g, dtype=torch.float32)
                                 for g in gens]).to(self.device)
            cond_t = fam.condition(lr_t, up_t, tuple(anchor.shape[-2:]))
            origin = None
            if self._halo():  # an LR condition: the LR image's tiles with their halo
                cond_t, origin = self._cut_cond(lr_p, grid, idx)

            def model_fn(y_t: torch.Tensor, level: torch.Tensor, cond_t: torch.Tensor = cond_t,
                         origin: list[tuple[int, int]] | None = origin) -> torch.Tensor:
                e = self._predict(y_t, cond_t, level, origin)
                tick()
                return e

            x0_fn = self.back_projection(up_t, lr_t) if opts.back_project else None
            y0 = proc.sample(model_fn, noise, anchor, steps=opts.steps, sampler=opts.sampler,
                             generator=gens, start=opts.start, x0_fn=x0_fn, **opts.sampler_kwargs)
            accumulate(out, proc.from_signal(y0, up_t), hgrid, idx, weights)
        return out

    # ------------------------------------------------------------------------------------------------
    def upscale_image(self, image: LoadedImage, *, out_scale: float | None = None, **kwargs) -> LoadedImage:
        """Upscale a decoded file: the RGB by diffusion, the alpha (if any) by plain bicubic. A continuous-scale
        model samples at ``out_scale`` itself (ConfigError outside its trained range); a fixed-scale one samples
        at its native scale, and when ``out_scale`` differs both are then resized by bicubic to it (antialiased
        when shrinking). ``kwargs`` go to :meth:`upscale`. Keeps grey/bits/ICC; warnings are carried over."""
        h, w = image.size
        lo, hi = self.scales
        model_scale = float(out_scale) if out_scale is not None and lo < hi else float(self.scale)
        rgb = self.upscale(image.rgb, scale=model_scale, **kwargs)
        alpha = None
        if image.alpha is not None:
            alpha = resize(image.alpha, tuple(rgb.shape[-2:])).clamp(0, 1)
        if out_scale is not None and out_scale != model_scale:
            size = output_size(h, w, out_scale)
            rgb = resize(rgb, size).clamp(0, 1)
            alpha = None if alpha is None else resize(alpha, size).clamp(0, 1)
        return LoadedImage(rgb=rgb, alpha=alpha, grey=image.grey, bits=image.bits, icc_profile=image.icc_profile,
                           format=image.format, mode=image.mode, frames=image.frames, warnings=list(image.warnings))

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, out_scale: float | None = None,
                     overwrite: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     **kwargs) -> UpscaleResult:
        """Read ``src``, upscale it (:meth:`upscale_image`) and write ``dst`` atomically.

        ``dst``'s extension picks the format. An existing ``dst`` is refused before any work unless
        ``overwrite``; ``dst`` may never be ``src``. Raises InputError / OutputError / ConfigError, or
        SamplingError (nothing written) when the network produces NaN or inf values.
        """
        t0 = time.perf_counter()
        src_p, dst_p = Path(src), Path(dst)
        if out_scale is not None and not (out_scale > 0 and math.isfinite(out_scale)):
            raise ConfigError(f"scale must be a positive number, got {out_scale}")
        format_for_path(dst_p)
        if dst_p.exists() and src_p.exists() and os.path.samefile(src_p, dst_p):
            raise InputError(f"{dst_p}: the output would replace the input; choose another -o, --suffix or --ext")
        if dst_p.exists() and not overwrite:
            raise OutputExistsError(f"{dst_p}: exists (use --overwrite to replace it)")
        image = load_image(src_p, max_pixels=max_pixels)
        try:
            result = self.upscale_image(image, out_scale=out_scale, **kwargs)
        except InputError as err:  # name the file in messages about the image itself
            raise InputError(f"{src_p}: {err}") from None
        warns = list(result.warnings)
        warns += save_image(dst_p, result.rgb, alpha=result.alpha, grey=result.grey, bits=result.bits,
                            icc_profile=result.icc_profile, overwrite=overwrite)
        return UpscaleResult(input=src_p, output=dst_p, in_size=image.size, out_size=result.size,
                             native_scale=self.scale, scale=float(out_scale or self.scale),
                             seconds=time.perf_counter() - t0, warnings=warns)

    def describe_process(self) -> str:
        """A few words on the process for run headers, e.g. ``gaussian, residual target``."""
        target = getattr(self.info.diffusion, "target", None)
        return self.info.process + (f", {target} target" if target else "")

    def __repr__(self) -> str:
        return (f"Upscaler(family={self.info.family!r}, scale={self.scale}, process={self.describe_process()!r}, device={str(self.device)!r}, "
                f"precision={self.precision!r})")
