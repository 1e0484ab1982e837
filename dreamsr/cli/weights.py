"""`dreamsr weights ...` (not implemented yet)."""

from __future__ import annotations

import typer

app = typer.Typer(help="List, fetch, inspect and verify model weights.", no_args_is_help=True)
