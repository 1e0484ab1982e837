"""Shared pytest fixtures.

- ``tiny_checkpoint``: a deterministic tiny-preset dreamsr checkpoint (x4) written to ``tmp_path``.
- ``hub_server``: a real loopback Hugging Face Hub (``tests/hub_server.FakeHub``) with the HF client pointed at
  it through the environment (HF_ENDPOINT, a private HF_HUB_CACHE, telemetry off, online, no token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from tests.hub_server import FakeHub


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """Path of ``tiny.safetensors``: the ``tiny`` UNet preset (seed 0), default DiffusionConfig, scale 4, fp32."""
    from dreamsr.checkpoint import CheckpointInfo, save_checkpoint
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.unet import PRESETS, UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet(PRESETS["tiny"])
    info = CheckpointInfo(network=model.config, diffusion=DiffusionConfig(), scale=4,
                          training={"p": 1.0, "steps": 0, "dataset": "none"}, dreamsr_version="test")
    return save_checkpoint(tmp_path / "tiny.safetensors", model, info)


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A started FakeHub; HF_ENDPOINT points at it and HF_HUB_CACHE is ``tmp_path/"hf-cache"``.

    huggingface_hub reads HF_ENDPOINT at import, so library code must pass ``endpoint=`` (dreamsr.weights reads
    the variable at call time and does). Never leaves the client a path into its ~23 s retry loop.
    """
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        yield hub


@pytest.fixture(autouse=True)
def _isolated_user_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own registry, HF cache and torch hub cache out of every test."""
    home = tmp_path_factory.mktemp("isolated-home")
    monkeypatch.delenv("DREAMSR_WEIGHTS", raising=False)
    monkeypatch.delenv("DREAMSR_DATA", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach the network unless it starts a loopback Hub
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
