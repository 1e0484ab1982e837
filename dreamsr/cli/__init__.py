"""The ``dreamsr`` command line (Typer). The only package that imports typer and rich.

Each sub-command lives in its own module; this file only assembles them, explicitly.
"""

from __future__ import annotations

import typer

from dreamsr.cli.common import exit_code_for, fail
from dreamsr.errors import DreamSRError

app = typer.Typer(
    name="dreamsr",
    help="Diffusion super-resolution trained with DREAM (Zhou et al., CVPR 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("version")
def version() -> None:
    """Print the dreamsr version."""
    from dreamsr import __version__

    typer.echo(__version__)


def _version_option(value: bool) -> None:
    """``--version``: print what ``dreamsr version`` prints, then exit before any command runs."""
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _main(show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_version_option,
                                            help="Print the dreamsr version and exit (as `dreamsr version`).")
          ) -> None:
    # no docstring: the app's help (typer.Typer(help=...)) stays the one shown
    pass


def _register() -> None:
    from dreamsr.cli import upscale as _upscale
    from dreamsr.cli import weights as _weights
    from dreamsr.cli import train as _train
    from dreamsr.cli import evaluate as _evaluate
    from dreamsr.cli import bench as _bench

    app.command("upscale", no_args_is_help=True)(_upscale.upscale)
    app.add_typer(_weights.app, name="weights")
    app.command("train")(_train.train)
    app.command("eval")(_evaluate.evaluate)
    app.command("bench")(_bench.bench)


_register()


def main() -> None:
    """Console-script entry point: runs the app, turning DreamSRError into one red line."""
    try:
        app()
    except DreamSRError as err:
        fail(str(err), exit_code_for(err))
