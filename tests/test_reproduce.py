"""scripts/reproduce (the package): the CI-sized profile end to end (every JSON, figure and the report, resumed runs
skipped), and the analysis pinned by hand-computed numbers (speed-ups, paired differences, E4's MSEs)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scripts.reproduce as R
from scripts.reproduce import resshift as RS
from tests._helpers import copy_photos

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("e1_p_sweep", "e2_convergence", "e3_sampling_steps", "e4_discrepancy", "e5_residual")
pytestmark = pytest.mark.usefixtures("one_thread")


def _corpus(root: Path, train: tuple[str, ...] = ("chelsea.png", "coffee.png"),
            val: tuple[str, ...] = ("astronaut.png",)) -> Path:
    copy_photos(root / "train", train)
    copy_photos(root / "val", val)
    return root


# ------------------------------------------------------------------------------------------- pure analysis
def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_speedup_from_synthetic_metrics_jsonl(tmp_path: Path) -> None:
    # p = inf: final validation PSNR 23.0 at step 400. p = 1 first reaches 23.0 at step 300 -> 400 / 300.
    ref = _write_jsonl(tmp_path / "inf.jsonl", [
        {"step": 10, "loss": 0.5, "elapsed": 10.0},
        {"event": "val", "step": 100, "psnr": 20.0, "psnr_rgb": 19.0},
        {"event": "val", "step": 200, "psnr": 21.0, "psnr_rgb": 20.0},
        {"step": 200, "loss": 0.4, "elapsed": 20.0},
        {"event": "resume", "step": 200, "from": "x"},
        {"event": "val", "step": 300, "psnr": 22.0, "psnr_rgb": 21.0},
        {"step": 300, "loss": 0.3, "elapsed": 5.0},
        {"event": "val", "step": 400, "psnr": 23.0, "psnr_rgb": 22.0},
        {"step": 400, "loss": 0.3, "elapsed": 15.0},
    ])
    fast = _write_jsonl(tmp_path / "p1.jsonl", [
        {"event": "val", "step": 100, "psnr": 21.0, "psnr_rgb": 20.0},
        {"event": "val", "step": 200, "psnr": 22.5, "psnr_rgb": 21.0},
        {"event": "val", "step": 300, "psnr": 22.9, "psnr_rgb": 21.5},  # superseded by the resumed run's repeat
        {"event": "resume", "step": 200, "from": "x"},
        {"event": "val", "step": 300, "psnr": 23.1, "psnr_rgb": 21.5},
        {"event": "val", "step": 400, "psnr": 24.0, "psnr_rgb": 22.5},
    ])
    c_ref, c_fast = R.read_val_curve(ref), R.read_val_curve(fast)
    assert c_fast == [(100, 21.0), (200, 22.5), (300, 23.1), (400, 24.0)]
    sp = R.convergence_speedup(c_fast, c_ref)
    assert sp == {"ref_final_step": 400, "ref_final": 23.0, "reach_step": 300, "speedup": pytest.approx(4 / 3)}
    # RGB: p = inf ends at 22.0; p = 1 gets there at step 400 -> no speed-up
    sp_rgb = R.convergence_speedup(R.read_val_curve(fast, "psnr_rgb"), R.read_val_curve(ref, "psnr_rgb"))
    assert (sp_rgb["reach_step"], sp_rgb["speedup"]) == (400, 1.0)
    # never reached
    assert R.convergence_speedup([(100, 1.0)], c_ref)["speedup"] is None
    # training time: 20 s before the resume + 15 s after it
    assert R.train_seconds(ref) == pytest.approx(35.0)


def test_up_to_best_cuts_a_falling_curve_at_its_first_peak() -> None:
    assert R.up_to_best([(1, 10.0), (2, 14.0), (3, 12.0), (4, 14.0), (5, 9.0)]) == [(1, 10.0), (2, 14.0)]
    assert R.up_to_best([(1, 1.0), (2, 2.0)]) == [(1, 1.0), (2, 2.0)]
    assert R.up_to_best([]) == []
    # against a peak, p = 1 must reach the peak, not the lower final value
    fast = [(1, 11.0), (2, 13.0), (3, 14.5)]
    ref = [(1, 10.0), (2, 14.0), (3, 12.0)]
    assert R.convergence_speedup(fast, ref)["reach_step"] == 2
    assert R.convergence_speedup(fast, R.up_to_best(ref)) == {"ref_final_step": 2, "ref_final": 14.0,
                                                              "reach_step": 3, "speedup": pytest.approx(2 / 3)}


def test_steps_to_match() -> None:
    ref = {5: 19.0, 100: 21.5, 1000: 22.0}
    m = R.steps_to_match({5: 20.0, 10: 21.0, 100: 22.5, 1000: 23.0}, ref)
    assert m == {"ref_steps": 1000, "ref_value": 22.0, "match_steps": 100, "speedup": 10.0}
    assert R.steps_to_match({5: 20.0, 1000: 21.9}, ref)["speedup"] is None


def test_paired_difference() -> None:
    d = R.paired_difference({"a": 1.0, "b": 3.0, "c": 5.0, "only_a": 9.0}, {"a": 0.0, "b": 1.0, "c": 2.0})
    # differences 1, 2, 3: mean 2, sample std 1, SE 1/sqrt(3); 2 > 2 SE
    assert d["n"] == 3 and d["mean"] == pytest.approx(2.0) and d["se"] == pytest.approx(1 / math.sqrt(3))
    assert d["significant"] is True
    assert R.paired_difference({"a": 1.0}, {"a": 0.5})["significant"] is None


def test_held_out_crops_round_robin(tmp_path: Path) -> None:
    val = _corpus(tmp_path / "c", train=(), val=("astronaut.png", "chelsea.png")) / "val"
    crops = R.held_out_crops(val, 3, 64)
    # astronaut 512x512: cells at multiples of 64, the four nearest the centre (224, 224) 32 px away in y and x,
    # ties broken by position; chelsea 451x300: a 7x4 grid offset by (22, 1), nearest (118, 193.5): y 86 or 150
    assert [n for n, _ in crops] == ["000_astronaut_192_192", "001_chelsea_86_193", "002_astronaut_192_256"]
    from dreamsr.images import load_rgb

    assert torch.equal(crops[0][1], load_rgb(val / "astronaut.png")[:, 192:256, 192:256])


def test_a_run_trained_past_the_profile_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "image_p1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000048.safetensors").write_bytes(b"")
    assert R.run_finished(run, 64) is False  # unfinished: train() resumes it
    with pytest.raises(SystemExit, match="trained to 48 steps, more than the 24"):
        R.run_finished(run, 24)


# ------------------------------------------------------------------------------------------- E4
@pytest.mark.parametrize("target", ["image", "residual"])
def test_e4_final_step_matches_direct_computation(tmp_path: Path, target: str) -> None:
    from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
    from dreamsr.diffusion import DiffusionConfig, Schedule
    from dreamsr.images import downsample, to_model, upsample
    from dreamsr.samplers import ddpm_sample
    from dreamsr.families.sr3.unet import PRESETS, UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = UNet(PRESETS["tiny"])
    ckpt = save_checkpoint(tmp_path / "m.safetensors", net,
                           CheckpointInfo(network=net.config, diffusion=DiffusionConfig(target=target), scale=4))
    val = _corpus(tmp_path / "c", train=(), val=("coffee.png",)) / "val"
    images = [img for _, img in R.held_out_crops(val, 2, 16)]
    res = R.discrepancy(ckpt, images, steps=3, seed=0, device="cpu", precision="fp32")
    assert res["t"] == [1, 1000, 2000] and res["images"] == 2

    model, info = load_checkpoint(ckpt)
    diff = info.diffusion
    sched = Schedule(diff).respace(3)
    hr = torch.stack(images)
    lr = downsample(hr, 4).clamp(0, 1).mul(255).round().div(255)
    x0 = upsample(to_model(lr), 4)
    y0 = diff.to_target(to_model(hr), x0)
    with torch.no_grad():
        # "training" at the final step t = 1: Eq. (3) from the ground truth, then Eq. (8), clipped
        gamma = torch.full((2,), float(sched.alpha_bar[0]) ** 0.5)
        eps = torch.stack([R.e4_train_noise(0, 0, i, (3, 16, 16)) for i in range(2)])
        y_t = gamma.view(-1, 1, 1, 1) * y0 + (1 - gamma.view(-1, 1, 1, 1) ** 2).sqrt() * eps
        y0_hat = ((y_t - (1 - gamma.view(-1, 1, 1, 1) ** 2).sqrt() * model(y_t, x0, gamma))
                  / gamma.view(-1, 1, 1, 1)).clamp(-1, 1)
        mse = ((diff.from_target(y0_hat, x0) - to_model(hr)) / 2).pow(2).mean(dim=(1, 2, 3))
        assert res["train_mean"][0] == pytest.approx(float(mse.mean()), rel=1e-5)
        assert res["train_std"][0] == pytest.approx(float(mse.std()), rel=1e-4)
        # "sampling" at the final step is the sampler's output itself (the last posterior mean is x0_hat)
        gens = R.e4_sample_generators(0, 2)
        noise = torch.stack([torch.randn((3, 16, 16), generator=g) for g in gens])
        out = ddpm_sample(lambda y, g: model(y, x0, g), noise, Schedule(diff), 3, generator=gens)
        mse_s = ((diff.from_target(out, x0) - to_model(hr)) / 2).pow(2).mean(dim=(1, 2, 3))
    assert res["sample_mean"][0] == pytest.approx(float(mse_s.mean()), rel=1e-5)
    s = res["summary"]
    assert s["gap_mean_over_t"] == pytest.approx(
        sum(a - b for a, b in zip(res["sample_mean"], res["train_mean"])) / 3)


# ------------------------------------------------------------------------------------------- end to end
def _table(md: str, heading: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table after ``heading``, header and separator dropped."""
    part = md.split(heading, 1)[1]
    rows, started = [], False
    for line in part.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif started:
            break
    return rows[2:]


def _cell(entry: dict | None, digits: int) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    s = f"{entry['mean']:.{digits}f}"
    return s + (f" ± {entry['std']:.{digits}f}" if entry.get("std") is not None else "")


DIG = {"psnr_rgb": 2, "psnr_y": 2, "ssim_rgb": 4, "ssim_y": 4, "consistency": 3, "lpips": 4, "fid": 2}


def test_ci_profile_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    logs: list[str] = []
    res = R.reproduce(R.PROFILES["ci"], out, data, device="cpu", log=logs.append, command="test")

    # every JSON, figure and the report
    for name in EXPERIMENTS:
        assert (out / f"{name}.json").is_file()
    info = json.loads((out / "run_info.json").read_text())
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    assert set(info["figures"]) == {"e1", "e2", "e3", "e4", "e5"}
    for fig in info["figures"].values():
        assert (fig is not None) == has_mpl
        if fig:
            assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = res["doc"]
    assert doc == out / "reproduction.md"
    md = doc.read_text()
    assert "This is a `ci` run" in md and "The full profile was not run in this session" in md
    assert "python scripts/reproduce --profile full" in md
    assert str(Path.home()).rstrip("/") + "/" not in md  # e.g. the metric weights' cache folder, written as ~

    # the numbers in the report are the JSONs'
    e1 = json.loads((out / "e1_p_sweep.json").read_text())
    rows = _table(md, "## E1")
    assert [r[0] for r in rows] == ["0 (DRM)", "1 (DREAM)", "2 (DREAM)", "∞ (standard)", "bicubic"]
    for cells, row in zip(rows, e1["rows"]):
        assert cells[1:8] == [_cell(row["metrics"].get(c), DIG[c]) for c in DIG]
    psnr = {r["p"]: r["metrics"]["psnr_rgb"]["mean"] for r in e1["rows"] if r["p"]}
    best = max(psnr, key=psnr.get)
    assert e1["checks"][0]["holds"] == (best == "0")
    assert f"| {e1['checks'][0]['claim']} | **{'yes' if best == '0' else 'no'}** |" in md

    e2 = json.loads((out / "e2_convergence.json").read_text())
    rows2 = _table(md, "## E2")
    assert [r[0] for r in rows2] == ["image target, p = ∞ final", "image target, p = ∞ best",
                                     "residual target, p = ∞ final", "residual target, p = ∞ best"]
    for row2, sp in zip(rows2, (e2["speedup"], e2["speedup_best"], e2["residual"]["speedup"],
                                e2["residual"]["speedup_best"])):
        assert row2[1:] == [str(sp["ref_final_step"]), f"{sp['ref_final']:.2f}", str(sp["reach_step"] or "never"),
                            f"×{sp['speedup']:.2f}" if sp["speedup"] else "-"]
    ref = e2["curves"]["p=inf"]
    assert e2["speedup_best"]["ref_final"] == max(v for _, v in ref)
    shapes = md.split("## E2", 1)[1].split("| run | PSNR peak", 1)[1]
    assert set(e2["shapes"]) == {s.name for s in R.RUNS}
    sh = e2["shapes"]["image_pinf"]
    assert (sh["peak"], sh["last"]) == (max(v for _, v in ref), ref[-1][1]) and sh["last_step"] == 24
    assert f"| image_pinf | {sh['peak']:.2f} | {sh['peak_step']} | {sh['last']:.2f} |" in shapes
    assert [s for s, _ in e2["curves"]["p=1"]] == [12, 24]  # val_every 12 over 24 steps

    e3 = json.loads((out / "e3_sampling_steps.json").read_text())
    rows3 = _table(md, "## E3")
    assert len(rows3) == 4
    for cells, c in zip(rows3, e3["curves"]):
        assert cells[2:] == [f"{c['values'][str(s)]['psnr_rgb']:.2f} / {c['values'][str(s)]['ssim_rgb']:.4f}"
                             for s in (2, 4)]

    e4 = json.loads((out / "e4_discrepancy.json").read_text())
    rows4 = _table(md, "## E4")
    for cells, m in zip(rows4, e4["models"]):
        s = m["summary"]
        assert cells[:4] == [m["p"], f"{s['train_mean_over_t']:.3e}", f"{s['sample_mean_over_t']:.3e}",
                             f"{s['gap_mean_over_t']:.3e}"]
        assert len(m["t"]) == 4 and m["t"][0] == 1 and m["t"][-1] == 2000

    e5 = json.loads((out / "e5_residual.json").read_text())
    rows5 = _table(md, "## E5")
    assert [r[0] for r in rows5] == ["1 (DREAM), image", "∞ (standard), image", "1 (DREAM), residual",
                                     "∞ (standard), residual"]
    for cells, row in zip(rows5, e5["rows"]):
        assert cells[1:6] == [_cell(row["metrics"].get(c), DIG[c]) for c in list(DIG)[:5]]
    g = e5["gain_psnr_rgb"]["residual"]
    assert f"residual target {g['mean']:.3f} ± {g['se']:.3f} dB" in md

    # resumed: nothing is retrained or re-evaluated unless its result is gone; without matplotlib the figures
    # are skipped with a note instead of failing
    (out / "evals" / "table" / "image_p2" / "summary.json").unlink()
    monkeypatch.setattr(R.figures, "pyplot", lambda: None)
    logs.clear()
    R.reproduce(R.PROFILES["ci"], out, data, device="cpu", log=logs.append, command="test again")
    ran = [m for m in logs if not m.endswith("skipped") and not m.startswith("  ")]
    assert ran == ["eval image_p2: ddim 2 steps on 2 crop(s)"]
    again = json.loads((out / "e1_p_sweep.json").read_text())["rows"]
    assert [(r["metrics"], r["per_image"]) for r in again] == [(r["metrics"], r["per_image"]) for r in e1["rows"]]
    info = json.loads((out / "run_info.json").read_text())
    assert len(info["invocations"]) == 2 and not any(info["figures"].values())
    md2 = (out / "reproduction.md").read_text()
    assert md2.count(R.NO_PLOT) == 5
    # 24 steps of a tiny UNet: the report says the models compared are below bicubic
    assert re.search(r"- Quality: image_\w+ \(-\d+\.\d\d dB\).* below bicubic in PSNR \(Y\) after 24 steps", md2)
    assert _table(md2, "## E1") == rows

    # --doc-only draws the figures again from the JSONs; a report elsewhere gets them copied beside it
    monkeypatch.undo()
    doc2 = R.render(out, tmp_path / "docs" / "reproduction.md", redraw=True)
    text = doc2.read_text()
    if has_mpl:
        figures = json.loads((out / "run_info.json").read_text())["figures"]
        assert figures == {k: f"{n}.png" for k, n in zip(("e1", "e2", "e3", "e4", "e5"), EXPERIMENTS)}
        assert "](reproduction/e1_p_sweep.png)" in text and R.NO_PLOT not in text
        assert (tmp_path / "docs" / "reproduction" / "e4_discrepancy.png").is_file()
    assert re.search(r"wall time per invocation: .*`ci` \d+s \(\d+ threads?, \w+\); .*`ci` \d+s", text)

    # with the ResShift rows spliced in, the SR3 report renders exactly as without them
    res = RS.collect(_fake_resshift_work(tmp_path / "exp"), RS.RESSHIFT_PROFILES["full"])
    with_rows = R.render(out, tmp_path / "docs" / "reproduction.md", resshift=res).read_text()
    assert with_rows != text and RS.strip(with_rows) == text
    assert with_rows.index("## E1:") < with_rows.index("### E1 on ResShift") < with_rows.index("## E2:")
    assert (tmp_path / "docs" / "reproduction" / "resshift.json").is_file()


def test_train_only_trains_the_named_runs_and_nothing_else(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--profile", "ci", "--out", str(out), "--data-dir", str(data), "--device", "cpu", "--workers", "0"]
    assert R.main([*argv, "--train-only", "image_p0,residual_p1"]) == 0
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["image_p0", "residual_p1"]
    steps = R.PROFILES["ci"].steps
    # finished as the plain invocation would check it, so that one only evaluates them
    assert R.run_finished(runs / "image_p0", steps) and R.run_finished(runs / "residual_p1", steps)
    assert not (out / "e1_p_sweep.json").exists()
    # recorded, so the report can state the training processes' commands and wall time
    (inv,) = json.loads((out / "run_info.json").read_text())["invocations"]
    assert inv["train_only"] == ["image_p0", "residual_p1"] and "--train-only image_p0,residual_p1" in inv["command"]
    assert inv["wall_seconds"] > 0 and inv["hardware"]["threads"] >= 1
    with pytest.raises(SystemExit) as exc:
        R.main([*argv, "--train-only", "image_p3"])
    assert exc.value.code == 2


def test_partial_curves_compare_unfinished_runs_at_equal_steps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    val = lambda step, psnr: {"event": "val", "step": step, "psnr": psnr, "bicubic_psnr": 25.0}  # noqa: E731
    # p = inf peaks at step 200 (18.0) and falls; p = 1 validated one step further, which must be cut off
    curves = {"image_pinf": [(100, 15.0), (200, 18.0), (300, 16.0)],
              "image_p1": [(100, 17.0), (200, 19.0), (300, 18.5), (400, 30.0)]}
    for name, pts in curves.items():
        (out / "runs" / name).mkdir(parents=True)
        _write_jsonl(out / "runs" / name / "metrics.jsonl",
                     [*(val(s, v) for s, v in pts), {"step": pts[-1][0] + 7, "loss": 0.1}])
    doc = R.partial_curves(out, tmp_path / "docs" / "partial.md", R.PROFILES["full"], "where it ran")
    res = json.loads(doc.with_suffix(".json").read_text())
    assert res["common_step"] == 300 and res["reached"] == {"image_p1": 407, "image_pinf": 307}
    pair = res["pairs"]["image_p1_vs_image_pinf"]
    # p = inf's last value (16.0 at 300) is first reached by p = 1 at step 100; its best (18.0 at 200) at step 200
    assert pair["final"]["reach_step"] == 100 and pair["final"]["speedup"] == 3.0
    assert pair["ref_best"] == 18.0 and pair["reach_best"] == 200 and pair["fast_above_ref_at"] == 3
    md = doc.read_text()
    assert "> where it ran" in md and "| 300 | 18.50 | 16.00 |" in md and "30.00" not in md
    assert "image_pinf: peak 18.00 dB at step 200, last 16.00 dB at step 300 (-9.00 dB vs bicubic)" in md


def test_only_shares_the_evaluations_between_processes(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--profile", "ci", "--out", str(out), "--data-dir", str(data), "--device", "cpu", "--workers", "0"]
    # never trains: refused while a run is unfinished (another process may be training it)
    assert R.main([*argv, "--train-only", "image_p1"]) == 0
    with pytest.raises(SystemExit, match="still training: image_p0, image_p2"):
        R.main([*argv, "--only", "steps"])
    with pytest.raises(SystemExit, match="choose from table, steps, discrepancy"):
        R.main([*argv, "--only", "tables"])
    assert R.main([*argv, "--train-only", ",".join(s.name for s in R.RUNS)]) == 0

    assert R.main([*argv, "--only", "steps"]) == 0
    prof = R.PROFILES["ci"]
    assert len(list((out / "evals" / "steps").iterdir())) == 2 * len(prof.e3_samplers) * len(prof.e3_steps)
    assert not (out / "evals" / "table").exists() and not (out / "evals" / "discrepancy").exists()
    assert not (out / "e1_p_sweep.json").exists() and not (out / "reproduction.md").exists()
    assert R.main([*argv, "--only", "table,discrepancy"]) == 0
    assert len(list((out / "evals" / "table").iterdir())) == len(R.RUNS) + 1  # + bicubic
    assert len(list((out / "evals" / "discrepancy").glob("*.json"))) == 2

    # the plain invocation finds every evaluation done and only reports
    logs: list[str] = []
    R.reproduce(prof, out, data, device="cpu", workers=0, log=logs.append, command="report")
    assert logs and all(m.endswith("skipped") for m in logs if not m.startswith("  "))
    info = json.loads((out / "run_info.json").read_text())
    assert [inv.get("only") for inv in info["invocations"]] == [None, None, ["steps"], ["discrepancy", "table"], None]
    assert [inv.get("train_only") for inv in info["invocations"]][:2] == [["image_p1"], [s.name for s in R.RUNS]]
    md = (out / "reproduction.md").read_text()
    assert "(steps only)" in md and "(discrepancy, table only)" in md and "(train image_p1 only)" in md
    # the setting describes the reporting invocation, not the last training or evaluation process
    assert "report" in md.split("commands: ")[1]
    assert info["invocations"][-1]["command"] == "report"


# ------------------------------------------------------------------------------------------- the package
@pytest.mark.parametrize("how", ["folder", "module"])
def test_documented_command_runs_the_package(tmp_path: Path, how: str) -> None:
    # `python scripts/reproduce ...` from any folder, `python -m scripts.reproduce ...` from the repository root
    cmd, cwd = (([sys.executable, str(ROOT / "scripts" / "reproduce")], tmp_path) if how == "folder"
                else ([sys.executable, "-m", "scripts.reproduce"], ROOT))
    r = subprocess.run([*cmd, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python scripts/reproduce [-h] [--profile {ci,full,smoke}]")
    assert "--train-only RUNS" in r.stdout and "image_pinf" in r.stdout
    r = subprocess.run([*cmd, "--profile", "ci", "--out", str(tmp_path / "o"), "--train-only", "image_p3"], cwd=cwd,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown run(s) image_p3" in r.stderr


def test_package_imports_only_public_dreamsr_names() -> None:
    private = []
    for path in sorted((ROOT / "scripts" / "reproduce").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dreamsr"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                            and a.name != "__version__"]
                if any(part.startswith("_") for part in node.module.split(".")):
                    private.append(f"{path.name}: {node.module}")
    assert private == []


def test_report_writes_home_folders_as_tilde() -> None:
    from scripts.reproduce.common import without_home

    text = ("not found in /root/.cache/torch/hub/checkpoints; `--out /home/bob/runs/x`, /srv/alice/y and /srv/alice; "
            "kept: /work/root/z, /rooted, /srv/alicex, https://example.org/home/bob/f, /home")
    assert without_home(text, home="/srv/alice") == (
        "not found in ~/.cache/torch/hub/checkpoints; `--out ~/runs/x`, ~/y and ~; "
        "kept: /work/root/z, /rooted, /srv/alicex, https://example.org/home/bob/f, /home")


# ------------------------------------------------------------------------------------------- ResShift rows

_COLS = ("psnr_y", "ssim_y", "haarpsi", "hf")
_T975 = {1: 12.706, 2: 4.303}  # Student t, 0.975 quantile, by degrees of freedom


def _fake_resshift_work(work: Path, arms: dict[str, tuple[int, ...]] | None = None, T: int = 15) -> Path:
    """A work folder of evaluations in evaluate.py's schema (eval/<arm>-s<seed>/<task>.json), no training."""
    arms = arms or {"pinf": (1, 2, 3), "p1": (1, 2, 3), "p0": (1, 2)}
    offset = {"pinf": 0.0, "p1": 0.11, "p0": -0.07}
    scale = {"psnr_y": 1.0, "ssim_y": 0.01, "haarpsi": 0.01, "hf": 0.002}
    base = {"psnr_y": 25.0, "ssim_y": 0.70, "haarpsi": 0.64, "hf": 0.08}

    def metrics(arm: str, seed: int, k: int, samples: int) -> dict:
        out = {}
        for c in _COLS:
            per = [base[c] + scale[c] * (offset[arm] + 0.013 * seed ** 2 + 0.02 * k + 0.005 * j * seed)
                   for j in range(samples)]
            out[c] = {"mean": sum(per) / len(per), "per_seed_mean": per}
        return out

    for arm, seeds in arms.items():
        for s in seeds:
            d = work / "eval" / f"{arm}-s{s}"
            d.mkdir(parents=True)
            for k in (1, 2, 4, 8, 15):
                (d / f"final-k{k}.json").write_text(json.dumps(
                    {"weights": "w", "steps": k, "seeds": 4, "back_project": False, "ensemble": 1, "images": 7,
                     "metrics": metrics(arm, s, k, 4)}, indent=1))
            for step in (1000, 2000):
                for k in (1, 15):
                    m = metrics(arm, s, k, 1)
                    for c in _COLS:  # earlier states are worse
                        v = m[c]["mean"] - (3000 - step) / 1000
                        m[c] = {"mean": v, "per_seed_mean": [v]}
                    (d / f"curve-{step}-k{k}.json").write_text(json.dumps(
                        {"weights": "w", "steps": k, "seeds": 1, "back_project": False, "ensemble": 1, "images": 7,
                         "metrics": m, "train_step": step}))
            true = [25.6 - 0.05 * t + 0.01 * s for t in range(T)]
            chain = [v - (0.2 + 0.01 * t * s + offset[arm]) for t, v in enumerate(true)]
            (d / "diag.json").write_text(json.dumps({"weights": "w", "t": list(range(1, T + 1)),
                                                     "psnr_y_true_xt": true, "psnr_y_chain": chain, "images": 7}))
    (work / "eval" / "bicubic.json").write_text(json.dumps({"psnr_y": 26.31, "ssim_y": 0.7541, "haarpsi": 0.7387,
                                                            "hf": 0.0741}))
    return work


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _interval_text(diffs: list[float], fmt: str) -> str:
    n, m = len(diffs), _mean(diffs)
    if n < 2:
        return fmt.format(m) + " (1 seed)"
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1))
    half = _T975[n - 1] * sd / math.sqrt(n)
    return f"{fmt.format(m)} [{fmt.format(m - half)}, {fmt.format(m + half)}]"


def test_resshift_rows_from_a_fake_work_folder(tmp_path: Path) -> None:
    work = _fake_resshift_work(tmp_path / "exp")
    ev = lambda arm, s, task: json.loads((work / "eval" / f"{arm}-s{s}" / f"{task}.json").read_text())  # noqa: E731
    seeds = {"pinf": (1, 2, 3), "p1": (1, 2, 3), "p0": (1, 2)}
    sr3 = RS.strip((ROOT / "docs" / "reproduction.md").read_text())  # the committed report's SR3 text
    assert "## E4:" in sr3 and "resshift:" not in sr3
    doc = tmp_path / "docs" / "reproduction.md"
    doc.parent.mkdir()
    doc.write_text(sr3)
    # the committed report's SR3 results are not at hand (no OUT): its SR3 text is kept, the rows spliced in
    argv = ["--doc-only", "--resshift-work", str(work), "--doc", str(doc), "--out", str(tmp_path / "no-sr3"),
            "--data-dir", str(tmp_path / "no-corpus")]
    assert R.main(argv) == 0
    md = doc.read_text()
    assert RS.strip(md) == sr3 and md != sr3  # the SR3 part byte for byte
    for key in RS.KEYS:
        assert md.count(f"<!-- resshift:{key} ") == 1 and md.count(f"<!-- /resshift:{key} -->") == 1
    # beside the SR3 sections: each block at the end of its section
    order = [md.index(h) for h in ("## Setting", "### The ResShift rows", "## E1:", "### E1 on ResShift", "## E2:",
                                   "### E2 on ResShift", "## E3:", "### E3 on ResShift", "## E4:",
                                   "### E4 on ResShift", "## E5:")]
    assert order == sorted(order)
    # provenance and seed counts said plainly
    assert "These rows come from [the paired DREAM experiment](" in md
    link = md.split("These rows come from [the paired DREAM experiment](", 1)[1].split(")", 1)[0]
    assert (doc.parent / link).resolve() == (ROOT / "docs" / "experiments" / "dream-resshift.md").resolve()
    assert "evaluated so far: 8 of the 12 planned runs (p0: seeds 1, 2; p1: seeds 1, 2, 3; pinf: seeds 1, 2, 3)" in md
    assert RS.RENDER_COMMAND in md
    assert "against bicubic (26.31 dB PSNR-Y on these crops): after 3000 steps 3 of the 3 arms evaluated are still " \
           "below it at K = 15" in md

    # E1: means over seeds at K = 15 and 1, bicubic, and the seed-paired differences with 95 % intervals
    fmt = {"psnr_y": "{:.2f}", "ssim_y": "{:.4f}", "haarpsi": "{:.4f}", "hf": "{:.3f}"}
    dfmt = {"psnr_y": "{:+.3f}", "ssim_y": "{:+.4f}", "haarpsi": "{:+.4f}", "hf": "{:+.3f}"}
    label = {"p0": "p = 0 (DRM)", "p1": "p = 1 (DREAM, input λ)", "pinf": "p = inf (standard)"}
    rows = _table(md, "### E1 on ResShift")
    assert rows[0] == ["bicubic", "-", "-", "26.31", "0.7541", "0.7387", "0.074"]
    want = [[label[a], str(k), str(len(seeds[a]))]
            + [fmt[c].format(_mean([ev(a, s, f"final-k{k}")["metrics"][c]["mean"] for s in seeds[a]])) for c in _COLS]
            for k in (15, 1) for a in ("p0", "p1", "pinf")]
    assert rows[1:] == want
    diffs = _table(md, "Seed-paired differences")
    want = []
    for a, b in (("p1", "pinf"), ("p0", "pinf"), ("p1", "p0")):
        for k in (15, 1):
            common = sorted(set(seeds[a]) & set(seeds[b]))
            want.append([f"{a} − {b}", str(k), str(len(common))] + [_interval_text(
                [ev(a, s, f"final-k{k}")["metrics"][c]["mean"] - ev(b, s, f"final-k{k}")["metrics"][c]["mean"]
                 for s in common], dfmt[c]) for c in _COLS])
    assert diffs == want
    assert want[0][3].count("[") == 1 and "(1 seed)" not in md.split("### E2 on ResShift")[0].split("### E1 on")[1]

    # E2: PSNR-Y at 1000 / 2000 / 3000 steps (the last: the final weights' sampling seed 0), K = 1 and 15
    rows = _table(md, "### E2 on ResShift")
    psnr = lambda a, s, step, k: (ev(a, s, f"curve-{step}-k{k}")["metrics"]["psnr_y"]["mean"] if step < 3000  # noqa
                                  else ev(a, s, f"final-k{k}")["metrics"]["psnr_y"]["per_seed_mean"][0])
    want = [[label[a], str(k), str(len(seeds[a]))]
            + [f"{_mean([psnr(a, s, st, k) for s in seeds[a]]):.2f}" for st in (1000, 2000, 3000)]
            for k in (1, 15) for a in ("p0", "p1", "pinf")]
    for k in (1, 15):
        want.append(["p1 − pinf", str(k), "3"] + [_interval_text(
            [psnr("p1", s, st, k) - psnr("pinf", s, st, k) for s in (1, 2, 3)], "{:+.3f}") for st in (1000, 2000, 3000)])
    assert sorted(rows) == sorted(want) and len(rows) == 8

    # E3: PSNR-Y and HaarPSI at K = 1, 2, 4, 8, 15, and p1 − pinf
    rows = _table(md, "### E3 on ResShift")
    ks = (1, 2, 4, 8, 15)
    for c, head in (("psnr_y", "PSNR-Y"), ("haarpsi", "HaarPSI")):
        for a in ("p0", "p1", "pinf"):
            assert [label[a], head, str(len(seeds[a]))] + [fmt[c].format(_mean(
                [ev(a, s, f"final-k{k}")["metrics"][c]["mean"] for s in seeds[a]])) for k in ks] in rows
        assert ["p1 − pinf", head, "3"] + [_interval_text(
            [ev("p1", s, f"final-k{k}")["metrics"][c]["mean"] - ev("pinf", s, f"final-k{k}")["metrics"][c]["mean"]
             for s in (1, 2, 3)], dfmt[c]) for k in ks] in rows

    # E4: the Fig. 3 gap (true x_t − chain) per t, mean over seeds, and the seed-paired difference of the gaps
    rows = _table(md, "### E4 on ResShift")
    assert [r[0] for r in rows] == [str(t) for t in range(15, 0, -1)] + ["mean"]
    gap = lambda a, s: [x - y for x, y in zip(ev(a, s, "diag")["psnr_y_true_xt"],  # noqa: E731
                                              ev(a, s, "diag")["psnr_y_chain"])]
    for i, t in enumerate(range(15, 0, -1)):
        assert rows[i][1:4] == [f"{_mean([gap(a, s)[t - 1] for s in seeds[a]]):+.3f}" for a in ("p0", "p1", "pinf")]
        assert rows[i][4] == _interval_text([gap("p1", s)[t - 1] - gap("pinf", s)[t - 1] for s in (1, 2, 3)],
                                            "{:+.3f}")
        assert rows[i][5] == _interval_text([gap("p0", s)[t - 1] - gap("pinf", s)[t - 1] for s in (1, 2)], "{:+.3f}")
    assert rows[-1][2] == f"{_mean([_mean(gap('p1', s)[:14]) for s in (1, 2, 3)]):+.3f}"
    assert rows[-1][4] == _interval_text([_mean(gap("p1", s)[:14]) - _mean(gap("pinf", s)[:14]) for s in (1, 2, 3)],
                                         "{:+.3f}")

    # every number is kept beside the report; a re-render replaces the blocks (none doubled), and a plain
    # --doc-only without the work folder reuses the kept numbers
    kept = json.loads((doc.parent / "reproduction" / "resshift.json").read_text())
    assert kept["seeds"] == {"p0": [1, 2], "p1": [1, 2, 3], "pinf": [1, 2, 3]} and kept["bicubic"]["psnr_y"] == 26.31
    assert R.main(argv) == 0 and doc.read_text() == md
    assert R.main(["--doc-only", "--doc", str(doc), "--out", str(tmp_path / "no-sr3")]) == 0
    assert doc.read_text() == md
    # without --out the SR3 text is always kept (a default OUT with other SR3 results is not rendered over it)
    assert R.main(argv[:5] + argv[7:]) == 0 and doc.read_text() == md
    # an arm not evaluated yet has no rows; a single seed gives the mean without an interval
    work2 = _fake_resshift_work(tmp_path / "exp2", {"pinf": (1,), "p1": (1,)})
    res = RS.collect(work2, RS.RESSHIFT_PROFILES["full"])
    md2 = RS.splice(sr3, RS.blocks(res, doc))
    assert RS.strip(md2) == sr3 and "p = 0 (DRM)" not in md2.split("### E1 on ResShift")[1].split("## E2:")[0]
    assert "(1 seed)" in md2 and "evaluated so far: 2 of the 12 planned runs" in md2


def test_resshift_rows_leave_the_sr3_rendering_unchanged(tmp_path: Path) -> None:
    # a report rendered from SR3 JSONs is the same text with or without the ResShift rows once they are stripped
    res = RS.collect(_fake_resshift_work(tmp_path / "exp"), RS.RESSHIFT_PROFILES["full"])
    parts = RS.blocks(res, tmp_path / "reproduction.md")
    for text in ("# Title\n\n## Setting\n\nx\n\n## E1: a\n\n## E2: b\n\n## E3: c\n\n## E4: d\n\n## E5: e\n",
                 "# only a title\n", ""):
        spliced = RS.splice(text, parts)
        assert RS.strip(spliced) == text and RS.splice(spliced, parts) == spliced


@pytest.mark.slow
def test_resshift_ci_profile_trains_and_evaluates_with_the_experiments_scripts(tmp_path: Path) -> None:
    # train.sh and evaluate.py themselves, at the ci sizes (3 arms x 2 seeds x 2 steps of the tiny preset)
    from dreamsr.images import load_rgb, save_image

    corpus = _corpus(tmp_path / "corpus", val=())
    (corpus / "val_crops").mkdir()
    photo = load_rgb(corpus / "train" / "chelsea.png")
    for i in range(2):
        save_image(corpus / "val_crops" / f"crop{i}.png", photo[:, 40 * i:40 * i + 32, 100:132])
    work, doc = tmp_path / "exp", tmp_path / "docs" / "reproduction.md"
    argv = ["--resshift-only", "--resshift-train", "--resshift-profile", "ci", "--resshift-work", str(work),
            "--data-dir", str(corpus), "--doc", str(doc), "--out", str(tmp_path / "no-sr3")]
    assert R.main(argv) == 0
    prof = RS.RESSHIFT_PROFILES["ci"]
    runs = sorted(f"{a}-s{s}" for a in prof.arms for s in prof.seeds)
    assert sorted(p.name for p in (work / "eval").iterdir() if p.is_dir()) == runs
    assert sorted(p.stem for p in (work / "eval" / "p1-s1").glob("*.json")) == [
        "curve-1-k1", "curve-1-k15", "diag", "final-k1", "final-k15"]
    md = doc.read_text()
    assert "evaluated so far: 6 of the 6 planned runs" in md and "| p1 − pinf | 15 | 2 |" in md
    assert RS.strip(md) == "# Reproducing DREAM at small scale\n\n"
    # a second invocation finds everything done and renders the same rows
    assert R.main(argv) == 0 and doc.read_text() == md
