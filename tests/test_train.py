"""Training loop: exact resume, checkpoints (atomic, keep-K, NaN), export, CLI, DDP, and a real-photo run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dreamsr.checkpoint import load_checkpoint
from dreamsr.errors import CheckpointError, ConfigError, TrainingError
from dreamsr.jobs.train import TrainConfig, export_from_state, latest_checkpoint, read_state_config, train
from tests._helpers import copy_photos

REPO = Path(__file__).resolve().parents[1]
TRAIN_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
HELD_OUT = ("motorcycle_left.png",)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with four real photos (scikit-image wheel) for the 'folder' layout."""
    return copy_photos(tmp_path_factory.mktemp("photos"), TRAIN_PHOTOS)


@pytest.fixture(scope="module")
def val_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_photos(tmp_path_factory.mktemp("val"), HELD_OUT)


def tiny_config(photos: Path, run_dir: Path, **kw) -> TrainConfig:
    """SR3's tiny preset on 32 px crops: a step takes a few tens of ms on two cores. fp32 unless a test asks:
    precision "auto" is bf16 on CPUs with native bf16, and DDP's split batches round differently in bf16. The
    family and the optimisation are spelled out (constant lr, no warm-up): the defaults are the ResShift recipe."""
    base = dict(dataset="folder", data_dir=str(photos), family="sr3", preset="tiny", patch=32, batch_size=4,
                steps=6, save_every=3, val_every=0, workers=0, log_every=1, run_dir=str(run_dir), target="residual",
                ema_decay=0.9, lr=1e-3, lr_warmup=0, lr_schedule="constant", precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("rng/")}


def _assert_same_state(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sorted(sa) == sorted(sb)
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert diff == [], f"{len(diff)} tensors differ, e.g. {diff[:3]}"


# --- exact resume ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1.0, math.inf])
def test_resume_is_bit_exact(photos: Path, tmp_path: Path, p: float) -> None:
    """2 steps + resume + 2 steps == 4 steps in one go: model, EMA and Adam moments bit for bit."""
    full = train(tiny_config(photos, tmp_path / "full", p=p, steps=4, save_every=2))
    first = tiny_config(photos, tmp_path / "split", p=p, steps=2, save_every=2)
    train(first)
    resumed = train(dataclasses.replace(first, steps=4, resume="auto"))
    assert resumed.step == full.step == 4
    _assert_same_state(tmp_path / "full/checkpoints/step_00000004.safetensors",
                       tmp_path / "split/checkpoints/step_00000004.safetensors")
    # the weights did move (the test would be vacuous otherwise)
    s2 = _state(tmp_path / "split/checkpoints/step_00000002.safetensors")
    s4 = _state(tmp_path / "split/checkpoints/step_00000004.safetensors")
    assert not torch.equal(s2["model/head.weight"], s4["model/head.weight"])
    assert float(s4["optim/0/step"]) == 4.0
    # the per-step losses logged after the resume equal the uninterrupted run's
    def losses(run: str) -> dict[int, float]:
        recs = [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in recs if "loss" in r}
    assert losses("split") == losses("full")


def test_resume_from_older_checkpoint_with_workers(photos: Path, tmp_path: Path) -> None:
    """Resuming from step 2 of a 4-step run (loader in 2 worker processes) lands on the same step-4 state."""
    full = tiny_config(photos, tmp_path / "a", workers=2, steps=4, save_every=2)
    train(full)
    ckpt2 = tmp_path / "a/checkpoints/step_00000002.safetensors"
    again = dataclasses.replace(full, run_dir=str(tmp_path / "b"), resume=str(ckpt2))
    r = train(again)
    assert r.step == 4
    _assert_same_state(tmp_path / "a/checkpoints/step_00000004.safetensors",
                       tmp_path / "b/checkpoints/step_00000004.safetensors")


def test_state_written_before_families_resumes_bit_exact(photos: Path, tmp_path: Path) -> None:
    """A state whose config has no ``family`` (and whose metadata calls the network ``unet``, as before the
    family seam) resumes as sr3 and lands on the uninterrupted run's step-4 state."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    full = train(tiny_config(photos, tmp_path / "full", steps=4, save_every=2))
    first = tiny_config(photos, tmp_path / "old", steps=2, save_every=2)
    train(first)
    path = tmp_path / "old/checkpoints/step_00000002.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(path))
    config = json.loads(meta["config"])
    assert config.pop("family") == "sr3"
    meta["config"] = json.dumps(config, sort_keys=True)
    meta["unet"] = meta.pop("network")
    del meta["family"], meta["process"]
    save_file(tensors, str(path), metadata=meta)
    assert read_state_config(path) == first
    resumed = train(dataclasses.replace(first, steps=4, resume="auto"))
    assert resumed.step == full.step == 4
    _assert_same_state(tmp_path / "full/checkpoints/step_00000004.safetensors",
                       tmp_path / "old/checkpoints/step_00000004.safetensors")


def test_resume_refuses_changed_settings(photos: Path, tmp_path: Path) -> None:
    cfg = tiny_config(photos, tmp_path, steps=1)
    train(cfg)
    with pytest.raises(TrainingError, match=r"p: checkpoint 1.0 vs now inf"):
        train(dataclasses.replace(cfg, steps=2, p=math.inf, resume="auto"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(dataclasses.replace(cfg, resume=str(tmp_path / "nope.safetensors")))
    # the settings of a run come back from its checkpoint
    assert read_state_config(tmp_path) == cfg


# --- checkpoints and export ---------------------------------------------------------------------------------

def test_checkpoints_keep_last_k_and_export_loads(photos: Path, tmp_path: Path) -> None:
    cfg = tiny_config(photos, tmp_path, steps=4, save_every=1, keep=2, export_dtype="fp16")
    res = train(cfg)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000003.safetensors", "step_00000004.safetensors"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints/step_00000004.safetensors"
    model, info = load_checkpoint(res.export)
    assert info.diffusion.target == "residual" and info.scale == 4 and info.training["steps"] == 4
    assert info.training["p"] == 1.0 and info.training["ema"] is True
    # the export holds the EMA weights (fp16-rounded), not the raw ones
    st = load_file(str(tmp_path / "checkpoints/step_00000004.safetensors"))
    ema_w = st["ema/head.weight"].half().float()
    assert torch.equal(model.state_dict()["head.weight"], ema_w)
    assert not torch.equal(st["ema/head.weight"], st["model/head.weight"])
    # export from a training checkpoint afterwards gives the same tensors (raw weights on request)
    raw, _ = load_checkpoint(export_from_state(tmp_path, tmp_path / "raw.safetensors", ema=False))
    assert torch.equal(raw.state_dict()["head.weight"], st["model/head.weight"])
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["config"]["target"] == "residual" and cfg_json["hr_patch"] == 32


def test_exported_model_is_the_ema_weights_with_the_runs_metadata(photos: Path, tmp_path: Path) -> None:
    """run/model.safetensors, read as a plain safetensors file: every tensor is the EMA tensor of the last training
    checkpoint (and of the returned EMA model), bit for bit in fp32, no tensor more or less; the metadata says
    what was trained."""
    from safetensors import safe_open

    cfg = tiny_config(photos, tmp_path, steps=3, save_every=3, ema_decay=0.5, p=1.0)
    res = train(cfg)
    assert res.export == tmp_path / "model.safetensors"
    with safe_open(str(res.export), "pt") as fh:
        meta = fh.metadata()
        exported = {k: fh.get_tensor(k) for k in fh.keys()}
    state = load_file(str(tmp_path / "checkpoints/step_00000003.safetensors"))
    ema = {k[len("ema/"):]: v for k, v in state.items() if k.startswith("ema/")}
    assert sorted(exported) == sorted(ema) == sorted(res.ema.state_dict())
    for k, v in exported.items():
        assert v.dtype == torch.float32 and torch.equal(v, ema[k]) and torch.equal(v, res.ema.state_dict()[k]), k
    assert any(not torch.equal(ema[k], state["model/" + k]) for k in ema)  # EMA and raw weights differ
    assert (meta["format"], meta["family"], meta["process"], meta["scale"]) == ("dreamsr.checkpoint", "sr3",
                                                                                "gaussian", "4")
    assert json.loads(meta["network"]) == cfg.network_config().to_dict()
    assert json.loads(meta["diffusion"])["target"] == "residual"
    training = json.loads(meta["training"])
    assert {k: training[k] for k in ("steps", "p", "dataset", "patch", "batch_size", "lr", "preset", "ema_decay",
                                     "ema")} == {"steps": 3, "p": 1.0, "dataset": "folder", "patch": 32,
                                                 "batch_size": 4, "lr": 1e-3, "preset": "tiny", "ema_decay": 0.5,
                                                 "ema": True}


def test_ema_follows_the_documented_update(photos: Path, tmp_path: Path) -> None:
    """EMA after step k: ema <- lerp(ema, w, 1 - min(decay, (1+k)/(10+k))); checked across one step."""
    cfg = tiny_config(photos, tmp_path, steps=2, save_every=1, ema_decay=0.5)
    train(cfg)
    s1 = load_file(str(tmp_path / "checkpoints/step_00000001.safetensors"))
    s2 = load_file(str(tmp_path / "checkpoints/step_00000002.safetensors"))
    d = min(0.5, (1 + 1) / (10 + 1))  # k = 1 (0-based) for the second step
    want = s1["ema/head.weight"].lerp(s2["model/head.weight"], 1 - d)
    torch.testing.assert_close(s2["ema/head.weight"], want, rtol=0, atol=1e-7)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(photos: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.processes.gaussian import GaussianProcess

    real = GaussianProcess.loss
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        out = real(*a, **kw)
        return out * float("nan") if calls["n"] == 4 else out

    monkeypatch.setattr(GaussianProcess, "loss", flaky)  # the loop's only loss call (through the process)
    cfg = tiny_config(photos, tmp_path, steps=6, save_every=2)
    with pytest.raises(TrainingError, match=r"loss became nan at step 4.*step_00000002\.safetensors"):
        train(cfg)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002.safetensors"]
    st = load_file(str(tmp_path / "checkpoints/step_00000002.safetensors"))
    assert all(torch.isfinite(v).all() for k, v in st.items() if v.is_floating_point())
    # the exported model is the step-2 one, still usable
    _, info = load_checkpoint(tmp_path / "model.safetensors")
    assert info.training["steps"] == 2


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import dreamsr.jobs.train.state as S
    from dreamsr.jobs.train import TrainConfig, train

    real = S.save_file
    count = {"n": 0}

    def dying_save(tensors, filename, metadata=None):
        count["n"] += 1
        real(tensors, filename, metadata=metadata)
        if count["n"] == 2:  # second checkpoint: die half-way through writing it
            size = os.path.getsize(filename)
            with open(filename, "r+b") as fh:
                fh.truncate(size // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    S.save_file = dying_save
    cfg = TrainConfig(**__import__("json").loads(sys.argv[1]))
    train(cfg)
""")


def test_kill_during_save_leaves_no_half_written_checkpoint(photos: Path, tmp_path: Path) -> None:
    cfg = tiny_config(photos, tmp_path / "run", steps=4, save_every=2)
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, json.dumps(cfg.to_dict())], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpts = tmp_path / "run/checkpoints"
    assert [p.name for p in ckpts.glob("step_*.safetensors")] == ["step_00000002.safetensors"]
    # the complete checkpoint loads; the half file only exists under a temporary name
    assert len(_state(ckpts / "step_00000002.safetensors")) > 0
    leftovers = list(ckpts.glob(".step_*.tmp"))
    assert len(leftovers) == 1
    # resuming cleans the leftover and continues exactly like an uninterrupted run
    train(dataclasses.replace(cfg, resume="auto"))
    assert not list(ckpts.glob(".step_*.tmp"))
    train(dataclasses.replace(cfg, run_dir=str(tmp_path / "ref")))
    _assert_same_state(ckpts / "step_00000004.safetensors", tmp_path / "ref/checkpoints/step_00000004.safetensors")


def test_callback_can_stop_cleanly(photos: Path, tmp_path: Path) -> None:
    events = []

    def cb(ev):
        events.append((ev.kind, ev.step))
        return ev.kind == "step" and ev.step == 2

    res = train(tiny_config(photos, tmp_path, steps=6, save_every=0), callback=cb)
    assert res.stopped and res.step == 2
    assert latest_checkpoint(tmp_path).name == "step_00000002.safetensors"
    assert events[0] == ("start", 0) and events[-1] == ("end", 2)
    assert ("checkpoint", 2) in events


def test_time_limit_stops_cleanly_with_a_checkpoint(photos: Path, tmp_path: Path) -> None:
    res = train(tiny_config(photos, tmp_path, steps=6, save_every=0, time_limit=1e-6))
    assert res.stopped and res.step == 1
    assert latest_checkpoint(tmp_path).name == "step_00000001.safetensors"
    _, info = load_checkpoint(res.export)
    assert info.training["steps"] == 1


def test_stop_at_keeps_the_schedule_so_resuming_equals_one_run(photos: Path, tmp_path: Path) -> None:
    """--stop-at 2 of a 4-step cosine schedule, then a resume, is bit-identical to 4 steps in one go."""
    kw = dict(steps=4, save_every=0, lr_schedule="cosine", lr_warmup=0)
    full = train(tiny_config(photos, tmp_path / "full", **kw))
    part = train(tiny_config(photos, tmp_path / "split", stop_at=2, **kw))
    assert part.stopped and part.step == 2
    assert latest_checkpoint(tmp_path / "split").name == "step_00000002.safetensors"
    _, info = load_checkpoint(part.export)
    assert info.training["steps"] == 2  # the export describes what was trained so far
    lrs = [json.loads(l)["lr"] for l in (tmp_path / "split/metrics.jsonl").read_text().splitlines()]
    # step 2 follows the 4-step cosine from 1e-3 (a 2-step schedule would give 0.55e-3)
    assert lrs[1] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    rest = train(tiny_config(photos, tmp_path / "split", resume="auto", **kw))
    assert rest.step == full.step == 4 and not rest.stopped
    _assert_same_state(tmp_path / "full/checkpoints/step_00000004.safetensors",
                       tmp_path / "split/checkpoints/step_00000004.safetensors")
    # a stop that is already behind the checkpoint trains nothing (a replay script can be rerun) and re-exports
    again = train(tiny_config(photos, tmp_path / "split", resume="auto", stop_at=2, **kw))
    assert again.step == 4 and latest_checkpoint(tmp_path / "split").name == "step_00000004.safetensors"
    _, info = load_checkpoint(again.export)
    assert info.training["steps"] == 4


def test_init_weights_starts_a_fine_tuning_run_from_given_weights(photos: Path, tmp_path: Path) -> None:
    # fp32 export of a 4-step run with a large lr, so its weights are far from the seed's initial ones
    src = train(tiny_config(photos, tmp_path / "a", steps=4, lr=5e-2)).export
    w0 = load_checkpoint(src)[0].state_dict()
    lr = 1e-3
    res = train(tiny_config(photos, tmp_path / "b", steps=1, lr=lr, init_weights=str(src)))
    assert res.step == 1 and latest_checkpoint(tmp_path / "b").name == "step_00000001.safetensors"
    st = load_file(str(tmp_path / "b/checkpoints/step_00000001.safetensors"))
    # Adam's first update moves every weight by at most lr (|m_hat / sqrt(v_hat)| <= 1), and the EMA starts at
    # the given weights too; a run from a fresh initialisation is far away
    for prefix in ("model/", "ema/"):
        worst = max((st[prefix + k] - v).abs().max().item() for k, v in w0.items())
        assert worst <= lr * 1.001, (prefix, worst)
    fresh = load_file(str(latest_checkpoint(train(tiny_config(photos, tmp_path / "d", steps=1, lr=lr)).run_dir)))
    assert max((fresh["model/" + k] - v).abs().max().item() for k, v in w0.items()) > 10 * lr
    _, info = load_checkpoint(res.export)
    assert info.training["init_weights"] == src.name and info.training["steps"] == 1
    # resuming such a run is exact (the weights come from the state, not from init_weights again)
    train(tiny_config(photos, tmp_path / "c", steps=2, lr=lr, init_weights=str(src)))
    train(tiny_config(photos, tmp_path / "b", steps=2, lr=lr, init_weights=str(src), resume="auto"))
    _assert_same_state(latest_checkpoint(tmp_path / "b"), latest_checkpoint(tmp_path / "c"))


def test_init_weights_refuses_a_different_model(photos: Path, tmp_path: Path) -> None:
    src = train(tiny_config(photos, tmp_path / "a", steps=1)).export
    with pytest.raises(ConfigError, match="diffusion differs .* in target"):
        train(tiny_config(photos, tmp_path / "b", steps=1, target="image", init_weights=str(src)))
    with pytest.raises(ConfigError, match="UNet differs .* in embed_scale"):
        train(tiny_config(photos, tmp_path / "c", steps=1, embed_scale=1000.0, init_weights=str(src)))
    assert not (tmp_path / "b" / "checkpoints").exists() or not any((tmp_path / "b" / "checkpoints").iterdir())


def test_lr_warmup_and_cosine_schedule(photos: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(lr=1e-3, lr_warmup=4, lr_schedule="cosine", steps=100, lr_min_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(1e-3 * 0.25 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0))))
    assert cfg.lr_at(50) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert cfg.lr_at(100) == pytest.approx(1e-4)
    assert TrainConfig(lr=2e-4, lr_warmup=0, lr_schedule="constant").lr_at(12345) == 2e-4


def test_p_inf_config_roundtrip() -> None:
    cfg = TrainConfig(p=math.inf, target="residual")
    d = cfg.to_dict()
    assert d["p"] == "inf"
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg


def test_defaults_are_the_default_models_recipe() -> None:
    """`dreamsr train` with no options trains what dreamsr-x4-resshift was trained as (its stage 2, from scratch):
    ResShift small on the shift process v1 with MSE, 128² crops, batch 8, lr 2e-4, 200 warm-up steps, cosine to
    2e-5, EMA 0.999 -- not the SR3 Gaussian setup that gave pure noise after a short run."""
    from dreamsr.jobs.weights import default_model, get_entry, local_path

    cfg = TrainConfig()
    assert (cfg.family, cfg.preset, cfg.process_name(), cfg.shift) == ("resshift", "small", "shift", "v1")
    assert cfg.model_info(0).training["loss"] == "l2"
    assert (cfg.hr_patch, cfg.batch_size, cfg.lr, cfg.lr_warmup, cfg.lr_schedule, cfg.ema_decay) == \
        (128, 8, 2e-4, 200, "cosine", 0.999)
    assert cfg.lr_at(cfg.steps) == pytest.approx(2e-5)
    # the shipped default file says it was trained so: the same network, process and training settings, DREAM
    # p = 1 included. Its metadata records its last stage, the DREAM fine-tuning of experiment B (64² crops at lr
    # 5e-5 from the stage-2 weights), which is why crop size and lr are not compared.
    _, info = load_checkpoint(local_path(get_entry(default_model(4))))
    assert info.family == cfg.family and info.process == cfg.process_name()
    assert info.network == cfg.network_config() and info.diffusion == cfg.diffusion_config()
    for key in ("batch_size", "ema_decay", "loss", "preset", "p", "dream_lambda"):
        assert info.training[key] == cfg.model_info(0).training[key], key
    assert info.training["init_weights"] and (info.training["patch"], info.training["lr"]) == (64, 5e-5)


def test_a_stored_config_missing_fields_reads_as_it_was_written() -> None:
    """Fields a state written before the ResShift defaults lacks take the values they had then (sr3, 160² crops,
    constant lr 1e-4, EMA 0.9999), not today's defaults: resuming an old run keeps its settings."""
    stored = tiny_config(Path("photos"), Path("run")).to_dict()
    for key in ("family", "patch", "lr", "lr_warmup", "lr_schedule", "ema_decay", "steps"):
        del stored[key]
    cfg = TrainConfig.from_dict(stored)
    assert (cfg.family, cfg.hr_patch, cfg.lr, cfg.lr_warmup, cfg.lr_schedule, cfg.ema_decay, cfg.steps) == \
        ("sr3", 160, 1e-4, 0, "constant", 0.9999, 100_000)
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()  # a full dict is read as written


def test_mask_and_resize_rules_are_train_options(photos: Path, tmp_path: Path) -> None:
    """--mask-rule / --resize-rule reach TrainConfig (and the network); a wrong value is refused by name."""
    from typer.testing import CliRunner

    from dreamsr.cli import app

    assert TrainConfig(mask_rule="release").network_config().unet.mask_rule == "release"
    with pytest.raises(ConfigError, match="mask_rule must be one of"):
        TrainConfig(mask_rule="shifted")
    with pytest.raises(ConfigError, match="resize_rule must be one of"):
        TrainConfig(family="idm", resize_rule="nearest")
    text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--mask-rule" in text and "--resize-rule" in text and "matches the released code" in text
    run = tmp_path / "rules"
    r = _cli("--dataset", "folder", "--data-dir", str(photos), "--preset", "tiny", "--patch", "32",
             "--batch-size", "2", "--steps", "1", "--workers", "0", "--val-every", "0", "--threads", "1",
             "--precision", "fp32", "--mask-rule", "release", "--run-dir", str(run))
    assert r.exit_code == 0, r.output
    cfg = read_state_config(run)
    assert (cfg.family, cfg.mask_rule) == ("resshift", "release")
    _, info = load_checkpoint(run / "model.safetensors")
    assert info.network.unet.mask_rule == "release"
    r = _cli("--data-dir", str(photos), "--resize-rule", "nearest", "--run-dir", str(tmp_path / "bad"))
    assert r.exit_code == 2 and "resize_rule must be one of" in r.output


# --- DDP ----------------------------------------------------------------------------------------------------

_DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    from dreamsr.jobs.train import TrainConfig, train

    cfg = TrainConfig(**json.loads(sys.argv[1]))
    res = train(cfg)
    rank = int(os.environ.get("RANK", "0"))
    tensors = {f"model/{k}": v.contiguous() for k, v in res.model.state_dict().items()}
    tensors.update({f"ema/{k}": v.contiguous() for k, v in res.ema.state_dict().items()})
    save_file(tensors, os.path.join(sys.argv[2], f"rank{rank}.safetensors"))
""")


def test_ddp_two_processes_match_single_process(photos: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo), batch 4 = 2 x 2: ranks agree, and match 1 process at batch 4."""
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT)
    steps = 4
    cfg = tiny_config(photos, tmp_path / "ddp", steps=steps, save_every=2, batch_size=4, log_every=1)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), json.dumps(cfg.to_dict()), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks ended with different weights"
    # one process with the same global batch sees the same samples and noise: same losses, same weights
    single = train(dataclasses.replace(cfg, run_dir=str(tmp_path / "single")))
    sd = {f"model/{k}": v for k, v in single.model.state_dict().items()}
    sd.update({f"ema/{k}": v for k, v in single.ema.state_dict().items()})
    worst = max(float((r0[k] - sd[k]).abs().max()) for k in r0)
    assert worst < 1e-5, worst
    init = load_file(str(tmp_path / "ddp/checkpoints/step_00000002.safetensors"))
    assert float((init["model/head.weight"] - r0["model/head.weight"]).abs().max()) > 1e-4  # weights did move
    def losses(run: Path) -> list[float]:
        return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in l]
    ddp_l, one_l = losses(tmp_path / "ddp"), losses(tmp_path / "single")
    assert len(ddp_l) == len(one_l) == steps
    for a, b in zip(ddp_l, one_l):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    # rank 0 alone wrote the run folder and the checkpoints
    assert sorted(p.name for p in (tmp_path / "ddp/checkpoints").iterdir()) == [
        "step_00000002.safetensors", "step_00000004.safetensors"]
    assert json.loads((tmp_path / "ddp/config.json").read_text())["world_size"] == 2


# --- CLI ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Run:
    exit_code: int
    output: str


def _cli(*args: str) -> _Run:
    """`dreamsr train ARGS` in-process; a DreamSRError maps to the exit code and message main() gives it."""
    from typer.testing import CliRunner

    from dreamsr.cli import app
    from dreamsr.cli.common import exit_code_for
    from dreamsr.errors import DreamSRError

    r = CliRunner().invoke(app, ["train", *args])
    if isinstance(r.exception, DreamSRError):
        return _Run(exit_code_for(r.exception), r.output + str(r.exception))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return _Run(r.exit_code, r.output)


def test_cli_trains_resumes_with_saved_settings_and_exports(photos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--workers", "0", "--log-every", "1", "--val-every", "0", "--threads", "1"]
    r = _cli("--dataset", "folder", "--data-dir", str(photos), "--family", "sr3", "--preset", "tiny", "--patch",
             "32", "--batch-size", "2", "--steps", "2", "--save-every", "1", "--target", "residual", "--p", "inf",
             "--lr", "2e-4", "--lr-warmup", "0", "--lr-schedule", "constant", "--ema-decay", "0.9999",
             "--run-dir", str(run), *common)
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.startswith("step ")]
    assert [l.split()[1] for l in lines] == ["1/2", "2/2"]  # plain lines when not a terminal
    # resume with only --steps: every other setting comes from the checkpoint (sr3, p = inf, residual, lr 2e-4,
    # constant, EMA 0.9999), not from today's defaults (resshift, warm-up 200, cosine, EMA 0.999)
    r = _cli("--resume", str(run), "--steps", "3", *common)
    assert r.exit_code == 0, r.output
    cfg = read_state_config(run)
    assert cfg.steps == 3 and math.isinf(cfg.p) and cfg.target == "residual" and cfg.lr == 2e-4
    assert (cfg.family, cfg.patch, cfg.lr_warmup, cfg.lr_schedule, cfg.ema_decay) == ("sr3", 32, 0, "constant", 0.9999)
    assert latest_checkpoint(run).name == "step_00000003.safetensors"
    # --stop-at ends this invocation early; the next resume trains on without repeating it
    r = _cli("--resume", str(run), "--steps", "5", "--stop-at", "4", *common)
    assert r.exit_code == 0 and "train stopped at step 4" in r.output, r.output
    r = _cli("--resume", str(run), *common)
    assert r.exit_code == 0, r.output
    assert latest_checkpoint(run).name == "step_00000005.safetensors"
    # a conflicting setting is refused with exit code 1 and one line naming it
    r = _cli("--resume", str(run), "--p", "1", "--steps", "6", *common)
    assert r.exit_code == 1 and "p: checkpoint inf vs now 1.0" in r.output
    # export only, in fp16
    (run / "model.safetensors").unlink()
    r = _cli("--resume", str(run), "--export-only", "--export-dtype", "fp16")
    assert r.exit_code == 0, r.output
    from safetensors import safe_open
    with safe_open(str(run / "model.safetensors"), "pt") as fh:
        assert fh.get_tensor("head.weight").dtype == torch.float16
    _, info = load_checkpoint(run / "model.safetensors")
    assert info.training["steps"] == 5 and info.training["p"] == "inf"


def test_validation_shows_bicubic_in_the_live_line_and_the_log_and_warns_when_below(photos: Path,
                                                                                  val_photos: Path,
                                                                                  tmp_path: Path) -> None:
    """The live status line (terminal) and the plain log line (pipes) both give bicubic's PSNR-Y beside the
    model's; a run that ends below bicubic says so in one warning line, and one above it does not."""
    from dreamsr.cli.train import _Display
    from dreamsr.jobs.train import TrainEvent

    val = {"psnr": 25.50, "ssim": 0.7, "bicubic_psnr": 26.31, "bicubic_ssim": 0.75, "psnr_rgb": 24.0, "images": 1,
           "grid": "g.png"}
    live = _Display(10, live=False)  # the live line's text, without drawing a bar
    live(TrainEvent("val", 10, 10, val))
    assert "val 25.50 dB (bicubic 26.31)" in live.status(10)
    assert live.below_bicubic() == ("warning: at step 10 the model is 0.81 dB below bicubic on validation (PSNR-Y "
                                    "25.50 vs 26.31): train longer before using it (--resume with a larger --steps)")
    live(TrainEvent("val", 10, 10, {**val, "psnr": 26.40}))
    assert live.below_bicubic() is None
    # a real two-step run with validation, through the CLI (plain lines: not a terminal)
    r = _cli("--dataset", "folder", "--data-dir", str(photos), "--preset", "tiny", "--patch", "32", "--batch-size",
             "2", "--steps", "2", "--workers", "0", "--threads", "1", "--precision", "fp32", "--val-dir",
             str(val_photos), "--val-count", "1", "--val-crop", "32", "--val-every", "2", "--run-dir",
             str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    val_lines = [l for l in r.output.splitlines() if l.startswith("val step 2:")]
    assert len(val_lines) == 1 and "(bicubic " in val_lines[0], r.output
    rec = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if '"val"' in l][-1]
    warnings = [l for l in r.output.splitlines() if l.startswith("warning: at step 2 the model is")]
    assert len(warnings) == (1 if rec["psnr"] < rec["bicubic_psnr"] else 0), r.output
    assert rec["psnr"] < rec["bicubic_psnr"]  # two steps from scratch: below bicubic, so the warning was shown


def test_cli_rejects_bad_options(photos: Path, tmp_path: Path) -> None:
    r = _cli("--data-dir", str(photos), "--p", "-1", "--run-dir", str(tmp_path))
    assert r.exit_code == 2 and "--p must be" in r.output
    r = _cli("--data-dir", str(photos), "--target", "latent", "--run-dir", str(tmp_path))
    assert r.exit_code == 2 and "target must be image or residual" in r.output
    r = _cli("--dataset", "div2k", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r"))
    assert r.exit_code == 1 and "DIV2K_train_HR" in r.output


# --- precision ----------------------------------------------------------------------------------------------

def test_bf16_autocast_on_cpu_keeps_fp32_master_weights(photos: Path, tmp_path: Path) -> None:
    """bf16 autocast changes the arithmetic, not the stored state: fp32 weights/moments, loss near fp32's.

    Both runs use channels_last, so precision is the only difference: the same initial weights, crops and noise
    give a first-step loss that differs only by bf16 rounding (measured: 1.5e-5 relative for the tiny preset;
    two fp32 runs agree bit for bit), and the weights after the steps differ."""
    ref = train(tiny_config(photos, tmp_path / "fp32", steps=2, log_every=1, channels_last=True))
    res = train(tiny_config(photos, tmp_path / "bf16", steps=2, log_every=1, precision="bf16", channels_last=True))
    st = load_file(str(tmp_path / "bf16/checkpoints/step_00000002.safetensors"))
    assert all(v.dtype == torch.float32 for k, v in st.items() if k.startswith(("model/", "ema/", "optim/")))
    first = lambda run: json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert first("bf16") == pytest.approx(first("fp32"), rel=0.05)
    assert abs(first("bf16") - first("fp32")) > 1e-6 * first("fp32")  # autocast really ran
    ref_st = load_file(str(tmp_path / "fp32/checkpoints/step_00000002.safetensors"))
    assert not torch.equal(st["model/head.weight"], ref_st["model/head.weight"])
    assert res.last_loss is not None and ref.last_loss is not None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_trains_and_resumes(photos: Path, tmp_path: Path, precision: str) -> None:
    cfg = tiny_config(photos, tmp_path, steps=4, save_every=2, precision=precision, device="cuda")
    res = train(cfg)
    assert res.last_loss is not None and math.isfinite(res.last_loss)
    st = load_file(str(tmp_path / "checkpoints/step_00000004.safetensors"))
    assert all(v.dtype == torch.float32 for k, v in st.items() if k.startswith(("model/", "ema/")))
    train(dataclasses.replace(cfg, steps=6, resume="auto"))
    model, _ = load_checkpoint(tmp_path / "model.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --- a real run ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_small_model_beats_bicubic_on_a_held_out_photo(photos: Path, val_photos: Path, tmp_path: Path) -> None:
    """The small preset (2.6 M parameters), residual target, DREAM p=1, trained on 48 px crops of four photos,
    beats bicubic PSNR-Y on a held-out photo (motorcycle_left, 128 px centre crop, DDIM 10 steps, no
    back-projection) within 3000 steps (measured: 23.47 vs 23.44 dB at step 2000, about 20 min on one busy
    core). The run stops at the first validation that beats bicubic.

    Not the tiny preset: its 10 k parameters plateau 0.01-0.13 dB *below* bicubic on this crop in every
    setting tried (lr 1e-3/2e-3, p 0/1, 4 or 7 training photos, embedding scale 1/1000, residual scale 1.5/4/8,
    3000 steps). Back-projection is left out because on its own, on a zero residual, it already gives +0.45 dB.
    """
    seen: list[tuple[int, float, float]] = []

    def cb(ev) -> bool:
        if ev.kind != "val":
            return False
        seen.append((ev.step, ev.data["psnr"], ev.data["bicubic_psnr"]))
        return ev.data["psnr"] > ev.data["bicubic_psnr"]

    cfg = tiny_config(photos, tmp_path, preset="small", patch=48, batch_size=8, steps=3000, lr=5e-4,
                      lr_schedule="cosine", ema_decay=0.995, save_every=0, val_every=500, val_dir=str(val_photos),
                      val_count=1, val_crop=128, val_steps=10, log_every=100)
    res = train(cfg, callback=cb)
    print("\nvalidation (step, PSNR-Y, bicubic):", [(s, round(a, 2), round(b, 2)) for s, a, b in seen])
    assert seen and seen[-1][1] > seen[-1][2], seen
    assert seen[0][1] < seen[0][2]  # it started below bicubic: training did it
    assert res.stopped and res.export is not None
    # the exported model, through the public pipeline, stays above bicubic (one more step was taken)
    from dreamsr.images import downsample, upsample
    from dreamsr.metrics import psnr
    from dreamsr.jobs.pipeline import Upscaler

    up = Upscaler.from_checkpoint(res.export, device="cpu", precision="fp32")
    hr = load_val_hr(val_photos, 128)
    lr = downsample(hr, 4).clamp(0, 1).mul(255).round().div(255)
    sr = up.upscale(lr, steps=10, sampler="ddim", seed=0, tile=0)
    bic = upsample(lr, 4).clamp(0, 1)
    assert psnr(sr, hr, crop_border=4, y_channel=True) > psnr(bic, hr, crop_border=4, y_channel=True) - 0.05


def load_val_hr(folder: Path, crop: int) -> torch.Tensor:
    from dreamsr.data import find_images, load_val_images

    return load_val_images(find_images(folder), 1, crop, 4 * 2)[0][1]
