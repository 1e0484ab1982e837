"""`dreamsr bench`: the report's structure and arithmetic, FLOP counts against an independent count, memory
measurement, model loading and the CLI. Timings are never asserted: only how reported numbers relate.

One tiny benchmark (tiny preset, 12x12 LR, 2 steps, 1 thread) is run once per module and inspected by many tests,
on a CPU made to report native bf16 (the flags are injected: which precisions are timed must not depend on the
machine the tests run on); another CPU without it shows bf16 skipped, with the reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dreamsr import runtime
from dreamsr.jobs import bench
from dreamsr.jobs.bench import BenchConfig, PeakMemory, forward_flops, run_bench, train_step_flops
from dreamsr.errors import ConfigError, ModelNotFoundError
from dreamsr.tiling import make_grid
from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig
from tests._helpers import copy_photos

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(lr_size=12, steps=2, tile=8, overlap=2, batches=(3,), repeats=2, naive_repeats=2, train_batch=2,
            train_patch=16, train_steps=2, train_warmup=1, train_rounds=1, threads=1, loader_workers=0,
            loader_batches=2)
AVX2 = frozenset("sse4_2 avx fma avx2".split())  # a laptop-class CPU: bf16 only emulated
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16"}  # e.g. AMD Zen 4: native bf16


def _set_cpu_flags(mp: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    """Make runtime and bench see ``flags`` as this machine's /proc/cpuinfo flags."""
    fake = lambda path="/proc/cpuinfo": flags  # noqa: E731
    mp.setattr(runtime, "cpu_flags", fake)
    mp.setattr(bench, "cpu_flags", fake)


@pytest.fixture(scope="module")
def loader_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_photos(tmp_path_factory.mktemp("bench-data"), ("chelsea.png", "coffee.png", "rocket.jpg"))


@pytest.fixture(scope="module")
def report(loader_dir: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        _set_cpu_flags(mp, AVX512_BF16)
        return run_bench(BenchConfig(device="cpu", data_dir=str(loader_dir), **TINY), preset="tiny")


# --- the report -----------------------------------------------------------------------------------------------

def test_report_has_every_section_and_is_json(report: dict) -> None:
    assert report["schema"] == bench.SCHEMA
    # the benchmark's wall time holds every timed span (sampling repeats, training steps with their data time)
    timed = sum(sum(r["time"]["all_s"]) for r in report["sampling"]["runs"])
    timed += sum(sum(r["wall_step"]["all_s"]) for r in report["training"]["runs"])
    assert report["seconds"] > timed > 0
    assert report["machine"]["threads"] == 1 and report["machine"]["gpu"] is None
    assert report["machine"]["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16"]
    assert report["machine"]["cpu_native_bf16"] is True
    assert report["model"]["preset"] == "tiny" and report["model"]["parameters"] == UNet(PRESETS["tiny"]).num_parameters()
    assert json.loads(json.dumps(report)) == report  # plain JSON types only


def test_thread_count_restored() -> None:
    before = torch.get_num_threads()
    run_bench(BenchConfig(device="cpu", sections=("efficiency",), lr_size=12, tile=8, overlap=2, train_batch=2,
                          train_patch=16, threads=before + 1), preset="tiny")
    assert torch.get_num_threads() == before


def test_sampling_fields_and_arithmetic(report: dict) -> None:
    sp = report["sampling"]
    grid = make_grid(12, 12, 8, 2)
    assert sp["tiles"] == len(grid) == 4
    assert sp["out_size"] == [48, 48] and sp["tile_hr"] == [32, 32]
    assert sp["out_megapixels"] == pytest.approx(48 * 48 / 1e6)
    paths = [(r["path"], r["precision"], r["batch"], r["merge"], r["channels_last"]) for r in sp["runs"]]
    assert paths == [("default", "fp32", 3, "step", True), ("default", "bf16", 3, "step", True),
                     ("naive", "fp32", 1, "end", False)]
    for r in sp["runs"]:  # (model_calls, tile_forwards: test_counts_and_flops_are_those_of_the_calls_made)
        t = r["time"]
        assert t["n"] == 2 and len(t["all_s"]) == 2
        assert t["min_s"] <= t["median_s"] <= t["max_s"]
        assert t["median_s"] == pytest.approx(sum(t["all_s"]) / 2)  # median of two
        c = r["cpu_time"]
        assert c["n"] == 2 and c["min_s"] <= c["median_s"] <= c["max_s"]
        assert r["memory"]["kind"] == "peak_rss" and r["memory"]["peak_mib"] >= r["memory"]["start_mib"] > 0
    assert sp["skipped"] == [] and sp["emulated"] == [] and sp["precisions_supported"] == ["fp32", "bf16"]
    hl = sp["headline"]
    bf16 = sp["runs"][1]
    assert (hl["precision"], hl["batch"]) == ("bf16", 3)
    assert hl["speedup_vs_naive"] == bf16["speedup_vs_naive"]
    assert hl["speedup_vs_naive_cpu_time"] == bf16["speedup_vs_naive_cpu_time"]


def test_training_fields_and_ratio(report: dict) -> None:
    tr = report["training"]
    assert (tr["batch"], tr["patch"], tr["preset"], tr["precision"]) == (2, 16, "tiny", "bf16")  # auto, native
    assert tr["precision_reason"].startswith("auto: bf16")
    std, dream = tr["runs"]
    assert (std["objective"], std["p"], dream["objective"], dream["p"]) == ("standard", "inf", "dream", 1.0)
    for r in (std, dream):
        assert r["step"]["n"] == r["cpu_step"]["n"] == 2  # train_steps x rounds, warm-up excluded
        assert r["cpu_step"]["min_s"] > 0
        assert r["loss_finite"] is True
        assert all(0 <= d <= w for w, d in zip(r["wall_step"]["all_s"], r["data"]["all_s"]))  # data is part of it


def test_training_runs_standard_then_dream_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "standard" and "dream" runs are real training steps: one network forward with gradients per standard
    step (p = inf), and per DREAM step the extra no-grad forward of Alg. 3 before it; the warm-up step runs too
    and is left out of the timings."""
    grad_enabled: list[bool] = []
    real = UNet.forward

    def recording(self, *args, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", recording)
    cfg = BenchConfig(device="cpu", sections=("training",), train_batch=2, train_patch=16, train_steps=2,
                      train_warmup=1, train_rounds=1, train_precision="fp32", threads=1)
    tr = run_bench(cfg, preset="tiny")["training"]
    assert grad_enabled == [True] * 3 + [False, True] * 3
    assert [(r["objective"], r["step"]["n"]) for r in tr["runs"]] == [("standard", 2), ("dream", 2)]


def test_loader_throughput_relates_to_dream_step(report: dict, loader_dir: Path) -> None:
    ld = report["loader"]
    assert ld["images"] == 3 and ld["data_dir"] == str(loader_dir)
    assert (ld["batch"], ld["patch"], ld["workers"]) == (2, 16, 0)  # the config's (the rate: test_data)


def test_counts_and_flops_are_those_of_the_calls_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """model_calls, tile_forwards, tile_hr and the FLOPs describe the network calls the timed runs really made:
    every call is counted at the network (batch, tile shape), FLOPs by the independent hook count."""
    calls: list[tuple[int, ...]] = []
    real = UNet.forward

    def counting(self, y_t, *args, **kwargs):
        if y_t.device.type != "meta":  # FLOP counting runs the network on the meta device
            calls.append(tuple(y_t.shape))
        return real(self, y_t, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", counting)
    cfg = BenchConfig(device="cpu", sections=("sampling", "efficiency"), precisions=("fp32",), lr_size=12, steps=2,
                      tile=8, overlap=2, batches=(3,), repeats=2, naive_repeats=1, warmup=False, threads=1)
    rep = run_bench(cfg, preset="tiny")
    runs = rep["sampling"]["runs"]
    assert [(r["path"], r["time"]["n"]) for r in runs] == [("default", 2), ("naive", 1)]
    assert len(calls) == sum(r["model_calls"] * r["time"]["n"] for r in runs) == 2 * 2 * 2 + 2 * 4
    assert sum(c[0] for c in calls) == sum(r["tile_forwards"] * r["time"]["n"] for r in runs) == 3 * 2 * 4
    assert {c[-2:] for c in calls} == {tuple(rep["sampling"]["tile_hr"])} == {(32, 32)}  # 8 px LR tiles at x4
    per_tile = _hook_flops(PRESETS["tiny"], 1, 32, 32)
    for e, r in zip(rep["efficiency"]["sampling"], runs):
        assert e["flops_total"] == per_tile * r["tile_forwards"]
        assert e["peak_tflops"] is None and e["fraction_of_peak"] is None  # no known peak on a CPU
    tr = rep["efficiency"]["training"]
    assert tr["flops_per_step_dream"] - tr["flops_per_step_standard"] == _hook_flops(PRESETS["tiny"], 8, 64, 64)


def test_memory_summary_and_targets(report: dict) -> None:
    s, t = report["sampling"]["runs"], report["training"]["runs"]
    assert report["memory"]["peak"] == {
        "sampling/default/fp32/b3": s[0]["memory"]["peak_mib"], "sampling/default/bf16/b3": s[1]["memory"]["peak_mib"],
        "sampling/naive/fp32/b1": s[2]["memory"]["peak_mib"], "training/standard": t[0]["memory"]["peak_mib"],
        "training/dream": t[1]["memory"]["peak_mib"]}
    by_name = {t["name"]: t for t in report["targets"]}  # (whether a target is met: the synthetic test below)
    sp = by_name["sampling speed-up over the naive path"]
    assert sp["value"] == report["sampling"]["headline"]["speedup_vs_naive"] and sp["target"] == 1.8
    dr = by_name["DREAM / standard training step"]
    assert dr["value"] == report["training"]["dream_over_standard"]
    assert (dr["target"], dr["met"]) == (None, None) and "target is for fp32" in dr["detail"]  # bf16 training
    assert dr["value_cpu_time"] == report["training"]["dream_over_standard_cpu_time"]
    assert sp["value_cpu_time"] == report["sampling"]["headline"]["speedup_vs_naive_cpu_time"]


def test_check_targets_on_synthetic_reports() -> None:
    samp = {"headline": {"precision": "bf16", "batch": 4, "speedup_vs_naive": 2.0}}
    tr = {"dream_over_standard": 1.4, "batch": 8, "patch": 64, "precision": "fp32"}
    eff = {"sampling": [{"path": "default", "batch": 64, "precision": "bf16", "fraction_of_peak": 0.45,
                         "achieved_tflops": 355.0}]}
    out = bench.check_targets(torch.device("cpu"), {"preset": "small"},
                              {"sampling": samp, "training": tr, "efficiency": eff})
    assert [(t["value"], t["met"]) for t in out] == [(2.0, True), (1.4, False)]  # no peak target off sr3-div2k
    out = bench.check_targets(torch.device("cuda"), {"preset": "sr3-div2k"},
                              {"sampling": samp, "training": tr, "efficiency": eff})
    assert [(t["target"], t["met"]) for t in out] == [(5.0, False), (None, None), (0.40, True)]


# --- FLOPs ------------------------------------------------------------------------------------------------------

def _hook_flops(config: UNetConfig, batch: int, h: int, w: int) -> int:
    """Independent count: 2 x MACs of every Conv2d and Linear (from their shapes, by forward hooks on a real
    CPU forward) plus the two attention matmuls of each SelfAttention (q k^T and attn v: 2 x B x N^2 x C each)."""
    from dreamsr.families.sr3.unet import SelfAttention

    torch.manual_seed(0)
    model = UNet(config).eval()
    total = 0

    def conv(mod: torch.nn.Conv2d, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += 2 * out.numel() * (mod.in_channels // mod.groups) * kh * kw

    def lin(mod: torch.nn.Linear, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * mod.in_features

    def attn(mod: SelfAttention, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        b, c, hh, ww = inp[0].shape
        n = hh * ww
        total += 2 * (2 * b * n * n * c)

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(conv)
        elif isinstance(mod, torch.nn.Linear):
            mod.register_forward_hook(lin)
        elif isinstance(mod, SelfAttention):
            mod.register_forward_hook(attn)
    with torch.no_grad():
        model(torch.randn(batch, 3, h, w), torch.randn(batch, 3, h, w), torch.rand(batch))
    return total


@pytest.mark.parametrize("config, batch, h, w", [
    (PRESETS["tiny"], 2, 16, 16),
    (UNetConfig(inner_channels=4, channel_mults=(1, 2, 2), res_blocks=2, attention_levels=(1,), dropout=0.0,
                norm_groups=2), 3, 16, 24),
])
def test_forward_flops_equal_independent_count(config: UNetConfig, batch: int, h: int, w: int) -> None:
    assert forward_flops(config, batch, h, w) == _hook_flops(config, batch, h, w)


def test_tiny_forward_flops_pinned() -> None:
    # tiny preset, 2 x 16x16: 4,121,920 conv+linear FLOPs (hooks) + 262,144 attention FLOPs (8x8 tokens, 8 ch)
    assert forward_flops(PRESETS["tiny"], 2, 16) == 4_384_064


def test_dream_step_costs_one_more_forward() -> None:
    cfg = PRESETS["tiny"]
    std, dream = train_step_flops(cfg, 2, 16, math.inf), train_step_flops(cfg, 2, 16, 1.0)
    assert dream - std == forward_flops(cfg, 2, 16)  # Alg. 3: the extra no-grad pass
    assert 2.5 < std / forward_flops(cfg, 2, 16) < 3.0  # forward + backward (no grad w.r.t. the input images)


# --- memory, timing helpers, model -------------------------------------------------------------------------------

def test_peak_memory_sees_a_known_allocation() -> None:
    with PeakMemory(torch.device("cpu"), interval=0.001) as mem:
        x = torch.ones(64 * 2 ** 20, dtype=torch.float32)  # 256 MiB, every page touched
        x.add_(1)
        del x
    assert mem.kind == "peak_rss"
    assert mem.peak_bytes - mem.start_bytes >= 250 * 2 ** 20
    d = mem.as_dict()
    assert d["peak_mib"] - d["start_mib"] >= 250


def test_summarize() -> None:
    s = bench.summarize([3.0, 1.0, 2.0])
    assert (s["median_s"], s["min_s"], s["max_s"], s["n"], s["all_s"]) == (2.0, 1.0, 3.0, 3, [3.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        bench.summarize([])


def test_bench_image_deterministic_in_range() -> None:
    a, b = bench.bench_image(20, seed=3), bench.bench_image(20, seed=3)
    assert a.shape == (3, 20, 20) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and float(a.std()) > 0.05


def test_load_model_sources(tiny_checkpoint: Path) -> None:
    net, info, desc = bench.load_model(weights=str(tiny_checkpoint))
    assert desc["preset"] == "tiny" and desc["source"].startswith("weights:") and info.scale == 4
    assert desc["parameters"] == net.num_parameters()
    net2, info2, desc2 = bench.load_model(preset="small", scale=2, seed=5)
    assert desc2["preset"] == "small" and info2.scale == 2
    net3, _, _ = bench.load_model(preset="small", scale=2, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(net2.state_dict().values(), net3.state_dict().values()))
    with pytest.raises(ConfigError, match="exactly one"):
        bench.load_model(preset="tiny", weights=str(tiny_checkpoint))
    with pytest.raises(ConfigError, match="exactly one"):
        bench.load_model()
    with pytest.raises(ConfigError, match="unknown UNet preset"):
        bench.load_model(preset="huge")
    with pytest.raises(ModelNotFoundError):
        bench.load_model(weights=str(tiny_checkpoint.parent / "missing.safetensors"))


def test_match_preset() -> None:
    import dataclasses

    assert bench.match_preset(dataclasses.replace(PRESETS["small"], dropout=0.1, embed_scale=1000.0)) == "small"
    assert bench.match_preset(dataclasses.replace(PRESETS["small"], inner_channels=64)) is None


def test_bad_options_fail_before_work() -> None:
    with pytest.raises(ConfigError, match="unknown section"):
        BenchConfig(sections=("speed",))
    with pytest.raises(ConfigError, match="batch"):
        BenchConfig(batches=(0,))
    with pytest.raises(ConfigError, match="fp16"):
        run_bench(BenchConfig(device="cpu", precisions=("fp16",)), preset="tiny")
    with pytest.raises(ConfigError, match="sampler"):
        BenchConfig(sampler="euler")
    with pytest.raises(ConfigError, match="twice the overlap"):
        BenchConfig(tile=8, overlap=5)
    with pytest.raises(ConfigError, match="fp16"):
        run_bench(BenchConfig(device="cpu", train_precision="fp16"), preset="tiny")
    with pytest.raises(ConfigError, match="train patch 18"):
        run_bench(BenchConfig(device="cpu", train_patch=18), preset="tiny")


# --- CLI ----------------------------------------------------------------------------------------------------------

def _cli(args: list[str]):
    from dreamsr.cli import app

    return CliRunner().invoke(app, ["bench", *args])


def test_cli_writes_json_and_prints_tables(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "bench.json"
    res = _cli(["--preset", "tiny", "--device", "cpu", "--precision", "fp32", "--lr-size", "12", "--steps", "1",
                "--tile", "8", "--overlap", "2", "--batch", "2,4", "--repeats", "1", "--sections",
                "sampling,efficiency", "--train-batch", "2", "--train-patch", "16", "--threads", "1",
                "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [(r["path"], r["batch"]) for r in data["sampling"]["runs"]] == [("default", 2), ("default", 4),
                                                                            ("naive", 1)]
    assert data["training"] is None and data["efficiency"]["training"]["flops_per_step_dream"] > 0
    assert "sampling" in res.stdout and "efficiency" in res.stdout and "targets" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp64"], "--precision"),
    (["--sections", "speed"], "--sections"),
    (["--batch", "two"], "--batch"),
    (["--preset", "tiny", "--weights", "x.safetensors"], "only one"),
    (["--preset", "tiny", "--device", "cpu", "--precision", "fp16"], "fp16"),
    (["--preset", "tiny", "--repeats", "0"], "repeats"),
])
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    res = _cli(args)
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_cli_missing_weights_exit_1(tmp_path: Path) -> None:
    res = _cli(["--weights", str(tmp_path / "none.safetensors"), "--sections", "efficiency"])
    assert res.exit_code == 1 and "not found" in res.output


# --- precisions the hardware computes, sizes that fit -----------------------------------------------------------

def test_without_native_bf16_the_bench_skips_bf16_and_says_why(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _set_cpu_flags(monkeypatch, AVX2)
    out = tmp_path / "bench.json"
    res = _cli(["--preset", "tiny", "--device", "cpu", "--lr-size", "12", "--steps", "1", "--tile", "8", "--overlap",
                "2", "--batch", "2", "--repeats", "1", "--sections", "sampling,training", "--train-batch", "2",
                "--train-patch", "16", "--train-steps", "1", "--train-warmup", "0", "--train-rounds", "1",
                "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    sp, tr = data["sampling"], data["training"]
    assert [(r["path"], r["precision"]) for r in sp["runs"]] == [("default", "fp32"), ("naive", "fp32")]
    assert sp["precisions_supported"] == ["fp32"] and sp["emulated"] == []
    (skip,) = sp["skipped"]
    assert skip["precision"] == "bf16" and "avx512_bf16" in skip["reason"] and "emulated" in skip["reason"]
    assert sp["headline"]["precision"] == "fp32"
    assert tr["precision"] == "fp32" and "no native bf16" in tr["precision_reason"]
    assert data["machine"]["cpu_flags"] == ["avx2"] and data["machine"]["cpu_native_bf16"] is False
    text = " ".join(res.stdout.split())  # the tables, unwrapped
    assert "skipped bf16: this CPU has no native bf16" in text and "bf16 not native" in text
    # asked for by name it is timed, and marked as emulated
    r = run_bench(BenchConfig(device="cpu", sections=("sampling",), precisions=("bf16",), naive=False,
                              **dict(TINY, repeats=1)), preset="tiny")
    assert [x["precision"] for x in r["sampling"]["runs"]] == ["bf16"]
    assert r["sampling"]["emulated"] == ["bf16"] and r["sampling"]["skipped"] == []


def test_naive_path_repeats_on_its_own_count() -> None:
    r = run_bench(BenchConfig(device="cpu", sections=("sampling",), precisions=("fp32",),
                              **dict(TINY, repeats=3, naive_repeats=1)), preset="tiny")
    default, naive = r["sampling"]["runs"]
    assert (default["time"]["n"], naive["time"]["n"]) == (3, 1)
    assert default["speedup_vs_naive"] == pytest.approx(naive["time"]["all_s"][0] / default["time"]["median_s"])


@pytest.mark.parametrize("args, sizes", [
    ([], (64, 20, 3, 1)),
    (["--full"], (128, 50, 3, 3)),
    (["--full", "--steps", "7", "--naive-repeats", "2"], (128, 7, 3, 2)),
])
def test_full_gives_the_published_sizes_and_options_still_win(tmp_path: Path, args: list[str],
                                                              sizes: tuple) -> None:
    out = tmp_path / "b.json"
    res = _cli(["--preset", "tiny", "--device", "cpu", "--sections", "efficiency", "--train-batch", "2",
                "--train-patch", "16", "--json", str(out), "--quiet", *args])
    assert res.exit_code == 0, res.output
    c = json.loads(out.read_text())["config"]
    assert (c["lr_size"], c["steps"], c["repeats"], c["naive_repeats"]) == sizes
    assert sizes[:2] == ((BenchConfig.lr_size, BenchConfig.steps) if not args else (128, sizes[1]))


def test_default_bench_fits_five_minutes_on_two_avx2_cores() -> None:
    """Closed-form cost of `dreamsr bench --suite sr3` (no other option) on a CPU without native bf16, from one
    measured rate: 0.26 s per 160x160 tile forward of the small UNet in fp32 on two AVX2 cores. Training steps are
    costed at the same FLOP rate (their FLOPs counted like the efficiency section), plus 5 s per training run for start-up,
    checkpoint and export. The old defaults (128 px, 50 steps, bf16 emulated) came to over half an hour."""
    cfg = BenchConfig()
    grid = make_grid(cfg.lr_size, cfg.lr_size, cfg.sampling().tile, cfg.sampling().overlap)
    tiles = len(grid)
    assert grid.scaled(4).tile_h == 160  # tiles of the measured size
    s_per_tile = 0.26
    paths = 1 + int(cfg.naive)  # fp32 default path + naive: bf16 is skipped without native support
    warmup = paths * tiles * 1  # one-step upscales
    timed = tiles * cfg.steps * (cfg.repeats * len(cfg.batches) + cfg.naive_repeats)
    sampling_s = (warmup + timed) * s_per_tile
    rate = forward_flops(PRESETS["small"], 1, 160) / s_per_tile  # FLOP/s
    steps = (cfg.train_warmup + cfg.train_steps) * cfg.train_rounds
    training_s = sum(steps * train_step_flops(PRESETS["small"], cfg.train_batch, cfg.train_patch, p) / rate
                     for p in (math.inf, 1.0)) + 2 * cfg.train_rounds * 5.0
    assert sampling_s + training_s < 5 * 60, (sampling_s, training_s)
    # the old defaults: 16 tiles, 50 steps, 3 repeats of fp32 + emulated bf16 (~4x fp32) + naive
    old = 16 * 50 * 3 * (1 + 4 + 1) * s_per_tile
    assert old > 30 * 60
