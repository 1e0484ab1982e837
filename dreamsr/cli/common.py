"""Shared CLI plumbing: the console, error reporting and exit codes.

Exit codes: 0 success, 1 a job failed (some image/file failed, training stopped), 2 usage error.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.text import Text

from dreamsr.errors import ConfigError, DreamSRError

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def printable(message: str) -> str:
    """``message`` with every control character (newlines, terminal escape codes from a file's bytes or name) as a
    visible escape such as ``\\x1b``: what a message quotes from an untrusted file never drives the terminal and
    never breaks the one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in message)


def error_line(message: str, to: Console | None = None) -> None:
    """One red ``error:`` line on stderr (or on ``to``, e.g. a live progress display's console); the message is
    printed literally (no markup), so paths keep their brackets, and through :func:`printable`."""
    (to or console).print(Text.assemble(("error:", "red"), " ", printable(message)), soft_wrap=True)


def option_message(message: str, options: dict[str, str]) -> str:
    """A library message that starts with a setting's name (``"steps must be ..."``), restated with the
    command-line option that sets it (``"--steps must be ..."``); ``options`` maps names to flags."""
    head, _, rest = message.partition(" ")
    return f"{options[head]} {rest}" if head in options else message


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one red line to stderr and exit with ``code``."""
    error_line(message)
    raise SystemExit(code)


def exit_code_for(err: DreamSRError) -> int:
    """Usage errors (bad options) exit 2, everything else 1."""
    return EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILED


def is_tty() -> bool:
    return sys.stderr.isatty()
