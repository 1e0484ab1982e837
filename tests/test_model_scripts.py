"""scripts/sweep_table.py, scripts/model_card.py and scripts/package_model.py: the tools that make the model card
and the shipped default, on a tiny x4 checkpoint and one small real photo crop."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

from dreamsr.checkpoint import load_checkpoint, read_info
from tests._helpers import photo_path, write_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _script(name: str) -> ModuleType:
    mod_name = f"dreamsr_script_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def val_dir(tmp_path: Path) -> Path:
    d = tmp_path / "val"
    d.mkdir()
    Image.open(photo_path("chelsea.png")).convert("RGB").crop((100, 60, 132, 92)).save(d / "chelsea.png")
    return d


def test_sweep_table_reads_settings_from_the_weights_and_reuses_finished_evaluations(tmp_path: Path,
                                                                                     val_dir: Path) -> None:
    a = write_tiny_checkpoint(tmp_path / "a.safetensors", scale=4, seed=0)
    b = write_tiny_checkpoint(tmp_path / "b.safetensors", scale=4, seed=1)
    out = tmp_path / "sweep"
    S = _script("sweep_table")
    assert S.main([str(val_dir), str(out), f"one={a}", f"two={b}", "--steps", "2"]) == 0
    res = json.loads((out / "sweep_ddim-2.json").read_text())
    assert [r["label"] for r in res["rows"]] == ["one", "two"]
    assert res["rows"][0]["target"] == "residual" and res["rows"][0]["embed_scale"] == 1.0
    # two different random models give different numbers; the markdown holds the same values as the JSON
    m1, m2 = (r["metrics"]["PSNR Y"] for r in res["rows"])
    assert m1 != m2
    md = (out / "sweep_ddim-2.md").read_text()
    assert f"| one | residual |" in md and f"{m1:.2f}" in md and f"{m1 - res['bicubic']['PSNR Y']:+.2f}" in md
    # a rerun reuses both evaluations (same sha256): the summaries are not rewritten
    stamp = (out / "one_ddim-2" / "summary.json").stat().st_mtime_ns
    assert S.main([str(val_dir), str(out), f"one={a}", f"two={b}", "--steps", "2"]) == 0
    assert (out / "one_ddim-2" / "summary.json").stat().st_mtime_ns == stamp
    # different weights under the same label are evaluated again, not served from the cache
    write_tiny_checkpoint(a, scale=4, seed=2)
    assert S.main([str(val_dir), str(out), f"one={a}", "--steps", "2"]) == 0
    again = json.loads((out / "sweep_ddim-2.json").read_text())["rows"][0]["metrics"]["PSNR Y"]
    assert again != m1


def test_sweep_table_refuses_a_missing_file(tmp_path: Path, val_dir: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        _script("sweep_table").main([str(val_dir), str(tmp_path / "o"), f"x={tmp_path / 'nope.safetensors'}"])
    assert exc.value.code == 2


def test_model_card_tables_bicubic_and_each_sampler(tmp_path: Path, val_dir: Path) -> None:
    w = write_tiny_checkpoint(tmp_path / "m.safetensors", scale=4)
    out = tmp_path / "card"
    assert _script("model_card").main([str(w), str(val_dir), str(out), "--steps", "2", "--option-steps", "0"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert [r["label"] for r in card["results"]] == ["bicubic", "ddim 2", "ddpm 2"]
    rows = (out / "card_tables.md").read_text().splitlines()
    assert rows[2].startswith("| bicubic |") and rows[2].endswith("+0.00 |") and len(rows) == 5
    # a second run reuses the finished evaluations and reports their own wall time, not the reuse's
    assert _script("model_card").main([str(w), str(val_dir), str(out), "--steps", "2", "--option-steps", "0",
                                       "--only-cached"]) == 0
    again = json.loads((out / "card.json").read_text())["results"]
    evaluated = json.loads((out / "ddim-2" / "summary.json").read_text())["seconds"]
    assert again[1]["seconds"] == card["results"][1]["seconds"] == round(evaluated, 1)
    assert again[1]["metrics"] == card["results"][1]["metrics"]


def test_model_card_option_rows_and_the_figure_of_the_recommended_setting(tmp_path: Path, val_dir: Path) -> None:
    w = write_tiny_checkpoint(tmp_path / "m.safetensors", scale=4)
    out = tmp_path / "card"
    argv = [str(w), str(val_dir), str(out), "--steps", "1", "--option-steps", "2,1", "--start", "3", "--ensemble", "2"]
    assert _script("model_card").main(argv) == 0
    results = json.loads((out / "card.json").read_text())["results"]
    labels = [r["label"] for r in results]
    assert labels == ["bicubic", "ddim 1", "ddpm 1", "ddim 2 + back-projection", "ddim 2 + start 3",
                      "ddim 2 + start 3 + back-projection", "ddim 1 + back-projection", "ddim 1 + start 3",
                      "ddim 1 + start 3 + back-projection", "ddim 2 + start 3 + back-projection + ensemble 2"]
    ens = json.loads((out / "ddim-2_start-3_back-projection_ensemble-2" / "summary.json").read_text())
    assert ens["config"]["ensemble"] == 2 and ens["config"]["start"] == 3 and ens["config"]["back_project"]
    assert results[-1]["metrics"] != results[5]["metrics"]  # the ensemble changed the image
    grid = sorted((out / "ddim-2_start-3_back-projection" / "grids").glob("*.png"))[0]
    assert (out / "figure.png").read_bytes() == grid.read_bytes()


def test_package_model_sets_sampling_and_keeps_the_weights(tmp_path: Path) -> None:
    src = write_tiny_checkpoint(tmp_path / "src.safetensors", scale=4)
    dst = tmp_path / "pkg" / "m.safetensors"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "package_model.py"), str(src), str(dst),
                        "--steps", "10", "--start", "500", "--back-project"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    info = read_info(dst)
    assert info.sampling == {"steps": 10, "start": 500, "back_project": True}
    a, b = load_checkpoint(src)[0].state_dict(), load_checkpoint(dst)[0].state_dict()
    assert all(torch.equal(a[k].half().float(), b[k]) for k in a)  # stored in fp16, otherwise unchanged
    from dreamsr.jobs.weights import sha256_file

    assert f'sha256      = "{sha256_file(dst)}"' in r.stdout and f"bytes       = {dst.stat().st_size}" in r.stdout


def test_profiles_external_statistics_match_independent_computations(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    import numpy as np

    from dreamsr.images import load_rgb
    from dreamsr.metrics import hf_ratio

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # as when it runs: it imports the experiment's report.py
    P = _script("profiles_external")
    rng = np.random.default_rng(0)
    x, y = rng.random(7).tolist(), rng.random(7).tolist()
    # Spearman's rho is Pearson's r of the ranks
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731
    assert P.spearman(x, y) == pytest.approx(np.corrcoef(rank(x), rank(y))[0, 1], abs=1e-12)
    assert P.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # the exact permutation p-value: a brute force over every ordering of the values themselves
    obs = P.spearman(x, y)
    brute = np.mean([P.spearman(x, list(p)) <= obs + 1e-12 for p in itertools.permutations(y)])
    assert P.permutation_p_below(x, y) == pytest.approx(brute, abs=1e-12)
    assert P.permutation_p_below([0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]) == pytest.approx(1 / 24)
    # the t-interval: mean ± t(0.975, n - 1) s / sqrt(n), t(0.975, 9) = 2.262
    d = [0.1, -0.2, 0.3, 0.05, 0.0, 0.12, -0.07, 0.2, 0.15, -0.1]
    iv = P.interval(d)
    half = 2.262 * np.std(d, ddof=1) / np.sqrt(10)
    assert iv["mean"] == pytest.approx(np.mean(d)) and iv["hi"] - iv["mean"] == pytest.approx(half)
    # the HR texture gauge is the HF ratio's own high-pass: ratio of two photos = ratio of their squared RMS
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    img = Image.open(photo_path("chelsea.png")).convert("RGB").crop((0, 0, 96, 80))
    img.save(a)
    img.resize((24, 20), Image.BICUBIC).resize((96, 80), Image.BICUBIC).save(b)
    expect = hf_ratio(load_rgb(b), load_rgb(a))
    assert (P.hf_rms(b) / P.hf_rms(a)) ** 2 == pytest.approx(expect, rel=1e-6)
    assert P.hf_rms(b) < P.hf_rms(a)  # a blurred copy has less texture


def test_experiment_evaluate_lists_the_common_start_without_curves(tmp_path: Path) -> None:
    E = _script("dream_experiment/evaluate")
    for run in ("p1-s1", "pinf-s1", "p1-s2"):
        (tmp_path / run).mkdir()
    (tmp_path / "p1-s1" / "DONE").touch()
    (tmp_path / "pinf-s1" / "DONE").touch()  # p1-s2 is still training: not listed
    plain = E.tasks(tmp_path, ks=(1, 15), secondary_ks=(15,), curve_at=(1000,), curve_ks=(15,))
    assert {r for r, _ in plain} == {"p1-s1", "pinf-s1"}
    assert ("p1-s1", "curve-1000-k15") in plain and len(plain) == 2 * 5
    with_start = E.tasks(tmp_path, ks=(1, 15), secondary_ks=(15,), curve_at=(1000,), curve_ks=(15,), start=True)
    assert with_start[len(with_start) - len(plain):] == plain
    assert [t for r, t in with_start if r == "start-s0"] == ["final-k1", "final-k15", "final-bp-k15", "diag"]
