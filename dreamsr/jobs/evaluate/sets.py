"""Evaluation sets: the named sets, where their files live, their protocol, and the listing of a set's items.

Sets (under ``data_dir`` or ``$DREAMSR_DATA``; :data:`SETS` lists the accepted folder names) and the protocols
are described in :mod:`dreamsr.jobs.evaluate`. File finding, the data root and the paired layout's folders are
:mod:`dreamsr.data`'s (the div2k and celebahq validation files are the ones its ``resolve_layout`` holds out of
training).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dreamsr.data import IMAGE_EXTENSIONS, data_root, find_images, image_key, paired_dirs, resolve_layout
from dreamsr.errors import ConfigError, DatasetError

__all__ = ["SETS", "SetSpec", "Protocol", "PROTOCOLS", "EvalItem", "resolve_set", "IMAGE_EXTENSIONS"]


@dataclass(frozen=True)
class Protocol:
    """A set's protocol: the HR size (None: the file's own size) and, for the record, how the paper sampled it
    (Sec. 6.2). ``dreamsr eval`` samples as ``dreamsr upscale`` does (the model's recommendation under the
    :class:`dreamsr.options.SamplingOptions` defaults) unless told otherwise; ``tile``/``overlap``/``merge`` here
    are what to give (``--tile``, ``--overlap``, ``--merge``) to sample the paper's way."""

    name: str
    tile: int  # the paper's LR tile side in px (0: whole image)
    overlap: int  # the paper's LR px shared by neighbouring tiles
    merge: Literal["step", "end"]  # the paper's merge mode ("end": tiles sampled independently)
    hr_size: int | None = None  # HR resized to hr_size x hr_size before LR synthesis (faces)
    description: str = ""


PROTOCOLS: dict[str, Protocol] = {
    "div2k": Protocol("div2k", 40, 5, "end", None, "HR files as they are; the paper sampled 40x40 LR tiles, 5 px "
                      "overlap, merged at the end (Sec. 6.2: --merge end)"),
    "faces": Protocol("faces", 0, 0, "end", 128, "HR resized to 128x128; the paper sampled the whole image in one "
                      "piece (Sec. 6.2: --tile 0 --merge end)"),
}


@dataclass(frozen=True)
class SetSpec:
    """A named evaluation set: where its HR files live, its default scale and protocol."""

    name: str
    dirs: tuple[str, ...]  # folders under the data root tried in order ("." = the root itself)
    scale: int  # default factor
    protocol: str
    layout: str  # what a user must put where (shown in errors)
    source: str  # where the official files are published


SETS: dict[str, SetSpec] = {s.name: s for s in (
    SetSpec("div2k-val", ("DIV2K/DIV2K_valid_HR",), 4, "div2k", "DIV2K/DIV2K_valid_HR/*.png (100 images)",
            "https://data.vision.ee.ethz.ch/cvl/DIV2K/ (DIV2K_valid_HR.zip)"),
    SetSpec("celebahq", ("celeba_hq",), 8, "faces", "celeba_hq/*.png|jpg or CelebA-HQ-img/*.jpg (last 100 sorted)",
            "https://github.com/switchablenorms/CelebAMask-HQ"),
    SetSpec("set5", ("Set5/HR", "Set5/GTmod12", "Set5/original", "benchmark/Set5/HR", "Set5"), 4, "div2k",
            "Set5/HR/*.png (or Set5/GTmod12, Set5/original, benchmark/Set5/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("set14", ("Set14/HR", "Set14/GTmod12", "Set14/original", "benchmark/Set14/HR", "Set14"), 4, "div2k",
            "Set14/HR/*.png (or Set14/GTmod12, Set14/original, benchmark/Set14/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("bsd100", ("BSD100/HR", "B100/HR", "BSDS100/HR", "benchmark/B100/HR", "BSD100", "B100", "BSDS100"), 4,
            "div2k", "BSD100/HR/*.png (or B100/HR, BSDS100/HR, benchmark/B100/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("urban100", ("Urban100/HR", "benchmark/Urban100/HR", "Urban100"), 4, "div2k",
            "Urban100/HR/*.png (or benchmark/Urban100/HR)",
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/DatasetPreparation.md"),
    SetSpec("cat", ("cat", "CAT", "cats"), 4, "div2k", "cat/*.png|jpg (the 100 validation images you chose)",
            "https://github.com/Ree1s/IDM (CAT validation split)"),
    SetSpec("lsun-bedroom", ("lsun/bedroom", "lsun_bedroom", "bedroom"), 4, "div2k",
            "lsun/bedroom/*.png|jpg (LSUN bedroom validation images)", "https://github.com/fyu/lsun"),
    SetSpec("lsun-tower", ("lsun/tower", "lsun_tower", "tower"), 4, "div2k",
            "lsun/tower/*.png|jpg (LSUN tower validation images)", "https://github.com/fyu/lsun"),
    SetSpec("folder", (".",), 4, "div2k", "any folder of HR images (searched recursively)", "your own photos"),
    SetSpec("paired", (".",), 4, "div2k", "HR/<name>.png and LR/<name>.png, LR exactly HR/scale",
            "your own pairs"),
)}


@dataclass(frozen=True)
class EvalItem:
    """One entry of a set: an HR file, its LR partner (``paired``) or an error found while listing."""

    name: str  # relative path without extension: unique within the set
    hr: Path | None
    lr: Path | None = None
    error: str | None = None  # e.g. "no LR partner": reported per file, never fatal


def _missing(spec: SetSpec, root: Path | None, detail: str = "") -> DatasetError:
    at = f"under {root}" if root is not None else "(no --data-dir given and DREAMSR_DATA is not set)"
    extra = f" {detail}" if detail else ""
    return DatasetError(f"set {spec.name!r} not found {at}.{extra} Expected layout: {spec.layout}. "
                        f"Files: {spec.source}.")


def resolve_set(name: str, data_dir: str | os.PathLike | None = None, *, limit: int | None = None) -> list[EvalItem]:
    """List the items of set ``name`` (sorted, the first ``limit``). Raises DatasetError naming the expected
    layout when the set is not there, ConfigError for an unknown name. Missing pairs become items with an error."""
    if name not in SETS:
        raise ConfigError(f"unknown set {name!r}; choose one of {', '.join(SETS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    spec = SETS[name]
    root = data_root(data_dir)
    if root is None or not root.is_dir():
        raise _missing(spec, root)

    items: list[EvalItem]
    if name in ("div2k-val", "celebahq"):
        # the same held-out files as training's validation split (one rule, in dreamsr.data)
        try:
            layout = resolve_layout("div2k" if name == "div2k-val" else "celebahq", root, split="val")
        except DatasetError as err:
            raise DatasetError(f"set {name!r}: {err}") from None
        base = os.path.commonpath([str(p.parent) for p in layout.hr])
        items = [EvalItem(image_key(p, Path(base)), p) for p in layout.hr]
    elif name == "paired":
        hr_dir, lr_dir = paired_dirs(root)
        if hr_dir is None or lr_dir is None:
            raise _missing(spec, root, "Need HR/ and LR/ sub-folders.")
        hr_by = {image_key(p, hr_dir): p for p in find_images(hr_dir)}
        lr_by = {image_key(p, lr_dir): p for p in find_images(lr_dir)}
        if not hr_by and not lr_by:
            raise _missing(spec, root, "HR/ and LR/ hold no images.")
        items = []
        for key in sorted(set(hr_by) | set(lr_by)):
            if key not in lr_by:
                items.append(EvalItem(key, hr_by[key], None, f"no LR partner {lr_dir / key}.* for {hr_by[key]}"))
            elif key not in hr_by:
                items.append(EvalItem(key, None, lr_by[key], f"no HR partner {hr_dir / key}.* for {lr_by[key]}"))
            else:
                items.append(EvalItem(key, hr_by[key], lr_by[key]))
    else:
        if name == "folder":
            folder: Path | None = root if find_images(root) else None
            recursive = True
        else:
            # the set's folder under the root, or the root itself being the set's folder (--data-dir .../Set5)
            cands = [root / d for d in spec.dirs]
            for d in spec.dirs:
                top, _, rest = d.partition("/")
                if root.name.lower() == top.lower():
                    cands.append(root / rest if rest else root)
            folder = next((c for c in cands if c.is_dir() and find_images(c, recursive=False)), None)
            recursive = False
        if folder is None:
            raise _missing(spec, root, "No images found.")
        items = [EvalItem(image_key(p, folder), p) for p in find_images(folder, recursive)]
    return items[:limit] if limit else items
