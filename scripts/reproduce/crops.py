"""The held-out HR crops every evaluation uses: taken round-robin over the validation photos, nearest the centre
first, and written once as PNG files under OUT/data/eval_crops."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dreamsr.files import load_json

from .common import write_json

__all__ = ["crop_positions", "held_out_crops", "prepare_eval_crops"]


def crop_positions(h: int, w: int, crop: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping crop x crop cells of an h x w image, nearest the centre first."""
    rows, cols = h // crop, w // crop
    oy, ox = (h - rows * crop) // 2, (w - cols * crop) // 2
    cells = [(oy + r * crop, ox + c * crop) for r in range(rows) for c in range(cols)]
    cy, cx = (h - crop) / 2, (w - crop) / 2
    return sorted(cells, key=lambda t: ((t[0] - cy) ** 2 + (t[1] - cx) ** 2, t))


def held_out_crops(val_dir: Path, count: int, crop: int) -> list[tuple[str, torch.Tensor]]:
    """``count`` HR crops [3, crop, crop] in [0, 1] of the held-out photos, taken round-robin over the photos
    (each photo's centre crop first, then its cells nearest the centre), named ``NNN_<photo>_<y>_<x>``."""
    from dreamsr.data import find_images
    from dreamsr.images import load_rgb

    files = find_images(val_dir)
    if not files:
        raise SystemExit(f"no held-out photos in {val_dir}; build the corpus with scripts/build_corpus.py")
    photos = [(f.stem, load_rgb(f)) for f in files]
    queues = [[(name, img, pos) for pos in crop_positions(img.shape[1], img.shape[2], crop)] for name, img in photos]
    out: list[tuple[str, torch.Tensor]] = []
    depth = 0
    while len(out) < count and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < count:
                name, img, (y, x) = q[depth]
                out.append((f"{len(out):03d}_{name}_{y}_{x}", img[:, y:y + crop, x:x + crop].contiguous()))
        depth += 1
    if len(out) < count:
        raise SystemExit(f"{val_dir} yields only {len(out)} crops of {crop} px, {count} asked for")
    return out


def prepare_eval_crops(val_dir: Path, dest: Path, count: int, crop: int) -> Path:
    """Write the held-out HR crops as PNG files into ``dest`` (once; a manifest says what is there)."""
    from dreamsr.images import save_image

    manifest = {"val_dir": str(Path(val_dir).resolve()), "count": count, "crop": crop}
    mpath = dest / "manifest.json"
    if mpath.is_file() and load_json(mpath).get("params") == manifest:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = []
    for name, img in held_out_crops(val_dir, count, crop):
        save_image(dest / f"{name}.png", img)
        names.append(name)
    write_json(mpath, {"params": manifest, "files": names})
    return dest
