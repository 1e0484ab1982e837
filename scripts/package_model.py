#!/usr/bin/env python3
"""Package an exported checkpoint as the shipped default: fp16, recommended sampling in the metadata, and the
weights.toml entry printed (sha256, bytes, params).

Usage::

    python scripts/package_model.py RUN/model.safetensors dreamsr/assets/dreamsr-x4-small.safetensors \\
        --steps 10 --start 500 --back-project
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamsr.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from dreamsr.jobs.weights import sha256_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--start", type=int, default=None, help="recommended truncated start (trained step t0)")
    ap.add_argument("--back-project", action="store_true")
    args = ap.parse_args()
    model, info = load_checkpoint(args.src)
    info = CheckpointInfo(network=info.network, diffusion=info.diffusion, scale=info.scale, color=info.color,
                          training=info.training, dreamsr_version=info.dreamsr_version,
                          sampling={"steps": args.steps, "back_project": bool(args.back_project),
                                    **({"start": args.start} if args.start else {})})
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.dst, model, info, dtype="fp16")
    print(f'sha256      = "{sha256_file(args.dst)}"')
    print(f"bytes       = {args.dst.stat().st_size}")
    print(f"params      = {model.num_parameters()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
