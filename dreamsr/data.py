"""Training data: data set layouts by name, random HR crops, LR synthesis and a deterministic loader.

Layouts (found under ``data_dir`` or the ``DREAMSR_DATA`` environment variable):

========== =====================================================================================
div2k      ``DIV2K/DIV2K_train_HR`` (train, 800) and ``DIV2K/DIV2K_valid_HR`` (val, 100)
flickr2k   ``Flickr2K/Flickr2K_HR`` (train only, 2650)
df2k       div2k train + flickr2k (train); div2k valid (val)
ffhq       ``ffhq/images1024x1024`` or ``ffhq/thumbnails128x128``: files 00000-59999 train, the rest val
celebahq   ``celeba_hq`` or ``CelebA-HQ-img``: the last 100 files (sorted) are val, the rest train
folder     ``data_dir`` itself: every image below it (recursively) is an HR image
paired     ``data_dir/HR`` and ``data_dir/LR`` with the same file names; LR is HR/scale (no synthesis)
========== =====================================================================================

Each named layout is also accepted one level up (``data_dir`` pointing directly at ``DIV2K``).

A training sample is built from a *global sample index* ``g`` alone (the step number times the global batch
plus the position in the batch), never from worker or process state: the image is the ``g mod N``-th entry
of a permutation drawn for epoch ``g // N``, and the crop, flip and rotation come from a generator seeded by
``(seed, g)``. So the data seen after ``--resume`` or on any DDP rank is exactly what an uninterrupted
single-process run sees.

Conventions: HR crops and the bicubic condition are float32 [3, P, P] in [0, 1]; the LR crop is
[3, P/s, P/s] in [0, 1], made by :func:`dreamsr.images.downsample` (antialiased bicubic), clamped and rounded
to 8 bits as a real LR file would be, then upsampled back by :func:`dreamsr.images.upsample` (SR3's condition).
Face layouts (ffhq, celebahq) resize the whole image to P x P instead of cropping and only flip horizontally.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from PIL import Image

from dreamsr.errors import ConfigError, DatasetError
from dreamsr.images import downsample, load_rgb, resize, upsample

__all__ = [
    "LAYOUTS", "IMAGE_EXTENSIONS", "DataConfig", "Layout", "find_images", "image_key", "paired_dirs",
    "resolve_layout", "data_root",
    "SRTrainDataset", "StepBatchSampler", "make_loader", "load_val_images", "mix_seed", "loader_throughput",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
LAYOUTS = ("div2k", "flickr2k", "df2k", "ffhq", "celebahq", "folder", "paired")
FACE_LAYOUTS = ("ffhq", "celebahq")
Split = Literal["train", "val"]

_WHERE = {
    "div2k": ("DIV2K/DIV2K_train_HR/*.png and DIV2K/DIV2K_valid_HR/*.png",
              "https://data.vision.ee.ethz.ch/cvl/DIV2K/ (DIV2K_train_HR.zip, DIV2K_valid_HR.zip)"),
    "flickr2k": ("Flickr2K/Flickr2K_HR/*.png",
                 "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar (published with EDSR)"),
    "df2k": ("DIV2K/DIV2K_train_HR, DIV2K/DIV2K_valid_HR and Flickr2K/Flickr2K_HR",
             "https://data.vision.ee.ethz.ch/cvl/DIV2K/ and https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar"),
    "ffhq": ("ffhq/images1024x1024/**/*.png (or ffhq/thumbnails128x128/**/*.png)",
             "https://github.com/NVlabs/ffhq-dataset (download_ffhq.py --images or --thumbs)"),
    "celebahq": ("celeba_hq/*.png|jpg (or CelebA-HQ-img/*.jpg from CelebAMask-HQ)",
                 "https://github.com/switchablenorms/CelebAMask-HQ (or build it with "
                 "https://github.com/tkarras/progressive_growing_of_gans)"),
    "folder": ("any folder of HR images (searched recursively)", "your own photos"),
    "paired": ("HR/<name>.png and LR/<name>.png with LR exactly HR/scale", "your own pairs"),
}


def mix_seed(*values: int) -> int:
    """Hash integers into a 63-bit seed (splitmix64 rounds), so nearby inputs give unrelated streams."""
    mask = (1 << 64) - 1
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & mask)) & mask
        h = (h + 0x9E3779B97F4A7C15) & mask
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def _generator(*values: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(mix_seed(*values))
    return g


# --- finding files ----------------------------------------------------------------------------------------

def find_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files (by extension, case-insensitive) below ``folder``, sorted by relative path."""
    root = Path(folder)
    it = root.rglob("*") if recursive else root.iterdir()
    files = [p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def image_key(path: Path, base: Path) -> str:
    """The name that pairs files across folders: ``path`` relative to ``base``, without extension, posix."""
    return path.relative_to(base).with_suffix("").as_posix()


def paired_dirs(root: Path) -> tuple[Path | None, Path | None]:
    """The HR (``HR``, ``hr``, ``GT`` or ``gt``) and LR (``LR`` or ``lr``) sub-folders of a paired layout."""
    hr_dir = next((root / d for d in ("HR", "hr", "GT", "gt") if (root / d).is_dir()), None)
    lr_dir = next((root / d for d in ("LR", "lr") if (root / d).is_dir()), None)
    return hr_dir, lr_dir


def data_root(data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir`` if given, else ``$DREAMSR_DATA``, else None."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DREAMSR_DATA")
    return Path(env).expanduser() if env else None


@dataclass(frozen=True)
class Layout:
    """A resolved data set: HR files (and LR files for ``paired``) of one split."""

    name: str
    split: str
    hr: tuple[Path, ...]
    lr: tuple[Path, ...] | None = None  # paired layout only, aligned with ``hr``

    def __len__(self) -> int:
        return len(self.hr)


def _missing(name: str, split: str, root: Path | None, detail: str = "") -> DatasetError:
    layout, where = _WHERE[name]
    at = f"under {root}" if root is not None else "(no --data-dir given and DREAMSR_DATA is not set)"
    extra = f" {detail}" if detail else ""
    return DatasetError(f"data set {name!r} ({split}) not found {at}.{extra} Expected layout: {layout}. "
                        f"Official files: {where}.")


def _first_dir(root: Path, candidates: Sequence[str]) -> Path | None:
    for c in candidates:
        p = root / c
        if p.is_dir() and find_images(p):
            return p
    return None


def _named_dir(root: Path, parent: str, sub: str) -> Path | None:
    # accept root/parent/sub, root/sub and root itself when it is the sub folder
    for cand in (root / parent / sub, root / sub):
        if cand.is_dir() and find_images(cand, recursive=False):
            return cand
    if root.name == sub and root.is_dir() and find_images(root, recursive=False):
        return root
    return None


def resolve_layout(name: str, data_dir: str | os.PathLike | None = None, split: Split = "train") -> Layout:
    """Find the files of data set ``name`` (one of :data:`LAYOUTS`) for ``split`` ("train" | "val").

    Raises DatasetError saying the expected layout and where the official files are published when they are
    not found, and ConfigError for an unknown name or a split the data set does not have.
    """
    if name not in LAYOUTS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(LAYOUTS)}")
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    root = data_root(data_dir)
    if root is None or not root.is_dir():
        raise _missing(name, split, root)

    if name == "folder":
        files = find_images(root)
        if not files:
            raise _missing(name, split, root, "The folder holds no images.")
        return Layout(name, split, tuple(files))

    if name == "paired":
        hr_dir, lr_dir = paired_dirs(root)
        if hr_dir is None or lr_dir is None:
            raise _missing(name, split, root, "Need HR/ and LR/ sub-folders.")
        lr_by_stem = {image_key(p, lr_dir): p for p in find_images(lr_dir)}
        hr_files, lr_files = [], []
        for p in find_images(hr_dir):
            key = image_key(p, hr_dir)
            if key not in lr_by_stem:
                raise DatasetError(f"paired data set: {p} has no LR partner {lr_dir / key}.*")
            hr_files.append(p)
            lr_files.append(lr_by_stem[key])
        if not hr_files:
            raise _missing(name, split, root, "HR/ holds no images.")
        return Layout(name, split, tuple(hr_files), tuple(lr_files))

    if name in ("div2k", "flickr2k", "df2k"):
        parts: list[Path] = []
        want = []
        if name in ("div2k", "df2k"):
            want.append(("DIV2K", "DIV2K_train_HR" if split == "train" else "DIV2K_valid_HR"))
        if name in ("flickr2k", "df2k") and split == "train":
            want.append(("Flickr2K", "Flickr2K_HR"))
        if name == "flickr2k" and split == "val":
            raise ConfigError("flickr2k has no validation split; use --val-dataset div2k or --val-dir")
        for parent, sub in want:
            d = _named_dir(root, parent, sub)
            if d is None:
                raise _missing(name, split, root, f"Missing {parent}/{sub}.")
            parts.extend(find_images(d, recursive=False))
        return Layout(name, split, tuple(parts))

    if name == "ffhq":
        d = _first_dir(root, ("ffhq/images1024x1024", "images1024x1024", "ffhq/thumbnails128x128",
                              "thumbnails128x128"))
        if d is None and root.name in ("images1024x1024", "thumbnails128x128") and find_images(root):
            d = root
        if d is None:
            raise _missing(name, split, root)
        files = find_images(d)

        def number(p: Path) -> int:
            digits = "".join(ch for ch in p.stem if ch.isdigit())
            return int(digits) if digits else -1

        files = [p for p in files if (number(p) < 60000) == (split == "train")]
        if not files:
            raise _missing(name, split, root, f"No {split} files (train = 00000-59999, val = 60000-69999).")
        return Layout(name, split, tuple(files))

    # celebahq
    d = _first_dir(root, ("celeba_hq", "CelebA-HQ-img", "celebahq", "CelebAMask-HQ/CelebA-HQ-img"))
    if d is None and root.name in ("celeba_hq", "CelebA-HQ-img", "celebahq") and find_images(root):
        d = root
    if d is None:
        raise _missing(name, split, root)
    files = find_images(d)
    files = files[:-100] if split == "train" else files[-100:]
    if not files:
        raise _missing(name, split, root, "Fewer than 101 images: no train split left after the 100 val images.")
    return Layout(name, split, tuple(files))


# --- data configuration -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataConfig:
    """How training samples are made. Everything that changes the samples is here (and in the run config)."""

    dataset: str = "folder"  # layout name, one of LAYOUTS
    data_dir: str | None = None  # root of the layout (None: $DREAMSR_DATA)
    scale: int = 4  # LR -> HR factor
    patch: int = 160  # HR crop size (LR crop is patch / scale)
    hr_downscale: int = 1  # shrink every HR image by this factor first (antialiased bicubic; clears JPEG artefacts)
    augment: bool = True  # random flips and 90-degree rotations (faces: horizontal flips only)
    mode: Literal["auto", "crop", "resize"] = "auto"  # crop random patches, or resize whole images (auto: faces)
    quantize_lr: bool = True  # round the synthetic LR to 8 bits, as an LR file would be
    cache_mb: int = 4096  # decoded-image cache budget (uint8) shared by all workers; 0 disables caching
    seed: int = 0  # data order, crops and flips derive from (seed, global sample index)

    def __post_init__(self) -> None:
        if self.dataset not in LAYOUTS:
            raise ConfigError(f"unknown data set {self.dataset!r}; choose one of {', '.join(LAYOUTS)}")
        if self.scale < 1:
            raise ConfigError(f"scale must be >= 1, got {self.scale}")
        if self.patch < self.scale or self.patch % self.scale:
            raise ConfigError(f"patch {self.patch} must be a positive multiple of scale {self.scale}")
        if self.hr_downscale < 1:
            raise ConfigError(f"hr_downscale must be >= 1, got {self.hr_downscale}")
        if self.mode not in ("auto", "crop", "resize"):
            raise ConfigError(f"mode must be auto, crop or resize, got {self.mode!r}")
        if self.cache_mb < 0:
            raise ConfigError("cache_mb must be >= 0")

    @property
    def resolved_mode(self) -> str:
        """'crop' or 'resize' (auto: resize for face layouts, crop otherwise)."""
        if self.mode != "auto":
            return self.mode
        return "resize" if self.dataset in FACE_LAYOUTS else "crop"


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, EXIF orientation applied; DatasetError if unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
                orient = 1
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from None
    return (w, h) if orient in (5, 6, 7, 8) else (h, w)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


class SRTrainDataset(torch.utils.data.Dataset):
    """Map-style data set indexed by the *global sample index* ``g`` (any non-negative int).

    ``dataset[g]`` returns ``(hr, lr, cond)``: HR crop [3, P, P], LR crop [3, P/s, P/s] and its bicubic
    upsample [3, P, P], float32 in [0, 1] (``cond`` is not clamped: bicubic overshoots slightly).
    The result depends only on the files, the config and ``g``.

    Decoded images are kept as uint8 in a cache: :meth:`preload` fills it in the parent process (workers
    forked afterwards share those pages); otherwise each worker caches what it decodes, within
    ``cache_mb / workers``.
    """

    def __init__(self, config: DataConfig, layout: Layout | None = None, workers: int = 0) -> None:
        self.config = config
        self.layout = layout if layout is not None else resolve_layout(config.dataset, config.data_dir, "train")
        p, k = config.patch, config.hr_downscale
        sizes = [_image_size(f) for f in self.layout.hr]
        self.sizes = [(h // k, w // k) for h, w in sizes]
        if config.resolved_mode == "crop":
            small = [str(f) for f, (h, w) in zip(self.layout.hr, self.sizes) if h < p or w < p]
            if small:
                raise DatasetError(f"{len(small)} image(s) are smaller than the {p}px patch"
                                   f"{f' after {k}x downscaling' if k > 1 else ''}, e.g. {small[0]}; "
                                   "use a smaller --patch or remove them")
        if self.layout.lr is not None and k != 1:
            raise ConfigError("hr_downscale cannot be used with the paired layout (the LR files are fixed)")
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._cache_bytes = 0
        self._budget = config.cache_mb * (1 << 20) // max(1, workers)
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    @property
    def cached_indices(self) -> list[int]:
        """Indices of the images held decoded in the cache (in the order they were cached)."""
        return list(self._cache)

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded image data held in the cache (uint8)."""
        return self._cache_bytes

    def __len__(self) -> int:
        """Number of distinct HR images (an epoch); indices beyond it are valid and start new epochs."""
        return len(self.layout)

    # -- decoding and caching --
    def decoded_bytes(self) -> int:
        """Bytes the whole data set takes decoded as uint8 (HR, plus LR for paired)."""
        total = sum(3 * h * w for h, w in self.sizes)
        if self.layout.lr is not None:
            s = self.config.scale
            total += sum(3 * (h // s) * (w // s) for h, w in self.sizes)
        return total

    def _decode(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        hr = load_rgb(self.layout.hr[i])
        k = self.config.hr_downscale
        if k > 1:
            h, w = hr.shape[-2:]
            hr = resize(hr, (h // k, w // k)).clamp_(0, 1)
        lr = None
        if self.layout.lr is not None:
            lr = load_rgb(self.layout.lr[i])
            s = self.config.scale
            if tuple(lr.shape[-2:]) != (hr.shape[-2] // s, hr.shape[-1] // s):
                raise DatasetError(f"{self.layout.lr[i]}: LR is {tuple(lr.shape[-2:])}, expected HR "
                                   f"{tuple(hr.shape[-2:])} / {s}")
            lr = _to_uint8(lr)
        return _to_uint8(hr), lr

    def image(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoded HR (and LR for paired) of file ``i`` as uint8 [3, H, W], through the cache."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        item = self._decode(i)
        size = item[0].numel() + (item[1].numel() if item[1] is not None else 0)
        if self._cache_bytes + size <= self._budget:
            self._cache[i] = item
            self._cache_bytes += size
        return item

    def preload(self) -> bool:
        """Decode images into the cache now, in file order, until ``cache_mb`` is used; True if all fitted.

        Call it before the DataLoader starts its workers: forked workers then share the decoded pages (the
        budget is spent here, so workers do not keep private copies; images that did not fit are decoded
        on demand).
        """
        self._budget = self.config.cache_mb * (1 << 20)
        for i in range(len(self)):
            h, w = self.sizes[i]
            if self._cache_bytes + 3 * h * w > self._budget:
                break
            self.image(i)
        fitted = len(self._cache) == len(self)
        self._budget = self._cache_bytes  # nothing more is cached, in this process or in forked workers
        return fitted

    # -- sampling --
    def file_index(self, g: int) -> int:
        """Which file global sample ``g`` uses: entry ``g mod N`` of the permutation of epoch ``g // N``."""
        n = len(self)
        epoch, pos = divmod(int(g), n)
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(n, generator=_generator(self.config.seed, 1, epoch))
            self._perm_epoch = epoch
        assert self._perm is not None
        return int(self._perm[pos])

    def __getitem__(self, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if g < 0:
            raise IndexError(g)
        c = self.config
        i = self.file_index(g)
        gen = _generator(c.seed, 2, int(g))
        hr8, lr8 = self.image(i)
        p, s = c.patch, c.scale
        if c.resolved_mode == "resize":
            hr = resize(hr8.float().div_(255.0), (p, p)).clamp_(0, 1)
            lr = None
        else:
            h, w = hr8.shape[-2:]
            if lr8 is not None:  # paired: crop on the LR grid so the two stay aligned
                top = int(torch.randint(0, (h - p) // s + 1, (1,), generator=gen)) * s
                left = int(torch.randint(0, (w - p) // s + 1, (1,), generator=gen)) * s
                lr = lr8[:, top // s:(top + p) // s, left // s:(left + p) // s].float().div_(255.0)
            else:
                top = int(torch.randint(0, h - p + 1, (1,), generator=gen))
                left = int(torch.randint(0, w - p + 1, (1,), generator=gen))
                lr = None
            hr = hr8[:, top:top + p, left:left + p].float().div_(255.0)
        flip = bool(torch.randint(0, 2, (1,), generator=gen))
        rot = int(torch.randint(0, 4, (1,), generator=gen))
        if c.augment:
            faces = c.dataset in FACE_LAYOUTS
            hr = _augment(hr, flip, 0 if faces else rot)
            if lr is not None:
                lr = _augment(lr, flip, 0 if faces else rot)
        if lr is None:
            lr = downsample(hr, s).clamp_(0, 1)  # antialiased bicubic: THE LR synthesis
            if c.quantize_lr:
                lr = lr.mul_(255.0).round_().div_(255.0)
        cond = upsample(lr, s)
        return hr.contiguous(), lr.contiguous(), cond.contiguous()


def _augment(x: torch.Tensor, flip: bool, rot: int) -> torch.Tensor:
    if flip:
        x = x.flip(-1)
    if rot:
        x = torch.rot90(x, rot, dims=(-2, -1))
    return x


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields, for each step in ``[start_step, end_step)``, the global sample indices of this rank's share.

    Step ``k`` uses ``g = k * global_batch + rank * (global_batch // world) + j`` for ``j < global_batch // world``,
    so the union over ranks is the single-process batch of step ``k`` (rank-sharded deterministic sampling).
    """

    def __init__(self, global_batch: int, start_step: int, end_step: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise ConfigError(f"batch size {global_batch} is not divisible by the {world} processes")
        self.global_batch, self.start, self.end, self.rank, self.world = global_batch, start_step, end_step, rank, world
        self.local = global_batch // world

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.start, self.end):
            base = k * self.global_batch + self.rank * self.local
            yield list(range(base, base + self.local))


def make_loader(dataset: SRTrainDataset, global_batch: int, start_step: int, end_step: int, *, workers: int = 2,
                rank: int = 0, world: int = 1, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader over steps ``[start_step, end_step)`` of this rank, in order, with ``workers`` processes."""
    sampler = StepBatchSampler(global_batch, start_step, end_step, rank, world)
    kwargs: dict = {}
    if workers > 0:
        kwargs.update(prefetch_factor=4, persistent_workers=False)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                                       **kwargs)


# --- validation images ------------------------------------------------------------------------------------

def load_val_images(files: Sequence[Path], count: int, crop: int, multiple: int) -> list[tuple[str, torch.Tensor]]:
    """Up to ``count`` validation HR images as (name, [3, H, W] in [0, 1]), centre-cropped.

    Files are taken evenly spread over ``files``. Each image is centre-cropped to at most ``crop`` x ``crop``
    (0: no limit) and down to a multiple of ``multiple`` (the scale times the UNet's size multiple).
    """
    if count < 1 or not files:
        return []
    step = max(1, len(files) // count)
    chosen = list(files)[::step][:count]
    out = []
    for f in chosen:
        img = load_rgb(f)
        h, w = img.shape[-2:]
        th = min(h, crop) if crop else h
        tw = min(w, crop) if crop else w
        th, tw = th - th % multiple, tw - tw % multiple
        if th < multiple or tw < multiple:
            raise DatasetError(f"validation image {f} is smaller than {multiple}px")
        top, left = (h - th) // 2, (w - tw) // 2
        out.append((Path(f).stem, img[:, top:top + th, left:left + tw].contiguous()))
    return out


def loader_throughput(dataset: SRTrainDataset, batch: int, batches: int = 20, workers: int = 2,
                      warmup: int = 2) -> float:
    """Images per second the loader delivers (after ``warmup`` batches), for comparison with the step rate."""
    loader = make_loader(dataset, batch, 0, batches + warmup, workers=workers)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for hr, _, _ in it:
        n += hr.shape[0]
    return n / max(time.perf_counter() - t0, 1e-9)

