"""``python -m dreamsr.launch [LAUNCHER OPTIONS] train [TRAIN OPTIONS]``: DREAM training in several processes (DDP).

Why not ``torchrun ... -m dreamsr train ...``: torchrun's argument parser (argparse) reads abbreviations of its own
options anywhere on the command line, the training script's arguments included, so ``--p 1`` (or ``--p=1``) stops it
at once with "ambiguous option: --p could match --print-completion, --print_completion".

This launcher splits the command line itself: the tokens before the word ``train`` are torchrun's options
(``--standalone``, ``--nproc_per_node N``, ``--nnodes``, ``--rdzv-endpoint`` ...), parsed by torchrun's own parser
(:func:`torch.distributed.run.parse_args`) and launched by its own code (:func:`torch.distributed.run.run`, torch's
elastic launch); ``train`` and every token after it are handed to ``python -m dreamsr`` in every worker exactly as
given, never parsed by torchrun. A ``train`` that is the value of a launcher option (``--rdzv-id train``) does not
split the line.

Examples::

    python -m dreamsr.launch --standalone --nproc_per_node 4 train --dataset div2k --data-dir /data --p 1
    python -m dreamsr.launch --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint host:29400 \\
        train --dataset df2k --data-dir /data --preset sr3-div2k --batch-size 64 --p 1

Exit codes: 0 when every worker succeeded, 1 when one failed, 2 for a bad launcher command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["COMMAND", "split_argv", "launch_args", "main"]

COMMAND = "train"  # the only dreamsr command that runs distributed; the others would just run N times
_SET_BY_US = "the launcher runs `python -m dreamsr` itself"


class LaunchUsageError(ValueError):
    """A launcher command line that cannot be run (exit code 2)."""


def _takes_value(parser: argparse.ArgumentParser, token: str) -> bool:
    """Whether launcher option ``token`` (exact, or a unique prefix as argparse allows) consumes the next token."""
    if not token.startswith("-") or "=" in token or token == "--":
        return False
    actions = {s: a for a in parser._actions for s in a.option_strings}  # argparse has no public table
    action = actions.get(token)
    if action is None:
        matches = {id(a): a for s, a in actions.items() if s.startswith("--") and s.startswith(token)}
        if len(matches) != 1:
            return False  # unknown or ambiguous: torchrun's parser reports it below
        action = next(iter(matches.values()))
    return action.nargs != 0


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a launcher command line into (torchrun options, the dreamsr command line from ``train`` on).

    ``train`` and everything after it are returned unchanged. Raises LaunchUsageError when no ``train`` is found.
    """
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    argv = list(argv)
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == COMMAND:
            return argv[:i], argv[i:]
        i += 2 if _takes_value(parser, token) else 1
    raise LaunchUsageError(f"no `{COMMAND}` command found; usage: python -m dreamsr.launch [torchrun options] "
                           f"{COMMAND} [dreamsr train options], e.g. python -m dreamsr.launch --standalone "
                           f"--nproc_per_node 2 {COMMAND} --dataset folder --data-dir photos/ --p 1")


def launch_args(argv: Sequence[str]) -> argparse.Namespace:
    """torchrun's parsed arguments for ``argv``: its options from the part before ``train``, the module
    ``dreamsr``, and the dreamsr command line (from ``train`` on) as the untouched worker arguments."""
    from torch.distributed.run import parse_args

    launcher, command = split_argv(argv)
    if any(t in ("-m", "--module", "--no-python", "--no_python", "--run-path", "--run_path") for t in launcher):
        raise LaunchUsageError(f"drop -m/--module, --no-python and --run-path: {_SET_BY_US}")
    args = parse_args([*launcher, "--module", "dreamsr"])
    if args.training_script != "dreamsr" or args.training_script_args:
        extra = [t for t in [args.training_script, *args.training_script_args] if t != "dreamsr"]
        raise LaunchUsageError(f"only torchrun options may come before `{COMMAND}` ({_SET_BY_US}); "
                               f"unexpected: {' '.join(extra)}")
    args.training_script_args = command
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; returns the exit code (0 ok, 1 a worker failed, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("Exit codes")[0].strip() + "\n\ntorchrun's options:\n", file=sys.stderr)
        from torch.distributed.run import get_args_parser

        get_args_parser().print_help(sys.stderr)
        return 0 if argv else 2
    try:
        args = launch_args(argv)
    except LaunchUsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import run

    try:
        run(args)
    except ChildFailedError as err:
        failures = ", ".join(f"rank {rank} (exit code {f.exitcode})"
                             for rank, f in sorted(err.failures.items())) or "a worker"
        print(f"error: dreamsr {COMMAND} failed in {failures}; its own error is printed above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
