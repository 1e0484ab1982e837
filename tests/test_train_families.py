"""Training every family through the same loop: IDM (a scale drawn per step), ResShift (the shift process in the
unshuffle space), and a toy family defined only here, which proves the seam: it trains, saves, loads through the
normal loader and upscales through the CLI with no edit to the job modules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from dreamsr.checkpoint import load_checkpoint
from dreamsr.config import from_dict_strict
from dreamsr.errors import ConfigError
from dreamsr.families import FAMILIES
from dreamsr.families.base import Family
from dreamsr.jobs.train import TrainConfig, train
from tests._helpers import copy_photos

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return copy_photos(tmp_path / "photos", ["astronaut.png", "coffee.png", "chelsea.png"])


def _config(photos: Path, run_dir: Path, **kw) -> TrainConfig:
    base = dict(dataset="folder", data_dir=str(photos), preset="tiny", patch=32, batch_size=2, steps=4,
                save_every=2, val_every=0, workers=0, log_every=1, run_dir=str(run_dir), ema_decay=0.9, lr=1e-3,
                lr_warmup=0, lr_schedule="constant", precision="fp32", cache_mb=64)
    base.update(kw)
    return TrainConfig(**base)


def _ema(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


# --- IDM -------------------------------------------------------------------------------------------------------
def test_idm_trains_on_a_scale_drawn_per_step_and_resumes_exactly(photos: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamsr.families.idm.network import IDMNet

    sizes: list[tuple[int, int, int, int]] = []
    forward = IDMNet.forward

    def spy(self, y_t, cond, gamma, scale=None):  # type: ignore[no-untyped-def]
        if torch.is_grad_enabled():  # the gradient pass of each step
            sizes.append((*y_t.shape[-2:], *cond.shape[-2:]))
        return forward(self, y_t, cond, gamma, scale)

    monkeypatch.setattr(IDMNet, "forward", spy)
    whole = train(_config(photos, tmp_path / "a", family="idm"))
    assert whole.step == 4 and len(sizes) == 4
    # LR crops stay 8x8 (32 px at x4); the HR side is round(8 s) with s drawn in [1, 4], not always 32
    assert all((ly, lx) == (8, 8) and 8 <= hy <= 32 and hy == hx for hy, hx, ly, lx in sizes)
    assert len({s[0] for s in sizes}) > 1
    model, info = load_checkpoint(whole.export)
    assert info.family == "idm" and info.process == "gaussian" and isinstance(model, IDMNet)
    # the scale draws are part of the exact resume
    train(_config(photos, tmp_path / "b", family="idm", stop_at=2))
    train(_config(photos, tmp_path / "b", family="idm", resume="auto"))
    a, b = _ema(tmp_path / "a"), _ema(tmp_path / "b")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_idm_scale_outside_the_network_range_is_refused(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="x1 to x4"):
        train(_config(photos, tmp_path / "r", family="idm", scale=8, patch=64))


# --- ResShift --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, passes", [(float("inf"), 1), (1.0, 2)])
def test_resshift_trains_the_shift_process_with_dream(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      p: float, passes: int) -> None:
    from dreamsr.families.resshift import ResShiftNet

    calls: list[tuple[tuple[int, ...], bool]] = []
    forward = ResShiftNet.forward

    def spy(self, x_t, cond, t):  # type: ignore[no-untyped-def]
        calls.append((tuple(x_t.shape[1:]), torch.is_grad_enabled()))
        return forward(self, x_t, cond, t)

    monkeypatch.setattr(ResShiftNet, "forward", spy)
    res = train(_config(photos, tmp_path / "rs", family="resshift", p=p, steps=2, save_every=0))
    # the x4 unshuffle space: 48 channels at the LR crop's 8x8; Alg. 3: one extra no-grad pass unless p = inf
    assert [shape for shape, _ in calls] == [(48, 8, 8)] * (2 * passes)
    assert [grad for _, grad in calls] == ([False, True] if passes == 2 else [True]) * 2
    model, info = load_checkpoint(res.export)
    assert (info.family, info.process, info.diffusion.num_steps) == ("resshift", "shift", 15)
    assert info.training["loss"] == "l2"  # the process's own (the release's MSE)


def test_a_process_the_family_cannot_run_is_refused(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not run the 'shift' process"):
        _config(photos, tmp_path / "x", family="sr3", process="shift")


# --- a family defined only here --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    """A per-pixel network: a 1x1 convolution of [y_t, cond, gamma] to ε."""

    hidden: int = 4

    @property
    def size_multiple(self) -> int:
        return 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyConfig":
        return from_dict_strict(cls, d)


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.a = nn.Conv2d(7, config.hidden, 1)
        self.b = nn.Conv2d(config.hidden, 3, 1)

    def forward(self, y_t: torch.Tensor, cond: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        g = gamma.view(-1, 1, 1, 1).to(y_t.dtype).expand(-1, 1, *y_t.shape[-2:])
        return self.b(torch.tanh(self.a(torch.cat([y_t, cond, g], dim=1))))


def test_a_family_defined_in_the_tests_trains_saves_loads_and_upscales(photos: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from dreamsr.cli import app

    toy = Family(name="toy", config_type=ToyConfig, build=ToyNet, presets={"tiny": ToyConfig()},
                 processes=("gaussian",), cond_grid="hr")
    monkeypatch.setitem(FAMILIES, "toy", toy)  # the plain dict the loader reads; no job module is edited
    res = train(_config(photos, tmp_path / "toy", family="toy", steps=2, save_every=0, target="residual"))
    model, info = load_checkpoint(res.export)
    assert info.family == "toy" and isinstance(model, ToyNet) and info.network == ToyConfig()
    ema = res.ema.state_dict()
    assert all(torch.equal(model.state_dict()[k], ema[k].cpu()) for k in ema)
    src = tmp_path / "in.png"
    Image.open(photos / "chelsea.png").convert("RGB").crop((0, 0, 24, 20)).save(src)
    r = CliRunner().invoke(app, ["upscale", str(src), "-w", str(res.export), "--steps", "3", "--precision", "fp32",
                                 "-o", str(tmp_path / "out.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out.png").size == (96, 80) and "toy x4" in r.output
