"""Data layouts, LR synthesis, determinism of the sample stream, and the loader's speed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreamsr.data import (DataConfig, SRTrainDataset, StepBatchSampler, load_val_images, loader_throughput,
                          make_loader, mix_seed, resolve_layout)
from dreamsr.errors import ConfigError, DatasetError
from dreamsr.images import downsample, load_rgb, upsample
from tests._helpers import copy_photos, photo_path

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_photos(tmp_path_factory.mktemp("photos"), ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"))


# --- layouts ------------------------------------------------------------------------------------------------

def test_div2k_flickr2k_df2k_layouts(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "DIV2K/DIV2K_train_HR" / f"{i + 1:04d}.png", 8, 8)
    _png(tmp_path / "DIV2K/DIV2K_valid_HR/0801.png", 8, 8)
    for i in range(2):
        _png(tmp_path / "Flickr2K/Flickr2K_HR" / f"{i + 1:06d}.png", 8, 8)
    assert [p.name for p in resolve_layout("div2k", tmp_path).hr] == ["0001.png", "0002.png", "0003.png"]
    assert [p.name for p in resolve_layout("div2k", tmp_path, "val").hr] == ["0801.png"]
    assert len(resolve_layout("flickr2k", tmp_path)) == 2
    assert len(resolve_layout("df2k", tmp_path)) == 5
    assert len(resolve_layout("df2k", tmp_path, "val")) == 1
    # pointing straight at the DIV2K folder works too
    assert len(resolve_layout("div2k", tmp_path / "DIV2K")) == 3


def test_missing_dataset_says_layout_and_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError) as err:
        resolve_layout("div2k", tmp_path)
    msg = str(err.value)
    assert "DIV2K/DIV2K_train_HR" in msg and "https://data.vision.ee.ethz.ch/cvl/DIV2K/" in msg
    with pytest.raises(DatasetError, match="github.com/NVlabs/ffhq-dataset"):
        resolve_layout("ffhq", tmp_path)
    with pytest.raises(DatasetError, match="Flickr2K.tar"):
        resolve_layout("flickr2k", tmp_path)
    monkeypatch.delenv("DREAMSR_DATA", raising=False)
    with pytest.raises(DatasetError, match="DREAMSR_DATA is not set"):
        resolve_layout("celebahq", None)
    with pytest.raises(ConfigError, match="unknown data set"):
        resolve_layout("imagenet", tmp_path)


def test_env_var_root_and_face_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in (0, 1, 59999, 60000, 69999):
        _png(tmp_path / "ffhq/images1024x1024" / f"{n // 1000 * 1000:05d}" / f"{n:05d}.png", 4, 4)
    for n in range(103):
        _png(tmp_path / "celeba_hq" / f"{n}.jpg".zfill(9), 4, 4)
    monkeypatch.setenv("DREAMSR_DATA", str(tmp_path))
    assert [p.stem for p in resolve_layout("ffhq", None).hr] == ["00000", "00001", "59999"]
    assert [p.stem for p in resolve_layout("ffhq", None, "val").hr] == ["60000", "69999"]
    assert len(resolve_layout("celebahq", None)) == 3
    assert len(resolve_layout("celebahq", None, "val")) == 100


def test_paired_layout_keeps_lr_aligned(tmp_path: Path) -> None:
    hr = load_rgb(photo_path("chelsea.png"))[:, :96, :128]
    lr = downsample(hr, 4).clamp(0, 1)
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR").mkdir()
    for name, t in (("HR/a.png", hr), ("LR/a.png", lr)):
        Image.fromarray(t.mul(255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / name)
    layout = resolve_layout("paired", tmp_path)
    assert layout.lr is not None and layout.lr[0].name == "a.png"
    ds = SRTrainDataset(DataConfig(dataset="paired", data_dir=str(tmp_path), patch=32, scale=4, augment=False))
    hr8, lr8 = load_rgb(tmp_path / "HR/a.png"), load_rgb(tmp_path / "LR/a.png")
    tops = set()
    for g in range(8):
        h, l, c = ds[g]
        # the HR crop sits on the LR grid and the LR crop is the LR file's window at the same place
        hits = [(t, u) for t in range(0, 96 - 32 + 1, 4) for u in range(0, 128 - 32 + 1, 4)
                if torch.equal(hr8[:, t:t + 32, u:u + 32], h)]
        assert len(hits) == 1
        t, u = hits[0]
        tops.add(hits[0])
        assert torch.equal(lr8[:, t // 4:t // 4 + 8, u // 4:u // 4 + 8], l)
        torch.testing.assert_close(c, upsample(l, 4), rtol=0, atol=0)
    assert len(tops) > 3  # crops move
    (tmp_path / "LR/a.png").unlink()
    with pytest.raises(DatasetError, match="no LR partner"):
        resolve_layout("paired", tmp_path)


# --- samples ------------------------------------------------------------------------------------------------

def test_sample_is_crop_of_source_and_lr_is_bicubic(photos: Path) -> None:
    cfg = DataConfig(dataset="folder", data_dir=str(photos), patch=48, scale=4, augment=False, seed=3)
    ds = SRTrainDataset(cfg)
    hr, lr, cond = ds[7]
    assert hr.shape == (3, 48, 48) and lr.shape == (3, 12, 12) and cond.shape == (3, 48, 48)
    src = load_rgb(ds.layout.hr[ds.file_index(7)])
    # the crop is an exact window of the source image: find its first row, then compare the whole window
    hits = []
    for t in range(src.shape[1] - 47):
        row = src[:, t].unfold(1, 48, 1)  # [3, W-47, 48]
        for u in torch.nonzero((row == hr[:, 0, None, :]).all(dim=2).all(dim=0)).flatten().tolist():
            if torch.equal(src[:, t:t + 48, u:u + 48], hr):
                hits.append((t, u))
    assert len(hits) == 1
    # LR = antialiased bicubic downsample, clamped and rounded to 8 bits; cond = its bicubic upsample
    want = downsample(hr, 4).clamp(0, 1).mul(255).round().div(255)
    torch.testing.assert_close(lr, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(cond, upsample(lr, 4), rtol=0, atol=0)
    assert abs(lr.mul(255) - lr.mul(255).round()).max() < 1e-4


def test_augmentations_cover_the_eight_symmetries(photos: Path) -> None:
    cfg = DataConfig(dataset="folder", data_dir=str(photos), patch=32, seed=0)
    aug = SRTrainDataset(cfg)
    plain = SRTrainDataset(DataConfig(dataset="folder", data_dir=str(photos), patch=32, seed=0, augment=False))
    seen = set()
    for g in range(64):
        a, p = aug[g][0], plain[g][0]
        for flip in (False, True):
            for rot in range(4):
                t = p.flip(-1) if flip else p
                t = torch.rot90(t, rot, dims=(-2, -1))
                if torch.equal(t, a):
                    seen.add((flip, rot))
                    break
            else:
                continue
            break
        else:
            raise AssertionError(f"sample {g} is not a flip/rotation of the plain crop")
    assert len(seen) == 8


def test_sample_stream_is_a_pure_function_of_seed_and_index(photos: Path) -> None:
    cfg = DataConfig(dataset="folder", data_dir=str(photos), patch=32, seed=5)
    a, b = SRTrainDataset(cfg), SRTrainDataset(cfg)
    for g in (0, 1, 17, 3, 1000, 17):  # any order, repeated, far ahead
        for x, y in zip(a[g], b[g]):
            assert torch.equal(x, y)
    other = SRTrainDataset(DataConfig(dataset="folder", data_dir=str(photos), patch=32, seed=6))
    assert not torch.equal(a[0][0], other[0][0])
    # every epoch visits every image once, in its own order (pinned for seed 5)
    assert [a.file_index(g) for g in range(12)] == [0, 3, 1, 2, 1, 2, 0, 3, 2, 1, 0, 3]
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_loader_workers_and_ranks_give_the_single_process_batches(photos: Path) -> None:
    cfg = DataConfig(dataset="folder", data_dir=str(photos), patch=32, seed=1)
    ds = SRTrainDataset(cfg, workers=2)
    ds.preload()
    one = [b[0] for b in make_loader(ds, 6, 3, 7, workers=0)]
    two = [b[0] for b in make_loader(ds, 6, 3, 7, workers=2)]
    assert len(one) == 4 and all(torch.equal(x, y) for x, y in zip(one, two))
    r0 = [b[0] for b in make_loader(ds, 6, 3, 7, workers=0, rank=0, world=2)]
    r1 = [b[0] for b in make_loader(ds, 6, 3, 7, workers=0, rank=1, world=2)]
    for full, a, b in zip(one, r0, r1):
        assert torch.equal(torch.cat([a, b]), full)
    assert list(StepBatchSampler(4, 2, 4, rank=1, world=2)) == [[10, 11], [14, 15]]
    with pytest.raises(ConfigError, match="not divisible"):
        StepBatchSampler(5, 0, 1, world=2)


def test_cache_preload_and_budget(photos: Path) -> None:
    cfg = DataConfig(dataset="folder", data_dir=str(photos), patch=32, cache_mb=64)
    ds = SRTrainDataset(cfg)
    # uint8 RGB of astronaut 512x512, coffee 400x600, chelsea 300x451, rocket 427x640
    assert ds.decoded_bytes() == 3 * (512 * 512 + 400 * 600 + 300 * 451 + 427 * 640) and ds.preload()
    assert len(ds.cached_indices) == 4
    small = SRTrainDataset(DataConfig(dataset="folder", data_dir=str(photos), patch=32, cache_mb=1))
    assert not small.preload()  # 4 photos take 2.8 MB decoded: astronaut (786 kB) fits, chelsea does not
    assert small.cached_indices == [0] and small.cached_bytes == 3 * 512 * 512
    for g in range(8):
        small[g]
    assert small.cached_indices == [0]  # the rest is decoded on demand, never cached past the budget
    lazy = SRTrainDataset(DataConfig(dataset="folder", data_dir=str(photos), patch=32, cache_mb=1), workers=1)
    for g in range(8):
        lazy[g]
    assert lazy.cached_bytes <= 1 << 20 and len(lazy.cached_indices) >= 1


def test_hr_downscale_and_too_small_images(tmp_path: Path, photos: Path) -> None:
    ds = SRTrainDataset(DataConfig(dataset="folder", data_dir=str(photos), patch=32, hr_downscale=2))
    assert ds.sizes[0] == (256, 256)  # astronaut 512 -> 256
    assert ds.image(0)[0].shape == (3, 256, 256)
    _png(tmp_path / "x.png", 40, 100)
    with pytest.raises(DatasetError, match="smaller than the 48px patch"):
        SRTrainDataset(DataConfig(dataset="folder", data_dir=str(tmp_path), patch=48))
    with pytest.raises(ConfigError, match="multiple of scale"):
        DataConfig(patch=50, scale=4)


def test_face_layouts_resize_whole_images_and_only_flip(tmp_path: Path) -> None:
    img = load_rgb(photo_path("astronaut.png"))
    (tmp_path / "celeba_hq").mkdir()
    for n in range(100 + 4):  # 4 train images + the 100 val images
        shutil.copy(photo_path("astronaut.png"), tmp_path / "celeba_hq" / f"{n:05d}.png")
    ds = SRTrainDataset(DataConfig(dataset="celebahq", data_dir=str(tmp_path), patch=128, scale=8))
    want = torch.nn.functional.interpolate(img[None], size=(128, 128), mode="bicubic", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)
    for g in range(6):
        hr, lr, _ = ds[g]
        assert lr.shape == (3, 16, 16)
        assert torch.allclose(hr, want, atol=1e-6) or torch.allclose(hr, want.flip(-1), atol=1e-6)


def test_val_images_are_centre_crops(photos: Path) -> None:
    files = sorted(photos.iterdir())
    got = load_val_images(files, 2, 100, 16)
    assert [n for n, _ in got] == ["astronaut", "coffee"]  # evenly spread over the sorted files
    full = load_rgb(files[0])
    assert got[0][1].shape == (3, 96, 96)
    torch.testing.assert_close(got[0][1], full[:, 208:304, 208:304])


# --- loader throughput ----------------------------------------------------------------------------------------

def test_loader_throughput_counts_images_per_second_after_the_warmup(photos: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock that advances 10 ms per sample loaded, 5 timed batches of 4 take 0.2 s: 100 images/s exactly.
    The 2 warm-up batches are loaded but neither counted nor timed (they would give 140 images in 0.28 s)."""
    import types

    import dreamsr.data

    clock = [0.0]
    loaded: list[int] = []

    class Timed(SRTrainDataset):
        def __getitem__(self, index: int):
            clock[0] += 0.01
            loaded.append(index)
            return super().__getitem__(index)

    monkeypatch.setattr(dreamsr.data, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    ds = Timed(DataConfig(dataset="folder", data_dir=str(photos), patch=32, seed=0), workers=0)
    assert loader_throughput(ds, 4, batches=5, workers=0, warmup=2) == pytest.approx(100.0, rel=1e-9)
    assert loaded == list(range(7 * 4))  # the steps' samples, in order: 2 warm-up batches and 5 timed ones
