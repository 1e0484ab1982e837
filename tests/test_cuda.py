"""Checks that need an NVIDIA GPU (marked ``cuda``; skipped without one). Run with ``python -m pytest -m cuda``
(``scripts/gpu_check.sh`` does, beside the GPU benchmark).

What the CPU tests cannot check: bf16/fp16 autocast sampling on CUDA stays close to fp32, CUDA fp32 matches the
CPU (every draw comes from CPU generators), the tile batch size does not change the image on CUDA (cuDNN may pick
other kernels per batch size), training steps under bf16 autocast and fp16 with loss scaling stay finite, and the
benchmark's CUDA paths (peak memory, GPU name, known peaks).

The models are randomly initialised; the thresholds were calibrated on the CPU (bf16 vs fp32 there: relative
error 0.019 after 10 DDIM steps of the small preset, batch 1 vs 3 in fp32: 1.4e-4 max abs) and leave room for
the GPU's kernels.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Iterator

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]


@pytest.fixture(autouse=True)
def _no_tf32() -> Iterator[None]:
    """fp32 references in true fp32 (cuDNN convolutions default to TF32 on Ampere and later)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(scope="module")
def small():
    from dreamsr.jobs.bench import load_model

    net, info, _ = load_model(preset="small", scale=4, seed=0)
    return net, info


def _upscale(small, device: str, precision: str, lr: torch.Tensor, **kw) -> torch.Tensor:
    from dreamsr.jobs.pipeline import Upscaler

    net, info = small
    up = Upscaler(copy.deepcopy(net), info, device=device, precision=precision)
    return up.upscale(lr.to(device), **kw).float().cpu()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("precision, tol", [("bf16", 0.05), ("fp16", 0.03)])
def test_half_precision_sampling_close_to_fp32(small, precision: str, tol: float) -> None:
    from dreamsr.jobs.bench import bench_image

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("bf16 not supported on this GPU")
    lr = bench_image(48, seed=0)  # 4 tiles of 40 with 5 px overlap
    ref = _upscale(small, "cuda", "fp32", lr, steps=10, seed=0)
    out = _upscale(small, "cuda", precision, lr, steps=10, seed=0)
    assert out.shape == ref.shape == (3, 192, 192)
    assert bool(torch.isfinite(out).all())
    assert _rel(out, ref) < tol
    assert float((out - ref).abs().mean()) < tol / 2


def test_cuda_fp32_matches_cpu(small) -> None:
    from dreamsr.jobs.bench import bench_image

    lr = bench_image(48, seed=1)
    cpu = _upscale(small, "cpu", "fp32", lr, steps=4, seed=3)
    gpu = _upscale(small, "cuda", "fp32", lr, steps=4, seed=3)
    assert _rel(gpu, cpu) < 1e-3


@pytest.mark.parametrize("merge", ["step", "end"])
def test_tile_batch_size_does_not_change_the_image(small, merge: str) -> None:
    from dreamsr.jobs.bench import bench_image

    lr = bench_image(80, seed=2)  # 3 x 3 = 9 tiles
    outs = [_upscale(small, "cuda", "fp32", lr, steps=4, seed=5, batch=b, merge=merge) for b in (1, 4, 9)]
    for o in outs[1:]:
        assert float((o - outs[0]).abs().max()) < 1e-3
        assert float((o - outs[0]).abs().mean()) < 1e-4


@pytest.mark.parametrize("merge", ["step", "end"])
def test_tile_batch_size_changes_bf16_images_only_within_bf16_rounding(small, merge: str) -> None:
    """In bf16, cuDNN picks kernels per batch size and their rounding differs; through the sampler a few pixels
    of a random-init model moved by up to 0.6 (H200, 2026-11-26), so no max bound holds. Each batch size is
    within 0.05 relative L2 of fp32 (test_half_precision_sampling_close_to_fp32), hence within 0.1 of each
    other by the triangle inequality. (Changed after that GPU run; not yet rerun on a GPU.)"""
    from dreamsr.jobs.bench import bench_image

    lr = bench_image(80, seed=2)
    ref = _upscale(small, "cuda", "fp32", lr, steps=4, seed=5, merge=merge)
    outs = [_upscale(small, "cuda", "bf16", lr, steps=4, seed=5, batch=b, merge=merge) for b in (1, 4, 9)]
    for o in outs:
        assert _rel(o, ref) < 0.05
    for o in outs[1:]:
        assert _rel(o, outs[0]) < 0.1


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("p", [math.inf, 1.0])
def test_training_steps_under_autocast_are_finite(tmp_path: Path, precision: str, p: float) -> None:
    from dreamsr.jobs.train import TrainConfig, train
    from tests._helpers import copy_photos

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("bf16 not supported on this GPU")
    data = copy_photos(tmp_path / "data", ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"))

    def run(prec: str) -> tuple[list[float], object]:
        losses: list[float] = []
        cfg = TrainConfig(dataset="folder", data_dir=str(data), family="sr3", preset="small", patch=32,
                          batch_size=4, steps=4, lr_warmup=0, lr_schedule="constant",
                          p=p, device="cuda", precision=prec, workers=0, val_every=0, save_every=0, log_every=1,
                          run_dir=str(tmp_path / f"run_{prec}"), seed=0)
        res = train(cfg, lambda ev: losses.append(ev.data["loss"]) if ev.kind == "step" else None)
        return losses, res

    losses, res = run(precision)
    ref_losses, _ = run("fp32")
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert all(bool(torch.isfinite(t).all()) for t in res.model.state_dict().values())
    assert all(bool(torch.isfinite(t).all()) for t in res.ema.state_dict().values())
    # same initial weights, data and noise: the first step's loss differs only by the arithmetic, and does
    # differ (autocast really ran; TF32 is off, so the fp32 reference is true fp32)
    assert losses[0] == pytest.approx(ref_losses[0], rel=0.02)
    assert abs(losses[0] - ref_losses[0]) > 1e-6 * abs(ref_losses[0])


def test_peak_memory_sees_a_cuda_allocation() -> None:
    from dreamsr.jobs.bench import PeakMemory

    dev = torch.device("cuda")
    with PeakMemory(dev) as mem:
        x = torch.empty(64 * 2 ** 20, dtype=torch.float32, device=dev)  # 256 MiB
        del x
    assert mem.kind == "cuda_max_allocated"
    assert mem.peak_bytes - mem.start_bytes >= 256 * 2 ** 20


def test_bench_report_on_cuda() -> None:
    from dreamsr.jobs.bench import PEAK_BF16_TFLOPS, BenchConfig, run_bench

    cfg = BenchConfig(device="cuda", precisions=("bf16",), lr_size=24, steps=2, tile=8, overlap=2, batches=(4,),
                      repeats=1, train_batch=2, train_patch=16, train_steps=2, train_warmup=1, train_rounds=1)
    r = run_bench(cfg, preset="tiny")
    name = torch.cuda.get_device_name()
    assert r["machine"]["gpu"] == name and r["machine"]["cuda"]
    assert r["memory"]["kind"] == "cuda_max_allocated"
    assert all(run["memory"]["peak_mib"] > 0 for run in r["sampling"]["runs"])
    assert r["training"]["precision"] == "bf16" and all(run["loss_finite"] for run in r["training"]["runs"])
    known = any(k in name for k in PEAK_BF16_TFLOPS)
    bf16 = [e for e in r["efficiency"]["sampling"] if e["precision"] == "bf16"]
    assert bf16 and all((e["fraction_of_peak"] is not None) == known for e in bf16)
    names = [t["name"] for t in r["targets"]]
    assert "sampling speed-up over the naive path" in names
