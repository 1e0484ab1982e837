"""`dreamsr bench` (not implemented yet)."""

from __future__ import annotations

from dreamsr.cli.common import EXIT_USAGE, fail


def bench() -> None:
    """Not implemented yet."""
    fail("not implemented yet", EXIT_USAGE)
