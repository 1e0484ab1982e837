"""Model resolution: local files, the ``weights.toml`` registry and Hugging Face Hub downloads.

(Stub: only local paths so far; the registry and Hub download are issue #4.)
"""

from __future__ import annotations

from pathlib import Path

from dreamsr.errors import ModelNotFoundError

__all__ = ["resolve_weights"]


def resolve_weights(weights: str | None = None, model: str | None = None) -> Path:
    """Return a local checkpoint path: ``weights`` (a file) > ``model`` (registry name or hf:// URL)."""
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"weights file not found: {p}")
        return p
    raise ModelNotFoundError("no model available: pass --weights PATH to a dreamsr .safetensors checkpoint")
