"""Shared pytest fixtures (shared helper functions and stand-ins: ``tests/_helpers.py``).

- ``tiny_checkpoint``: a deterministic tiny-preset dreamsr checkpoint (x4) written to ``tmp_path``.
- ``one_thread``: one torch intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).
- ``random_metric_weights``: a TORCH_HOME with random LPIPS (squeezenet) and FID Inception weights.
- ``hub_server``: a real loopback Hugging Face Hub (``tests/hub_server.FakeHub``) with the HF client pointed at
  it through the environment (HF_ENDPOINT, a private HF_HUB_CACHE, telemetry off, online, no token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from tests._helpers import save_random_weights, write_tiny_checkpoint
from tests.hub_server import FakeHub


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """Path of ``tiny.safetensors``: the ``tiny`` UNet preset (seed 0), image target, scale 4, fp32."""
    return write_tiny_checkpoint(tmp_path / "tiny.safetensors", scale=4, target="image",
                                 training={"p": 1.0, "steps": 0, "dataset": "none"})


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models gain nothing from two, and on a shared 2-core machine spinning OpenMP
    threads of several processes slow each other down by 10x or more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_metric_weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME holding random squeezenet + FID Inception weights under the real names
    (:func:`tests._helpers.save_random_weights`); kept in pytest's cache between runs (the files take seconds to
    make on two busy cores), else in a temporary folder."""
    cache = getattr(request.config, "cache", None)
    home = Path(cache.mkdir("dreamsr-random-metric-weights-v1")) if cache is not None \
        else tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    marker = folder / "complete"
    if not marker.is_file() or marker.read_text() != torch.__version__:
        save_random_weights(folder)
        marker.write_text(torch.__version__)
    return home


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A started FakeHub; HF_ENDPOINT points at it and HF_HUB_CACHE is ``tmp_path/"hf-cache"``.

    huggingface_hub reads HF_ENDPOINT at import, so library code must pass ``endpoint=`` (dreamsr.jobs.weights reads
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
