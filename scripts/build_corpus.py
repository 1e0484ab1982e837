#!/usr/bin/env python3
"""Build the offline photo corpus that the default x4 model is trained and validated on.

Training photos: Debian's ``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04`` and ``mate-backgrounds``
(``sudo apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds``), minus renders
and heavily-compressed files, each downscaled by an integer factor >= 2 (antialiased bicubic) to clear JPEG
artefacts, saved as PNG. Licences and authors are read from the packages' DEP-5 copyright files.

Validation photos (every choice: family, length, sampling): the scikit-image and scikit-learn wheel photos,
used as 256x256 centre crops (``val_crops/``).

Test photos (only the final numbers of a model card; never trained on, never used to choose anything): three
photos the training set excludes for their JPEG quality, downscaled 4-6x so that the 8x8 blocks average away
(lomiri ``Wine``, mate ``FreshFlower`` and ``Aqua``), matplotlib's ``grace_hopper.jpg`` (``pip install matplotlib``)
and scikit-image's ``hubble_deep_field.jpg``, used as centre crops of at most 384x384 (``test_crops/``).
``plasma-workspace-wallpapers`` is the project's untouched external test set and is not read here.

The split is fixed by the lists in this file and written to OUT_DIR/manifest.json and OUT_DIR/ATTRIBUTION.md.

Usage::

    python scripts/build_corpus.py OUT_DIR          # writes OUT_DIR/{train,val,val_crops,test,test_crops}/*.png,
                                                     # OUT_DIR/ATTRIBUTION.md and OUT_DIR/manifest.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamsr.images import load_rgb, resize

LOMIRI = Path("/usr/share/backgrounds")
MATE = Path("/usr/share/backgrounds/mate/nature")
COPYRIGHT = {
    "lomiri-wallpapers-16.04": Path("/usr/share/doc/lomiri-wallpapers-16.04/copyright"),
    "lomiri-wallpapers-20.04": Path("/usr/share/doc/lomiri-wallpapers-20.04/copyright"),
    "mate-backgrounds": Path("/usr/share/doc/mate-backgrounds/copyright"),
}
# Not photographs (renders, paintings, graphics) or too compressed (JPEG quality ~40 or heavy artefacts).
EXCLUDE = {
    "umang_by_Abhishek_Mudgal.jpg": "not a photo",
    "Fossa_by_Jasper_Roks.jpg": "not a photo",
    "Infinite-Sea_by_Aury88.jpg": "not a photo",
    "Painting-Colors_by__herobrine7gamer.jpg": "not a photo",
    "Wine_by_Jakkub_Mede.jpg": "JPEG quality about 40",
    "FreshFlower.jpg": "heavily compressed",
    "Aqua.jpg": "heavily compressed",
}
# Excluded from training for their JPEG quality, so held out as test photos (downscale factor each).
TEST_DEBIAN = {"Wine_by_Jakkub_Mede.jpg": 6, "FreshFlower.jpg": 4, "Aqua.jpg": 4}
TEST_WHEELS = [  # (wheel, relative path, downscale, licence, credit)
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 2, "public domain (US Navy photo; not stated in the wheel)",
     "US Navy (matplotlib sample data)"),
    ("skimage", "data/hubble_deep_field.jpg", 2, "public domain", "NASA/ESA (scikit-image)"),
]
VAL_CROP = 256   # centre crop of each validation photo
TEST_CROP = 384  # largest centre crop of each test photo (sides rounded down to multiples of 8)
TARGET_LONG_SIDE = 1600  # downscale factor = max(2, round(long side / this))

VALIDATION = [  # (wheel, relative path, licence, credit)
    ("skimage", "data/astronaut.png", "public domain", "NASA (scikit-image)"),
    ("skimage", "data/coffee.png", "CC0", "Rachel Michetti (scikit-image)"),
    ("skimage", "data/chelsea.png", "CC0", "Stefan van der Walt (scikit-image)"),
    ("skimage", "data/rocket.jpg", "public domain", "SpaceX (scikit-image)"),
    ("skimage", "data/motorcycle_left.png", "Middlebury 2014 stereo benchmark terms",
     "N. Nesic, P. Westling, X. Wang, Y. Kitajima, G. Krathwohl, D. Scharstein (scikit-image)"),
    ("sklearn", "datasets/images/china.jpg", "CC-BY 2.0", "danielbuechele on Flickr (scikit-learn)"),
    ("sklearn", "datasets/images/flower.jpg", "CC-BY 2.0", "vultilion on Flickr (scikit-learn)"),
]


def parse_dep5(path: Path) -> dict[str, tuple[str, str, str]]:
    """File base name -> (copyright holder(s), licence, folder in the source) from a DEP-5 copyright file."""
    out: dict[str, tuple[str, str, str]] = {}
    for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
        fields: dict[str, list[str]] = {}
        key = None
        for line in para.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                key = m.group(1)
                fields[key] = [m.group(2).strip()]
            elif key and line.startswith(" "):
                fields[key].append(line.strip())
        if "Files" in fields and "License" in fields:
            holder = "; ".join(x for x in fields.get("Copyright", []) if x)
            lic = fields["License"][0]
            for f in " ".join(fields["Files"]).split():
                out[os.path.basename(f)] = (holder, lic, os.path.dirname(f))
    return out


def wheel_dir(name: str) -> Path:
    mod = __import__(name)
    return Path(os.path.dirname(mod.__file__))


def save_png(x: torch.Tensor, path: Path) -> None:
    arr = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop of ``x`` (C, H, W) to at most ``size`` per side, sides rounded down to multiples of 8."""
    h, w = x.shape[-2:]
    ch, cw = min(size, h) // 8 * 8, min(size, w) // 8 * 8
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    missing = [p for p, f in COPYRIGHT.items() if not f.is_file()]
    if missing:
        print(f"error: install the Debian packages first: sudo apt-get install {' '.join(missing)}", file=sys.stderr)
        return 1
    licences: dict[str, tuple[str, str, str]] = {}
    for pkg, f in COPYRIGHT.items():
        for name, (holder, lic, folder) in parse_dep5(f).items():
            # both lomiri packages' copyright files list every release's files; the folder names the release
            licences[name] = (holder, lic, f"lomiri-wallpapers-{folder}" if pkg.startswith("lomiri") else pkg)

    (args.out / "train").mkdir(parents=True, exist_ok=True)
    for sub in ("val", "val_crops", "test", "test_crops"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    manifest: dict[str, list[dict]] = {"train": [], "val": [], "test": [], "excluded": []}
    # only the three packages' own files: /usr/share/backgrounds also holds other packages' wallpapers (renders)
    sources = [f for f in sorted(LOMIRI.glob("*.jpg")) + sorted(MATE.glob("*.jpg")) if f.name in licences]
    for src in sources:
        split = "test" if src.name in TEST_DEBIAN else "train"
        if src.name in EXCLUDE and split == "train":
            manifest["excluded"].append({"file": src.name, "reason": EXCLUDE[src.name]})
            continue
        holder, lic, pkg = licences.get(src.name, ("unknown", "unknown", "unknown"))
        img = load_rgb(src)
        h, w = img.shape[-2:]
        factor = TEST_DEBIAN.get(src.name) or max(2, round(max(h, w) / TARGET_LONG_SIDE))
        small = resize(img, (h // factor, w // factor))
        dst = args.out / split / (src.stem + ".png")
        save_png(small, dst)
        if split == "test":
            save_png(centre_crop(small, TEST_CROP), args.out / "test_crops" / dst.name)
        manifest[split].append({"file": dst.name, "source": str(src), "package": pkg, "copyright": holder,
                                "license": lic, "original_size": [w, h], "downscale": factor,
                                "size": [w // factor, h // factor]})
    for wheel, rel, lic, credit in VALIDATION:
        src = wheel_dir(wheel) / rel
        img = load_rgb(src)
        dst = args.out / "val" / (Path(rel).stem + ".png")
        save_png(img, dst)
        save_png(centre_crop(img, VAL_CROP), args.out / "val_crops" / dst.name)
        manifest["val"].append({"file": dst.name, "source": f"{wheel} wheel: {rel}", "license": lic,
                                "credit": credit, "size": [img.shape[-1], img.shape[-2]]})
    for wheel, rel, factor, lic, credit in TEST_WHEELS:
        src = wheel_dir(wheel) / rel
        img = load_rgb(src)
        h, w = img.shape[-2:]
        small = resize(img, (h // factor, w // factor))
        dst = args.out / "test" / (Path(rel).stem + ".png")
        save_png(small, dst)
        save_png(centre_crop(small, TEST_CROP), args.out / "test_crops" / dst.name)
        manifest["test"].append({"file": dst.name, "source": f"{wheel} wheel: {rel}", "license": lic,
                                 "credit": credit, "original_size": [w, h], "downscale": factor,
                                 "size": [w // factor, h // factor]})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    lines = ["# Training corpus attribution", "",
             "The dreamsr default x4 model was trained on these photographs (downscaled copies).", "",
             "| file | author / copyright | licence | package |", "|---|---|---|---|"]
    lines += [f"| {e['file']} | {e['copyright']} | {e['license']} | {e['package']} |" for e in manifest["train"]]
    lines += ["", "Validation photos (never trained on):", "", "| file | credit | licence |", "|---|---|---|"]
    lines += [f"| {e['file']} | {e['credit']} | {e['license']} |" for e in manifest["val"]]
    lines += ["", "Test photos (never trained on, never used to choose anything; only a card's final numbers):", "",
              "| file | author / credit | licence | source |", "|---|---|---|---|"]
    lines += [f"| {e['file']} | {e.get('copyright', e.get('credit'))} | {e['license']} | "
              f"{e.get('package', e['source'])} |" for e in manifest["test"]]
    (args.out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    print(f"{len(manifest['train'])} training, {len(manifest['val'])} validation and {len(manifest['test'])} test "
          f"photos -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
