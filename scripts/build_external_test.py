#!/usr/bin/env python3
"""Build the untouched external test set from Debian's ``plasma-workspace-wallpapers`` (final numbers only).

The project reserves this package as its external test set: nothing is trained, validated or selected on it. This
script reads only the photographs in it (chosen by eye from thumbnails before any model was run on them; renders,
paintings and the kite composite are left out), takes each one's largest file (all are 2560x1600 JPEGs), shrinks it
4x with antialiased bicubic (``dreamsr.images.resize``, as ``build_corpus.py`` does) to a 640x400 HR image that the
JPEG blocks have averaged out of, and writes it as PNG. ``dreamsr eval --set folder`` then makes the 160x100 LR.

Usage::

    sudo apt-get install plasma-workspace-wallpapers
    python scripts/build_external_test.py OUT_DIR     # OUT_DIR/*.png and OUT_DIR/manifest.json

Licence: the package's DEP-5 file gives ``Files: *`` GPL-2+ (KDE Visual Design Group); each wallpaper's
``metadata.json`` names its author, which the manifest records. No image from this set ships with dreamsr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from build_corpus import save_png  # scripts/ is on sys.path when this file runs as a script
from dreamsr.images import load_rgb, resize

ROOT = Path("/usr/share/wallpapers")
PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
          "OneStandsOut", "Path", "summer_1am")
FACTOR = 4


def _largest(folder: Path) -> Path:
    def area(p: Path) -> int:
        m = re.fullmatch(r"(\d+)x(\d+)", p.stem)
        return int(m[1]) * int(m[2]) if m else 0
    files = [p for p in (folder / "contents" / "images").iterdir() if area(p) > 0]
    if not files:
        raise FileNotFoundError(f"no WxH image in {folder}/contents/images")
    return max(files, key=area)


def _author(folder: Path) -> str:
    try:
        meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        return ", ".join(a.get("Name", "?") for a in meta["KPlugin"]["Authors"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    missing = [n for n in PHOTOS if not (ROOT / n).is_dir()]
    if missing:
        print(f"error: {ROOT} lacks {', '.join(missing)}: sudo apt-get install plasma-workspace-wallpapers",
              file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name in PHOTOS:
        src = _largest(ROOT / name)
        img = load_rgb(src)
        h, w = img.shape[-2:]
        small = resize(img, (h // FACTOR, w // FACTOR))
        save_png(small, args.out / f"{name}.png")
        manifest.append({"file": f"{name}.png", "source": str(src), "author": _author(ROOT / name),
                         "license": "GPL-2+ (plasma-workspace-wallpapers DEP-5)", "original_size": [w, h],
                         "downscale": FACTOR, "size": [w // FACTOR, h // FACTOR]})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"{len(manifest)} photos in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
