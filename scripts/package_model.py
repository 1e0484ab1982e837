#!/usr/bin/env python3
"""Package an exported checkpoint as a shipped model: fp16 tensors, the recommended sampling in the metadata
(everything else the checkpoint says about itself kept: family, process, network, training), and the
weights.toml entry's numbers printed (sha256, bytes, params).

Usage::

    python scripts/package_model.py RUN/model.safetensors dreamsr/assets/dreamsr-x4-small.safetensors \\
        --steps 10 --start 500 --back-project
    python scripts/package_model.py RUN/model.safetensors dreamsr/assets/dreamsr-x4-resshift.safetensors \\
        --steps 1 --back-project --ensemble 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from dreamsr.checkpoint import load_checkpoint, save_checkpoint
from dreamsr.jobs.weights import sha256_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--start", type=int, default=None, help="recommended truncated start (trained step t0)")
    ap.add_argument("--back-project", action="store_true")
    ap.add_argument("--ensemble", type=int, default=1, help="recommended geometric self-ensemble size (1, 2, 4, 8)")
    ap.add_argument("--profile", action="append", default=[], metavar="NAME=JSON",
                    help='a named sampling profile, e.g. detail=\'{"steps": 15, "back_project": false}\'; the '
                    "recommendation above is also stored as the profile named by --default-profile")
    ap.add_argument("--default-profile", default="fidelity", help="the name of the recommendation above when "
                    "--profile is given (default: fidelity)")
    args = ap.parse_args()
    model, info = load_checkpoint(args.src)
    sampling = {"steps": args.steps, "back_project": bool(args.back_project),
                **({"start": args.start} if args.start else {}),
                **({"ensemble": args.ensemble} if args.ensemble > 1 else {})}
    profiles = {}
    for item in args.profile:
        name, _, text = item.partition("=")
        profiles[name] = json.loads(text)
    if profiles:
        profiles = {args.default_profile: sampling, **profiles}
    info = dataclasses.replace(info, sampling=sampling, profiles=profiles)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.dst, model, info, dtype="fp16")
    print(f'sha256      = "{sha256_file(args.dst)}"')
    print(f"bytes       = {args.dst.stat().st_size}")
    print(f"params      = {sum(p.numel() for p in model.parameters())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
