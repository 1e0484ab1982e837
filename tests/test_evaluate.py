"""Evaluation tests: end-to-end reports on real photos, per-file errors, LPIPS/FID plumbing, the pipeline path."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamsr import metrics as M
from dreamsr.errors import ConfigError, DatasetError
from dreamsr.jobs.evaluate import (EvalConfig, compare, compare_markdown, evaluate, evaluate_cached,
                              finished_summary, resolve_set)
from dreamsr.images import downsample, load_rgb, upsample
from tests._helpers import load_photo, write_tiny_checkpoint

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "china.jpg", "flower.jpg")


def _save(x: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path


def _photo_folder(root: Path, names=PHOTOS, size: tuple[int, int] = (70, 90)) -> Path:
    """Centre crops (h, w) of real photos (not multiples of 4: exercises the GTmod crop), saved as PNG."""
    for n in names:
        img = load_photo(n)
        h, w = img.shape[-2:]
        t, l = (h - size[0]) // 2, (w - size[1]) // 2
        _save(img[:, t:t + size[0], l:l + size[1]], root / (Path(n).stem + ".png"))
    return root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _q(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().div(255)


def _entry(summary: dict, metric: str, convention: str = "rgb") -> dict:
    return next(e for e in summary["metrics"] if e["metric"] == metric and e.get("convention") == convention)


# ---------------------------------------------------------------------------------------------- bicubic end to end
def test_bicubic_eval_on_real_photos_writes_every_report_file(tmp_path: Path) -> None:
    data = _photo_folder(tmp_path / "photos")
    cfg = EvalConfig(set="folder", data_dir=str(data), model="bicubic", scale=4, grids=2, command="dreamsr eval x")
    events = []
    rep = evaluate(cfg, tmp_path / "out", progress=events.append)
    out = tmp_path / "out"
    for name in ("metrics.csv", "summary.json", "summary.md"):
        assert (out / name).is_file()
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["astronaut.png", "chelsea.png"]
    with Image.open(out / "grids" / "astronaut.png") as g:  # 4 panels of 88 px + padding, full row + zoom row
        assert g.size[0] == 4 * 88 + 5 * 4 and g.size[1] > 68 + 64

    rows = _read_csv(out / "metrics.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["image"] for r in rows] == ["astronaut", "chelsea", "china", "coffee", "flower"]
    assert summary["count"] == 5 and summary["n_errors"] == 0 and summary["scale"] == 4
    assert summary["crop_border"] == 4 and summary["seed"] == 0 and summary["command"] == "dreamsr eval x"
    assert summary["model"]["name"] == "bicubic" and summary["dreamsr_version"]
    assert "BT.601" in summary["conventions"]["y"] and "crop_border = 4" in summary["conventions"]["y"]
    # CSV rows match the summary means (and stds over images)
    for col, metric, conv in [("psnr_rgb", "psnr", "rgb"), ("psnr_y", "psnr", "y"), ("ssim_rgb", "ssim", "rgb"),
                              ("ssim_y", "ssim", "y"), ("consistency", "consistency", "rgb")]:
        vals = np.array([float(r[col]) for r in rows])
        e = _entry(summary, metric, conv)
        assert e["mean"] == pytest.approx(vals.mean(), rel=1e-12) and e["count"] == 5
        assert e["std"] == pytest.approx(vals.std(ddof=1), rel=1e-9)
    # each number is the metric of (bicubic(LR), HR) computed here independently: GTmod crop to 68x88,
    # LR by antialiased bicubic rounded to 8 bits
    hr = load_rgb(data / "coffee.png")[:, :68, :88]
    lr = _q(downsample(hr, 4))
    sr = _q(upsample(lr, 4))
    row = next(r for r in rows if r["image"] == "coffee")
    assert row["lr_size"] == "22x17" and row["hr_size"] == "88x68"
    assert float(row["psnr_rgb"]) == pytest.approx(M.psnr(sr, hr), abs=1e-9)
    assert float(row["psnr_y"]) == pytest.approx(M.psnr(sr, hr, crop_border=4, y_channel=True), abs=1e-9)
    assert float(row["ssim_y"]) == pytest.approx(M.ssim(sr, hr, crop_border=4, y_channel=True), abs=1e-9)
    assert float(row["consistency"]) == pytest.approx(M.consistency(sr, lr), rel=1e-9)
    # the Markdown states the conventions and carries the same means
    md = (out / "summary.md").read_text()
    assert "BT.601" in md and "crop_border = 4" in md and f"{_entry(summary, 'psnr', 'y')['mean']:.2f}" in md
    # progress: one "done" per image, counting up to the total
    done = [e.done for e in events if e.stage == "done"]
    assert done == [1, 2, 3, 4, 5] and all(e.total == 5 for e in events)
    assert rep.errors == []


def test_nearest_is_worse_than_bicubic_and_the_y_crop_border_is_honoured(tmp_path: Path) -> None:
    data = _photo_folder(tmp_path / "photos", names=PHOTOS[:2])
    bic = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(data), scale=4, grids=0, crop_border=2),
                   tmp_path / "b")
    near = evaluate(EvalConfig(set="folder", data_dir=str(data), model="nearest", scale=4, grids=0), tmp_path / "n")
    assert _entry(near.summary, "psnr", "rgb")["mean"] < _entry(bic.summary, "psnr", "rgb")["mean"]
    assert bic.summary["crop_border"] == 2 and _entry(bic.summary, "psnr", "y")["crop_border"] == 2
    hr = load_rgb(data / "astronaut.png")[:, :68, :88]
    sr = _q(upsample(_q(downsample(hr, 4)), 4))
    got = float(_read_csv(tmp_path / "b" / "metrics.csv")[0]["psnr_y"])
    assert got == pytest.approx(M.psnr(sr, hr, crop_border=2, y_channel=True), abs=1e-9)


def test_identical_images_are_reported_as_inf(tmp_path: Path) -> None:
    # a flat image survives bicubic down/up exactly: PSNR inf (reported as such), SSIM 1
    _save(torch.full((3, 32, 32), 100 / 255), tmp_path / "flat" / "grey.png")
    rep = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(tmp_path / "flat"), scale=4, grids=0),
                   tmp_path / "o")
    row = _read_csv(tmp_path / "o" / "metrics.csv")[0]
    assert row["psnr_rgb"] == "inf" and float(row["ssim_rgb"]) == pytest.approx(1.0)
    data = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert _entry(data, "psnr", "rgb")["mean"] == "inf"
    assert "| PSNR (RGB) | inf |" in (tmp_path / "o" / "summary.md").read_text()
    assert _entry(rep.summary, "psnr", "rgb")["mean"] == math.inf


# ---------------------------------------------------------------------------------------------- bad input
def test_paired_set_with_bad_files_reports_each_and_counts_them(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    hr = load_photo("astronaut.png")[:, 200:264, 200:264]
    _save(hr, root / "HR" / "good.png")
    _save(_q(downsample(hr, 4)), root / "LR" / "good.png")
    _save(hr, root / "HR" / "no_lr.png")  # missing LR partner
    _save(_q(downsample(hr, 4)), root / "LR" / "no_hr.png")  # missing HR partner
    _save(hr, root / "HR" / "wrong_size.png")
    _save(_q(downsample(hr, 2)), root / "LR" / "wrong_size.png")  # x2 LR in a x4 evaluation
    (root / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _save(_q(downsample(hr, 4)), root / "LR" / "broken.png")

    rep = evaluate(EvalConfig(model="bicubic", set="paired", data_dir=str(root), scale=4, grids=1), tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["images"] == 5 and s["count"] == 1 and s["n_errors"] == 4
    errs = {e["image"]: e["error"] for e in s["errors"]}
    assert "no LR partner" in errs["no_lr"] and "no HR partner" in errs["no_hr"]
    assert "wrong_size.png" in errs["wrong_size"] and "32x32" in errs["wrong_size"] and "64x64" in errs["wrong_size"]
    assert "broken.png" in errs["broken"] and "cannot read" in errs["broken"]
    rows = _read_csv(tmp_path / "out" / "metrics.csv")
    assert sorted(r["image"] for r in rows if r["error"]) == ["broken", "no_hr", "no_lr", "wrong_size"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 1 and _entry(s, "psnr", "rgb")["mean"] == pytest.approx(float(good[0]["psnr_rgb"]))
    assert _entry(s, "psnr", "rgb")["count"] == 1
    assert any("4 of 5" in w for w in s["warnings"])
    assert "## Errors" in (tmp_path / "out" / "summary.md").read_text()
    assert len(rep.errors) == 4


def test_missing_sets_name_the_expected_layout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DREAMSR_DATA", raising=False)
    with pytest.raises(DatasetError, match="DREAMSR_DATA is not set"):
        resolve_set("set5")
    with pytest.raises(DatasetError, match=r"Set5/HR/\*\.png"):
        resolve_set("set5", tmp_path)
    with pytest.raises(DatasetError, match="Need HR/ and LR/"):
        resolve_set("paired", tmp_path)
    with pytest.raises(ConfigError, match="unknown set"):
        resolve_set("set6", tmp_path)
    # a named benchmark layout, found by name under the root, via DREAMSR_DATA, with --limit
    _photo_folder(tmp_path / "Set14" / "HR", names=PHOTOS[:3], size=(24, 24))
    monkeypatch.setenv("DREAMSR_DATA", str(tmp_path))
    assert [i.name for i in resolve_set("set14", limit=2)] == ["astronaut", "chelsea"]
    # --data-dir pointing at the set itself; BasicSR's GTmod12 beside LRbicx4 takes only the HR files
    _photo_folder(tmp_path / "Set5" / "GTmod12", names=PHOTOS[:2], size=(24, 24))
    _photo_folder(tmp_path / "Set5" / "LRbicx4", names=PHOTOS[2:4], size=(6, 6))
    items = resolve_set("set5", tmp_path / "Set5")
    assert [i.hr.parent.name for i in items] == ["GTmod12", "GTmod12"]


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:1], size=(24, 24))
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate(EvalConfig(set="folder", data_dir=str(data), metrics=("psnr", "niqe")), tmp_path / "o")
    with pytest.raises(ConfigError, match="samples"):
        evaluate(EvalConfig(set="folder", data_dir=str(data), samples=0), tmp_path / "o")
    with pytest.raises(ConfigError, match="ensemble must be 1, 2, 4 or 8"):
        evaluate(EvalConfig(set="folder", data_dir=str(data), ensemble=3), tmp_path / "o")


def test_faces_protocol_resizes_to_128_and_evaluates_16_to_128(tmp_path: Path) -> None:
    # celebahq: the last 100 sorted files are the held-out split (the same rule as training's validation)
    root = tmp_path / "data" / "celeba_hq"
    face = load_photo("astronaut.png")[:, :256, 128:384]
    for i in range(101):
        _save(face if i >= 99 else torch.zeros(3, 8, 8), root / f"{i:05d}.png")
    rep = evaluate(EvalConfig(model="bicubic", set="celebahq", data_dir=str(tmp_path / "data"), limit=2, grids=0),
                   tmp_path / "o")
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    assert [r["image"] for r in rows] == ["00001", "00002"]  # 00000 is training data
    s = rep.summary
    assert s["scale"] == 8 and s["protocol"]["hr_size"] == 128 and s["crop_border"] == 8
    assert rows[0]["lr_size"] == "16x16" and rows[0]["hr_size"] == "128x128"


# ---------------------------------------------------------------------------------------------- LPIPS / FID
def test_lpips_and_fid_through_random_weights_in_torch_home(tmp_path: Path, random_metric_weights: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(random_metric_weights))
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(48, 48))
    rep = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(data), metrics=("psnr", "lpips", "fid"),
                              grids=0, convention="rgb", lpips_net="squeeze"), tmp_path / "o")
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    lp = _entry(s, "lpips")
    assert lp["mean"] == pytest.approx(np.mean([float(r["lpips"]) for r in rows]), rel=1e-12) and lp["mean"] > 0
    # the row's LPIPS is the metric's value on the same images
    hr = load_rgb(data / "astronaut.png")
    sr = _q(upsample(_q(downsample(hr, 4)), 4))
    assert float(rows[0]["lpips"]) == pytest.approx(M.LPIPS("squeeze")(sr, hr), rel=1e-6)
    assert "squeeze" in lp["convention_text"]
    fid = _entry(s, "fid")
    assert fid["count"] == 2 and fid["mean"] > 0 and "biased" in fid["warning"]
    assert any("biased" in w for w in s["warnings"])
    assert [c for c in rows[0] if c.startswith(("psnr", "ssim"))] == ["psnr_rgb"]
    assert rep.summary["n_errors"] == 0


def test_absent_metric_weights_are_unavailable_and_the_rest_still_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(32, 32))
    rep = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(data), metrics=("psnr", "lpips", "fid"),
                              grids=0), tmp_path / "o")
    s = rep.summary
    lp = next(e for e in s["metrics"] if e["metric"] == "lpips")
    fid = next(e for e in s["metrics"] if e["metric"] == "fid")
    assert lp["available"] is False and "alexnet-owt-7be5be79.pth" in lp["reason"]
    assert fid["available"] is False and "pt_inception-2015-12-05-6726825d.pth" in fid["reason"]
    assert _entry(s, "psnr", "rgb")["count"] == 2 and s["n_errors"] == 0
    assert "lpips" not in _read_csv(tmp_path / "o" / "metrics.csv")[0]
    assert "| LPIPS | unavailable |" in (tmp_path / "o" / "summary.md").read_text()


# ---------------------------------------------------------------------------------------------- VIF
def test_vif_in_both_conventions_for_a_model_and_the_bicubic_reference(tmp_path: Path,
                                                                        tiny_checkpoint: Path) -> None:
    """--metrics psnr,ssim,vif: vif_rgb and vif_y columns like ssim's, in the CSV, summary.json and summary.md, for
    a diffusion model and for bicubic; each value is metrics.vif recomputed on the written SR PNG against the HR."""
    pytest.importorskip("torchmetrics")
    data = _photo_folder(tmp_path / "p", names=("chelsea.png",), size=(64, 64))
    hr = load_rgb(data / "chelsea.png")  # 64x64: no GTmod crop at x4; 56x56 left for Y after crop 4 (>= 41)
    common = dict(set="folder", data_dir=str(data), metrics=("psnr", "ssim", "vif"), grids=0, save_images=True,
                  device="cpu", precision="fp32")
    runs = {"model": EvalConfig(weights=str(tiny_checkpoint), steps=1, **common),
            "bicubic": EvalConfig(model="bicubic", scale=4, **common)}
    for name, cfg in runs.items():
        out = tmp_path / name
        rep = evaluate(cfg, out)
        s = json.loads((out / "summary.json").read_text())
        assert [e["column"] for e in s["metrics"]] == ["psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "vif_rgb",
                                                      "vif_y"]
        sr = load_rgb(out / "sr" / "chelsea.png")
        row = _read_csv(out / "metrics.csv")[0]
        for conv, border in (("rgb", 0), ("y", 4)):
            expected = M.vif(sr, hr, crop_border=border, y_channel=conv == "y")
            e = _entry(s, "vif", conv)
            assert e["mean"] == pytest.approx(expected, abs=1e-12) and e["count"] == 1, (name, conv)
            assert float(row[f"vif_{conv}"]) == pytest.approx(expected, abs=1e-12)
            assert e["crop_border"] == border and "torchmetrics" in e["convention_text"]
            assert 0 < expected < 1
        assert rep.summary["n_errors"] == 0
        md = (out / "summary.md").read_text()
        assert f"| VIF (Y) | {_entry(s, 'vif', 'y')['mean']:.4f} |" in md and "| VIF (RGB) |" in md


def test_vif_unavailable_without_torchmetrics_and_too_small_images_are_file_errors(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    import sys

    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(48, 48))  # 48 - 2 x 4 = 40 < 41 for VIF on Y
    with monkeypatch.context() as m:
        for name in ("torchmetrics", "torchmetrics.functional", "torchmetrics.functional.image"):
            m.setitem(sys.modules, name, None)  # a None entry makes the import raise ImportError
        rep = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(data), metrics=("psnr", "vif"), grids=0),
                       tmp_path / "o")
    v = next(e for e in rep.summary["metrics"] if e["metric"] == "vif")
    assert v["available"] is False and 'pip install "dreamsr[perceptual]"' in v["reason"]
    assert _entry(rep.summary, "psnr", "y")["count"] == 2 and rep.summary["n_errors"] == 0
    assert not any(c.startswith("vif") for c in _read_csv(tmp_path / "o" / "metrics.csv")[0])
    assert any(w.startswith("vif unavailable") for w in rep.summary["warnings"])
    pytest.importorskip("torchmetrics")
    rep = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(data), metrics=("psnr", "vif"), grids=0),
                   tmp_path / "o2")
    assert rep.summary["n_errors"] == 2 and "for VIF after cropping 4 px" in rep.errors[0]["error"]


# ---------------------------------------------------------------------------------------------- HaarPSI/GMSD/MDSI, HF
def test_perceptual_measures_through_eval_equal_piq_and_the_hf_ratio_on_the_written_images(tmp_path: Path) -> None:
    """--metrics psnr,haarpsi,gmsd,mdsi,hf: one column each in the CSV, summary.json, summary.md and --compare; each
    per-image value is piq's own function (called directly) or metrics.hf_ratio on the written SR PNG vs the HR;
    the set value is the mean of the per-image values; bicubic ranks as blur on every one of them."""
    piq = pytest.importorskip("piq")
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(64, 64))  # no GTmod crop at x4
    cfg = EvalConfig(set="folder", data_dir=str(data), model="bicubic", scale=4, grids=0, save_images=True,
                     metrics=("psnr", "haarpsi", "gmsd", "mdsi", "hf"), convention="y")
    out = tmp_path / "o"
    rep = evaluate(cfg, out)
    s = json.loads((out / "summary.json").read_text())
    assert rep.summary["n_errors"] == 0
    assert [e["column"] for e in s["metrics"]] == ["psnr_y", "haarpsi", "gmsd", "mdsi", "hf"]
    rows = _read_csv(out / "metrics.csv")
    per: dict[str, list[float]] = {m: [] for m in ("haarpsi", "gmsd", "mdsi", "hf")}
    for row in rows:
        sr, hr = load_rgb(out / "sr" / f"{row['image']}.png"), load_rgb(data / f"{row['image']}.png")
        for m in ("haarpsi", "gmsd", "mdsi"):
            expected = float(getattr(piq, m)(sr.double()[None], hr.double()[None]))
            assert float(row[m]) == pytest.approx(expected, abs=1e-12), (row["image"], m)
            per[m].append(expected)
        expected_hf = M.hf_ratio(sr, hr, crop_border=4)
        assert float(row["hf"]) == pytest.approx(expected_hf, abs=1e-12)
        per["hf"].append(expected_hf)
    for m, vals in per.items():
        e = _entry(s, m, "y" if m == "hf" else "rgb")
        assert e["mean"] == pytest.approx(np.mean(vals), abs=1e-12) and e["count"] == 2, m
    assert 0 < _entry(s, "haarpsi")["mean"] < 1 and _entry(s, "gmsd")["mean"] > 0 and _entry(s, "mdsi")["mean"] > 0
    assert 0 < _entry(s, "hf", "y")["mean"] < 1  # bicubic x4 has less texture than the original
    assert [_entry(s, m)["direction"] for m in ("haarpsi", "gmsd", "mdsi")] == ["higher", "lower", "lower"]
    assert _entry(s, "hf", "y")["crop_border"] == 4 and "crop_border = 4" in _entry(s, "hf", "y")["convention_text"]
    assert "piq" in _entry(s, "haarpsi")["convention_text"]
    assert "lower is better" in _entry(s, "gmsd")["convention_text"]
    md = (out / "summary.md").read_text()
    for m, label in (("haarpsi", "HaarPSI ↑"), ("gmsd", "GMSD ↓"), ("mdsi", "MDSI ↓")):
        assert f"| {label} | {_entry(s, m)['mean']:.4f} |" in md
    assert f"| HF ratio (Y) | {_entry(s, 'hf', 'y')['mean']:.3f} |" in md
    # --compare lines them up; the finished evaluation is reused, another metric list is not
    table = compare([out, out])
    row = next(r for r in table["rows"] if r["metric"] == "gmsd")
    assert row["label"] == "GMSD ↓" and row["values"][0][0] == pytest.approx(_entry(s, "gmsd")["mean"])
    assert "| HaarPSI ↑ |" in compare_markdown(table)
    assert finished_summary(cfg, out) is not None
    assert finished_summary(EvalConfig(**{**cfg.__dict__, "metrics": ("psnr", "hf")}), out) is None


def test_perceptual_measures_unavailable_without_piq_hf_still_runs_and_small_images_are_file_errors(
        tmp_path: Path, monkeypatch) -> None:
    import sys

    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(40, 40))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "piq", None)  # a None entry makes the import raise ImportError
        rep = evaluate(EvalConfig(set="folder", data_dir=str(data), model="bicubic", scale=4, grids=0,
                                  metrics=("psnr", "haarpsi", "gmsd", "hf")), tmp_path / "o")
    for name in ("haarpsi", "gmsd"):
        e = next(e for e in rep.summary["metrics"] if e["metric"] == name)
        assert e["available"] is False and 'pip install "dreamsr[perceptual]"' in e["reason"]
        assert any(w.startswith(f"{name} unavailable") for w in rep.summary["warnings"])
    assert _entry(rep.summary, "hf", "y")["count"] == 2 and rep.summary["n_errors"] == 0
    header = _read_csv(tmp_path / "o" / "metrics.csv")[0]
    assert "hf" in header and "haarpsi" not in header and "gmsd" not in header
    # 16x16 HR: HaarPSI's minimum is met, but the HF ratio has 8x8 px left after cropping 4: a file error
    small = _photo_folder(tmp_path / "s", names=PHOTOS[:1], size=(16, 16))
    rep = evaluate(EvalConfig(set="folder", data_dir=str(small), model="bicubic", scale=4, grids=0,
                              metrics=("haarpsi", "hf")), tmp_path / "o2")
    assert rep.summary["n_errors"] == 1 and "11x11 px for the HF ratio after cropping 4 px" in rep.errors[0]["error"]
    pytest.importorskip("piq")
    rep = evaluate(EvalConfig(set="folder", data_dir=str(small), model="bicubic", scale=4, grids=0,
                              metrics=("haarpsi",)), tmp_path / "o3")
    assert rep.summary["n_errors"] == 0 and 0 < _entry(rep.summary, "haarpsi")["mean"] < 1


def test_cli_eval_with_haarpsi_and_hf_prints_and_writes_them(tmp_path: Path) -> None:
    pytest.importorskip("piq")
    from typer.testing import CliRunner

    from dreamsr.cli import app

    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(48, 48))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--model", "bicubic", "--scale",
                              "4", "--metrics", "psnr,ssim,haarpsi,hf", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [e["column"] for e in s["metrics"]] == ["psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "haarpsi", "hf"]
    h, hf = _entry(s, "haarpsi")["mean"], _entry(s, "hf", "y")["mean"]
    assert 0 < h < 1 and 0 < hf < 1
    assert "HaarPSI ↑" in res.output and f"{h:.4f}" in res.output
    assert "HF ratio (Y)" in res.output and f"{hf:.3f}" in res.output
    md = (tmp_path / "o" / "summary.md").read_text()
    assert f"| HaarPSI ↑ | {h:.4f} |" in md and f"| HF ratio (Y) | {hf:.3f} |" in md
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    assert np.mean([float(r["haarpsi"]) for r in rows]) == pytest.approx(h, abs=1e-12)
    res = runner.invoke(app, ["eval", "--compare", str(tmp_path / "o")])
    assert res.exit_code == 0 and "HaarPSI ↑" in res.output and f"{h:.4f}" in res.output


# ---------------------------------------------------------------------------------------------- diffusion models
def test_diffusion_model_goes_through_the_pipeline_with_k_seeds(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from dreamsr.jobs.pipeline import Upscaler

    root = tmp_path / "p"
    hr_full = load_photo("chelsea.png")[:, 100:132, 150:186]
    _save(hr_full, root / "cat.png")
    cfg = EvalConfig(set="folder", data_dir=str(root), weights=str(tiny_checkpoint), steps=1, samples=2, seed=7,
                     device="cpu", precision="fp32", grids=1, metrics=("psnr", "consistency"))
    rep = evaluate(cfg, tmp_path / "o")
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    assert [(r["sample"], r["seed"]) for r in rows] == [("0", "7"), ("1", "8")]
    # each row is the metric of the pipeline's own output for that seed, sampled as `dreamsr upscale` does
    up = Upscaler.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    hr = load_rgb(root / "cat.png")
    lr = _q(downsample(hr, 4))
    for r in rows:
        sr = _q(up.upscale(lr, steps=1, seed=int(r["seed"]), tile=40, overlap=5, merge="step"))
        assert float(r["psnr_rgb"]) == pytest.approx(M.psnr(sr, hr), abs=1e-6)
    s = rep.summary
    e = _entry(s, "psnr", "rgb")
    per_seed = [float(r["psnr_rgb"]) for r in rows]
    assert e["mean"] == pytest.approx(np.mean(per_seed)) and e["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert e["samples"] == 2 and "seeds" in e["std_over"]
    m = s["model"]
    assert m["kind"] == "diffusion" and m["weights"] == str(tiny_checkpoint) and len(m["sha256"]) == 64
    assert m["sampling"]["tile"] == 40 and m["sampling"]["merge"] == "step" and s["steps"] == 1
    assert s["protocol"]["paper_sampling"] == {"tile": 40, "overlap": 5, "merge": "end"}
    assert (tmp_path / "o" / "grids" / "cat.png").is_file()
    with pytest.raises(ConfigError, match="serves x4 only"):
        evaluate(EvalConfig(set="folder", data_dir=str(root), weights=str(tiny_checkpoint), scale=2, device="cpu"),
                 tmp_path / "o2")


def test_summary_json_is_the_report_and_records_the_sampling_that_ran(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The file as written: the returned summary (through a plain JSON round trip), every sampling setting given
    recorded as used, and used: each image's PSNR is that of Upscaler.upscale run here with those settings. The
    weights' sha256, the seed and the command are recorded; the folder holds the reports and no temporary file."""
    import datetime as dt
    import hashlib

    import dreamsr
    from dreamsr.jobs.pipeline import Upscaler

    root = tmp_path / "p"
    _save(load_photo("chelsea.png")[:, 100:132, 150:186], root / "cat.png")
    _save(load_photo("coffee.png")[:, 150:182, 200:236], root / "cup.png")
    given = dict(steps=2, sampler="ddpm", eta=0.5, start=3, back_project=True, tile=4, overlap=1, merge="step",
                 batch=3)
    cfg = EvalConfig(set="folder", data_dir=str(root), weights=str(tiny_checkpoint), seed=5, device="cpu",
                     precision="fp32", grids=0, metrics=("psnr",), convention="rgb", command="dreamsr eval (test)",
                     **given)
    rep = evaluate(cfg, tmp_path / "o")
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.json", "summary.md"]
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(rep.summary, default=str))
    assert {k: s["model"]["sampling"][k] for k in given} == given and s["model"]["sampling"]["seed"] == 5
    assert (s["seed"], s["samples"], s["steps"], s["sampler"], s["scale"]) == (5, 1, 2, "ddpm", 4)
    assert {k: s["config"][k] for k in given} == given and s["config"]["command"] == "dreamsr eval (test)"
    assert s["model"]["weights"] == str(tiny_checkpoint)
    assert s["model"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert s["dreamsr_version"] == dreamsr.__version__ and s["seconds"] > 0
    created = dt.datetime.fromisoformat(s["created"])
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    up = Upscaler.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    psnrs = []
    for name in ("cat", "cup"):
        hr = load_rgb(root / f"{name}.png")[:, :32, :36]  # GTmod crop to a multiple of 4
        psnrs.append(M.psnr(_q(up.upscale(_q(downsample(hr, 4)), seed=5, **given)), hr))
    e = _entry(s, "psnr", "rgb")
    assert e["count"] == 2 and e["mean"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert e["std"] == pytest.approx(np.std(psnrs, ddof=1), abs=1e-9)


def test_a_finished_evaluation_is_reused_only_for_the_same_settings_and_weights(tmp_path: Path,
                                                                                  tiny_checkpoint: Path) -> None:
    import dataclasses

    root = tmp_path / "p"
    _save(load_photo("chelsea.png")[:, 100:132, 150:182], root / "cat.png")
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(tiny_checkpoint.read_bytes())
    cfg = EvalConfig(set="folder", data_dir=str(root), weights=str(weights), steps=1, device="cpu",
                     precision="fp32", grids=0, metrics=("psnr",), command="first")
    out = tmp_path / "o"
    assert finished_summary(cfg, out) is None
    first, reused = evaluate_cached(cfg, out)
    assert not reused and first["config"]["command"] == "first"
    # the command line does not matter; anything that changes the result does
    again, reused = evaluate_cached(dataclasses.replace(cfg, command="second"), out)
    assert reused and again == json.loads((out / "summary.json").read_text())
    assert finished_summary(dataclasses.replace(cfg, steps=2), out) is None
    assert finished_summary(dataclasses.replace(cfg, seed=1), out) is None
    assert finished_summary(dataclasses.replace(cfg, ensemble=2), out) is None
    ens, _ = evaluate_cached(dataclasses.replace(cfg, ensemble=2), tmp_path / "o2")  # reaches the pipeline
    assert ens["model"]["sampling"]["ensemble"] == 2 and ens["metrics"] != first["metrics"]
    # a summary written before a config field existed ran that field's default
    stored = json.loads((out / "summary.json").read_text())
    del stored["config"]["ensemble"]
    (out / "summary.json").write_text(json.dumps(stored))
    assert finished_summary(cfg, out) is not None and finished_summary(dataclasses.replace(cfg, ensemble=4), out) is None
    # a different checkpoint under the same path is evaluated again
    write_tiny_checkpoint(weights, scale=4, target="image", seed=1)
    assert finished_summary(cfg, out) is None
    fresh, reused = evaluate_cached(cfg, out)
    assert not reused and fresh["model"]["sha256"] != first["model"]["sha256"]
    # an interrupted evaluation (no summary.json, or a torn one) is never reused
    (out / "summary.json").write_text("{")
    assert finished_summary(cfg, out) is None


# ---------------------------------------------------------------------------------------------- compare and CLI
def test_compare_lines_up_runs_and_warns_on_different_sets(tmp_path: Path) -> None:
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:3], size=(40, 40))
    a = evaluate(EvalConfig(model="bicubic", set="folder", data_dir=str(data), grids=0), tmp_path / "bic")
    b = evaluate(EvalConfig(set="folder", data_dir=str(data), model="nearest", limit=2, grids=0), tmp_path / "near")
    table = compare([tmp_path / "bic" / "summary.json", tmp_path / "near"])
    assert [r["label"] for r in table["runs"]] == ["bicubic (bic)", "nearest (near)"]
    row = next(r for r in table["rows"] if r["metric"] == "psnr" and r["convention"] == "y")
    assert row["values"][0][0] == pytest.approx(_entry(a.summary, "psnr", "y")["mean"])
    assert row["values"][1][0] == pytest.approx(_entry(b.summary, "psnr", "y")["mean"])
    assert any("count" in w for w in table["warnings"])
    md = compare_markdown(table)
    assert md.startswith("| metric | bicubic (bic) | nearest (near) |") and "PSNR (Y)" in md


def test_cli_eval_and_compare(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dreamsr.cli import app

    data = _photo_folder(tmp_path / "p", names=PHOTOS[:2], size=(40, 40))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--model", "bicubic", "--scale", "4",
                              "--metrics", "psnr,ssim", "--convention", "y", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [e["column"] for e in s["metrics"]] == ["psnr_y", "ssim_y"]
    assert s["command"].startswith("dreamsr")
    assert "PSNR (Y)" in res.output and f"{s['metrics'][0]['mean']:.2f}" in res.output
    res = runner.invoke(app, ["eval", "--compare", str(tmp_path / "o" / "summary.json"), str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "PSNR (Y)" in res.output
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--metrics", "psnr,niqe"])
    assert res.exit_code == 2 and "niqe" in res.output
    # a failed file: report written, exit code 1
    (data / "bad.png").write_bytes(b"garbage")
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "-m", "bicubic", "--out",
                              str(tmp_path / "o2")])
    assert res.exit_code == 1 and (tmp_path / "o2" / "summary.json").is_file() and "bad" in res.output


# ---- a continuous-scale model -----------------------------------------------------------------------------
def test_idm_model_is_evaluated_at_its_own_and_a_non_integer_scale(tmp_path: Path) -> None:
    """x2.5: the HR is cropped to multiples of 5 (70x90 -> 70x90), the LR is 28x36, the model samples 70x90 itself;
    the per-image PSNR is the pipeline's output at that scale against the HR; bicubic runs at the same scale."""
    from dreamsr.checkpoint import CheckpointInfo, save_checkpoint
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.idm.network import IDMNet, preset
    from dreamsr.images import load_rgb, resize
    from dreamsr.jobs.pipeline import Upscaler

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "idm.safetensors", IDMNet(preset("tiny")),
                           CheckpointInfo(network=preset("tiny"), diffusion=DiffusionConfig(), scale=4, family="idm"))
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:1], size=(70, 90))
    common = dict(set="folder", data_dir=str(data), metrics=("psnr", "consistency"), convention="rgb", steps=2,
                  tile=0, device="cpu", precision="fp32", grids=1)
    for scale, hr_size, lr_size in ((2.5, (70, 90), (28, 36)), (None, (68, 88), (17, 22))):
        rep = evaluate(EvalConfig(weights=str(ckpt), scale=scale, **common), tmp_path / f"o{scale}")
        s = rep.summary
        assert s["scale"] == (scale or 4) and s["model"]["family"] == "idm" and s["count"] == 1
        hr = load_rgb(next(data.iterdir()))
        hr = hr[:, :hr_size[0], :hr_size[1]]
        lr = resize(hr, lr_size).clamp(0, 1).mul(255).round().div(255)
        up = Upscaler.from_checkpoint(ckpt, device="cpu", precision="fp32")
        sr = up.upscale(lr, scale=scale or 4, steps=2, tile=0).clamp(0, 1).mul(255).round().div(255)
        assert tuple(sr.shape[-2:]) == tuple(hr.shape[-2:])
        row = _read_csv(rep.out_dir / "metrics.csv")[0]
        assert float(row["psnr_rgb"]) == pytest.approx(M.psnr(sr, hr), abs=1e-4)
    bic = evaluate(EvalConfig(model="bicubic", scale=2.5, **{**common, "steps": None}), tmp_path / "bic")
    assert bic.summary["scale"] == 2.5 and bic.summary["count"] == 1
    with pytest.raises(ConfigError, match="x1 to x4"):
        evaluate(EvalConfig(weights=str(ckpt), scale=6, **common), tmp_path / "o6")


def test_cli_eval_header_states_the_recommended_sampling_it_uses(tmp_path: Path) -> None:
    """`dreamsr eval --weights M` samples with M's recommendation and says so before the work; --steps overrides."""
    from typer.testing import CliRunner

    from dreamsr.cli import app

    ckpt = write_tiny_checkpoint(tmp_path / "rec.safetensors", scale=4, sampling={"steps": 3, "back_project": True})
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:1], size=(32, 32))
    runner = CliRunner()
    for extra, steps, merge in (([], 3, "step"), (["--steps", "2"], 2, "step"), (["--merge", "end"], 3, "end")):
        out = tmp_path / f"o{steps}{merge}"
        res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--weights", str(ckpt),
                                  "--metrics", "psnr", "--precision", "fp32", "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        header = res.stderr.replace("\n", " ")
        assert res.stderr.startswith(f"sampling: ddim {steps} steps") and "back-projection" in header
        assert f"merge {merge}" in header
        assert "the model recommends back_project True, steps 3" in header
        # "override" only when something was given, and it names what was given
        if extra:
            assert f"given: {extra[0][2:]} {extra[1]}, which override it" in header
        else:
            assert "overrid" not in header and "given" not in header and "as dreamsr upscale samples it" in header
        assert ("the paper's protocol" in header) == (merge == "end")
        s = json.loads((out / "summary.json").read_text())
        assert s["model"]["sampling"]["steps"] == steps and s["model"]["sampling"]["back_project"] is True
        assert s["model"]["sampling"]["merge"] == merge and s["protocol"]["merge"] == merge


# ---- eval's defaults are upscale's ------------------------------------------------------------------------
def test_eval_without_a_model_uses_the_registry_default_as_upscale_picks_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `dreamsr eval --set ... --metrics ...` evaluates the registry's default model (upscale's
    rule: the scale's default, else the x4 default), not bicubic; bicubic and nearest stay named references;
    a registry without defaults is a usage error naming what to pass."""
    from typer.testing import CliRunner

    import dreamsr.jobs.weights as W
    from dreamsr.cli import app

    default = W.default_model_for(None)
    assert default == W.default_model(4) and W.default_model_for(8) == (W.default_model(8) or W.default_model(4))
    assert EvalConfig(set="folder").resolved().model == default
    assert EvalConfig(set="folder", scale=8).resolved().model == W.default_model_for(8)
    assert EvalConfig(set="folder", model="nearest").resolved().model == "nearest"
    assert EvalConfig(set="folder", weights="m.safetensors").resolved().model is None  # the file is named
    data = _photo_folder(tmp_path / "p", names=PHOTOS[:1], size=(32, 32))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--metrics", "psnr", "--tile", "0",
                              "--precision", "fp32", "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["model"]["kind"] == "diffusion" and s["model"]["name"] == default and s["config"]["model"] == default
    assert s["model"]["sha256"] == W.get_entry(default).sha256 and s["scale"] == 4
    assert res.stderr.startswith("sampling: ") and default in res.output
    # a finished run of the default is found again under the same (unnamed) config
    assert finished_summary(EvalConfig(set="folder", data_dir=str(data), metrics=("psnr",), tile=0,
                                       precision="fp32", command="x"), tmp_path / "o") is not None
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--model", "bicubic", "--metrics",
                              "psnr", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0 and json.loads((tmp_path / "b" / "summary.json").read_text())["model"]["kind"] == \
        "reference"
    monkeypatch.setattr(W, "default_model", lambda scale: None)  # a registry without defaults
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "--metrics", "psnr"])
    assert res.exit_code == 2 and "no model available" in res.stderr and "--weights" in res.stderr
    assert "Traceback" not in res.output


def test_eval_samples_exactly_as_upscale_unless_merge_end_is_given(tmp_path: Path) -> None:
    """The SR image `dreamsr eval --save-images` writes for an image equals what `dreamsr upscale` writes for the
    same LR file, with no option given to either (the model's recommendation, merge step, four 40 px tiles);
    `--merge end` (the paper's protocol) samples another image."""
    from typer.testing import CliRunner

    from dreamsr.cli import app

    ckpt = write_tiny_checkpoint(tmp_path / "rec.safetensors", scale=4, target="image", sampling={"steps": 2})
    hr = load_photo("astronaut.png")[:, 100:292, 100:292]  # 192 px: a 48 px LR, 2x2 tiles of 40 px
    data = tmp_path / "p"
    _save(hr, data / "face.png")
    lr_file = _save(_q(downsample(hr, 4)), tmp_path / "lr" / "face.png")
    runner = CliRunner()
    common = ["--set", "folder", "--data-dir", str(data), "--weights", str(ckpt), "--metrics", "psnr",
              "--precision", "fp32", "--grids", "0", "--save-images"]
    res = runner.invoke(app, ["eval", *common, "-o", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["upscale", str(lr_file), "-w", str(ckpt), "--precision", "fp32", "-o",
                              str(tmp_path / "u.png")])
    assert res.exit_code == 0, res.output
    ev = np.asarray(Image.open(tmp_path / "e" / "sr" / "face.png"))
    up = np.asarray(Image.open(tmp_path / "u.png"))
    assert ev.shape == up.shape == (192, 192, 3) and np.array_equal(ev, up)
    res = runner.invoke(app, ["eval", *common, "--merge", "end", "-o", str(tmp_path / "end")])
    assert res.exit_code == 0, res.output
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "end" / "sr" / "face.png")), up)


# ---- the released code's LR protocol -----------------------------------------------------------------------
def _pil(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL called directly: ``x`` [3,H,W] as 8-bit RGB, Image.resize((w, h), Image.BICUBIC), back to [0, 1]."""
    arr = x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    out = np.asarray(Image.fromarray(arr, "RGB").resize((size[1], size[0]), Image.BICUBIC))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def test_resize_pil_bicubic_is_pil_and_differs_from_dreamsr_bicubic() -> None:
    from dreamsr.errors import InputError
    from dreamsr.images import resize, resize_pil_bicubic

    hr = load_photo("astronaut.png")[:, 40:168, 160:288]  # a 128 px face crop
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, (3, 37, 23), dtype=np.uint8)).float() / 255
    for x, size in ((hr, (16, 16)), (hr, (50, 77)), (noise, (9, 5)), (noise, (111, 69)), (_pil(hr, (16, 16)),
                                                                                          (128, 128))):
        got = resize_pil_bicubic(x, size)
        assert got.dtype == torch.float32 and tuple(got.shape) == (3, *size)
        assert torch.equal(got, _pil(x, size))  # exactly PIL's 8-bit result
    grey = hr[:1]
    want = np.asarray(Image.fromarray(grey[0].mul(255).round().byte().numpy(), "L").resize((16, 16),
                                                                                           Image.BICUBIC))
    assert torch.equal(resize_pil_bicubic(grey, (16, 16))[0], torch.from_numpy(want.copy()).float() / 255)
    # the two protocols' LR images really differ (the gap this option closes)
    assert not torch.equal(resize_pil_bicubic(hr, (16, 16)), _q(resize(hr, (16, 16))))
    with pytest.raises(InputError, match=r"\[1\|3, H, W\]"):
        resize_pil_bicubic(hr.unsqueeze(0), (16, 16))


def test_consistency_release_rule_is_dreams_pil_downsample() -> None:
    from dreamsr.errors import InputError

    hr = load_photo("coffee.png")[:, 100:164, 200:264]
    lr = _pil(hr, (16, 16))
    sr = _q(hr + 0.02 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0)))
    want = torch.mean((_pil(sr, (16, 16)).double() - lr.double()) ** 2).item() * 1e5
    assert M.consistency(sr, lr, rule="release") == pytest.approx(want, rel=1e-12)
    assert M.consistency(sr, lr) != pytest.approx(want, rel=1e-3)  # dreamsr's rule: torch's bicubic
    with pytest.raises(InputError, match="dreamsr or release"):
        M.consistency(sr, lr, rule="pil")  # type: ignore[arg-type]


def test_lr_protocol_release_makes_lr_and_consistency_the_release_way(tmp_path: Path) -> None:
    """--lr-protocol release: the LR is PIL's bicubic of the 8-bit HR (folder), or of the file for celebahq, whose
    128 px HR is PIL's too (the release's prepare_data.py: file -> 16 px, file -> 128 px); consistency downsamples
    the SR by PIL. Every number is checked against PIL called here."""
    from typer.testing import CliRunner

    from dreamsr.cli import app
    from dreamsr.images import resize

    data = _photo_folder(tmp_path / "p", names=PHOTOS[:1], size=(70, 90))
    cfg = dict(set="folder", data_dir=str(data), model="bicubic", scale=4, grids=0, convention="rgb",
               metrics=("psnr", "consistency"))
    rel = evaluate(EvalConfig(lr_protocol="release", **cfg), tmp_path / "r")
    dre = evaluate(EvalConfig(**cfg), tmp_path / "d")
    hr = load_rgb(data / "astronaut.png")[:, :68, :88]
    lr = _pil(hr, (17, 22))
    sr = _q(resize(lr, (68, 88)))
    row = _read_csv(tmp_path / "r" / "metrics.csv")[0]
    assert float(row["psnr_rgb"]) == pytest.approx(M.psnr(sr, hr), abs=1e-9)
    want = torch.mean((_pil(sr, (17, 22)).double() - lr.double()) ** 2).item() * 1e5
    assert float(row["consistency"]) == pytest.approx(want, rel=1e-9)
    assert rel.summary["lr_protocol"] == "release" and "PIL" in rel.summary["conventions"]["sr_quantized"]
    assert dre.summary["lr_protocol"] == "dreamsr"
    assert _read_csv(tmp_path / "d" / "metrics.csv")[0]["psnr_rgb"] != row["psnr_rgb"]
    # celebahq: a 256 px file gives HR = PIL(file -> 128) and LR = PIL(file -> 16); a 128 px file is the HR
    root = tmp_path / "data" / "celeba_hq"
    face = load_photo("astronaut.png")[:, :256, 128:384]
    small = _pil(face, (128, 128))
    for i in range(101):
        _save(face if i == 1 else small if i == 2 else torch.zeros(3, 8, 8), root / f"{i:05d}.png")
    faces = evaluate(EvalConfig(set="celebahq", data_dir=str(tmp_path / "data"), model="bicubic", limit=2, grids=0,
                                convention="rgb", metrics=("psnr",), lr_protocol="release"), tmp_path / "f")
    rows = _read_csv(tmp_path / "f" / "metrics.csv")
    assert [r["image"] for r in rows] == ["00001", "00002"] and faces.summary["scale"] == 8
    for r, hr128, lr16 in ((rows[0], small, _pil(face, (16, 16))), (rows[1], small, _pil(small, (16, 16)))):
        assert float(r["psnr_rgb"]) == pytest.approx(M.psnr(_q(resize(lr16, (128, 128))), hr128), abs=1e-9)
    assert rows[0]["psnr_rgb"] != rows[1]["psnr_rgb"]  # the file's own 16 px, not the 128 px HR's
    # the CLI option, recorded; a bad value is a usage error
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "-m", "bicubic", "--metrics",
                              "psnr", "--lr-protocol", "release", "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["config"]["lr_protocol"] == "release" and s["lr_protocol"] == "release"
    res = runner.invoke(app, ["eval", "--set", "folder", "--data-dir", str(data), "-m", "bicubic", "--lr-protocol",
                              "pil"])
    assert res.exit_code == 2 and "lr_protocol must be one of dreamsr, release" in res.stderr
