"""What a released ``.pth`` file is, so that every ``dreamsr weights convert --from ...`` refuses another family's
file with one line that names the right command; and the output checks all the release converters share.

Recognised layouts (after undoing a ``state_dict`` wrapper and ``module.``/``_orig_mod.`` prefixes):

- ``sr3``: SR3's / DREAM's ``GaussianDiffusion`` state dict (``denoise_fn.*`` and schedule buffers, no LR encoder);
- ``idm``: IDM's ``GaussianDiffusion`` state dict (``denoise_fn.*`` plus the LR encoder ``encoder.*``, the unused
  ``imnet.*`` and the ``ddim_c1`` buffer);
- ``resshift``: ResShift's ``UNetModelSwin`` (``input_blocks.*``, ``time_embed.*``);
- ``autoencoder``: a VQ autoencoder (``encoder.conv_in.*``, ``quantize.embedding.weight``; ResShift's
  ``autoencoder_vq_f4.pth``);
- ``train-state``: a training state of the SR3 / IDM code (``*_opt.pth``: epoch, iter, optimizer; no weights);
- ``dreamsr``: dreamsr's own SR3 UNet layout (``noise_embed.*``, ``head.*``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from dreamsr.errors import CheckpointError, ConfigError, OutputError, OutputExistsError

__all__ = ["LAYOUTS", "identify", "describe", "require_layout", "check_output"]

LAYOUTS: tuple[str, ...] = ("sr3", "idm", "resshift", "autoencoder", "train-state", "dreamsr")
_WRAPPERS = ("state_dict", "model", "params_ema", "params", "net")
_PREFIXES = ("module.", "_orig_mod.")


def _inner(obj: Any) -> Any:
    """The state dict inside a wrapper dict (``{"state_dict": {...}}`` and the like), else ``obj``."""
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def _keys(obj: Any) -> list[str]:
    """String keys of ``obj``'s state dict with wrapper prefixes removed."""
    out = []
    for k in _inner(obj) if isinstance(_inner(obj), Mapping) else ():
        if not isinstance(k, str):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if k.startswith(prefix):
                    k, changed = k[len(prefix):], True
        out.append(k)
    return out


def identify(obj: Any) -> str | None:
    """The layout (one of :data:`LAYOUTS`) of an object read from a ``.pth`` file, or None if unknown."""
    if not isinstance(obj, Mapping):
        return None
    if "optimizer" in obj and ("iter" in obj or "epoch" in obj):
        return "train-state"
    keys = _keys(obj)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("denoise_fn.") and (has("encoder.") or has("imnet.") or "ddim_c1" in keys):
        return "idm"
    if has("denoise_fn."):
        return "sr3"
    if has("input_blocks.") and has("time_embed."):
        return "resshift"
    if has("encoder.conv_in.") or "quantize.embedding.weight" in keys:
        return "autoencoder"
    if has("noise_embed.") and has("head."):
        return "dreamsr"
    return None


_PHRASES = {
    "sr3": "a released SR3/DREAM state dict ('denoise_fn.*' and schedule buffers, no LR encoder): convert it "
           "with --from sr3",
    "idm": "a released IDM state dict (LR encoder 'encoder.*', 'imnet.*', 'ddim_c1'): convert it with --from idm",
    "resshift": "a ResShift UNet ('input_blocks.*', 'time_embed.*'): convert it with --from resshift",
    "autoencoder": "a VQ autoencoder like ResShift's autoencoder_vq_f4.pth: give it as --autoencoder with "
                   "--from resshift",
    "dreamsr": "dreamsr's own SR3 UNet layout: convert it without --from (--preset NAME --scale N)",
}


def describe(obj: Any) -> str:
    """One phrase saying what ``obj`` is and, for a known layout, which command converts it."""
    layout = identify(obj)
    if layout == "train-state":
        return (f"a training state (`*_opt.pth`: epoch {obj.get('epoch')}, iter {obj.get('iter')}, optimizer "
                "state) with no weights; convert the matching `*_gen.pth`")
    if layout is not None:
        return _PHRASES[layout]
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a state dict"
    keys = _keys(obj) or [str(k) for k in obj]
    if not keys:
        return "an empty dict"
    return f"a dict of {len(keys)} entries ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"


def require_layout(obj: Any, layout: str, source: str, what: str) -> None:
    """CheckpointError ``"{source}: not {what}; it looks like ..."`` unless ``obj`` has ``layout``."""
    if identify(obj) != layout:
        raise CheckpointError(f"{source}: not {what}; it looks like {describe(obj)}")


def check_output(dst: Path, *sources: Path, suffix: str | tuple[str, ...] = ".safetensors",
                 overwrite: bool = False) -> None:
    """Before any work: ConfigError unless ``dst`` is a ``suffix`` file in an existing folder that is none of
    ``sources`` (never written over, ``overwrite`` or not); OutputError when ``dst`` is a folder;
    OutputExistsError when it exists and ``overwrite`` is False; CheckpointError for a source that is not a file.
    Nothing is written."""
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    for src in sources:
        if not src.is_file():
            raise CheckpointError(f"input file not found: {src}")
    if dst.suffix not in suffixes:
        raise ConfigError(f"output must be a {' or '.join(suffixes)} file, got {dst}")
    if not dst.parent.is_dir():
        raise ConfigError(f"output folder does not exist: {dst.parent}")
    for src in sources:
        if dst.exists() and os.path.samefile(dst, src):
            raise ConfigError(f"output and input are the same file: {dst} (an input is never written over)")
    if dst.is_dir():
        raise OutputError(f"{dst}: is a folder")
    if not overwrite and (dst.exists() or dst.is_symlink()):
        raise OutputExistsError(f"{dst}: exists (use --overwrite to replace it)")