"""The ``impasto`` command: wires the command modules together."""

from __future__ import annotations

import sys

import typer

from .. import __version__
from . import deploy, jobs, models
from .build import build
from .init import init
from .output import DEBUG
from .predict import predict
from .serve import serve
from .setup import setup
from .ui import ui

app = typer.Typer(
    name="impasto",
    help="Package, serve and scale diffusion models (and any Python model) over HTTP.\n\n"
    "Example: impasto serve examples/tiny-sd",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"impasto {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks on errors (also accepted after the command)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    DEBUG["on"] = DEBUG["on"] or debug


app.command("init")(init)
app.command("serve")(serve)
app.command("setup")(setup)
app.command("build")(build)
app.command("predict")(predict)
app.command("ui")(ui)
app.add_typer(models.app, name="models", help="The local model store.")
app.add_typer(jobs.app, name="jobs", help="Async jobs: the local store, or a server (--url).")
app.add_typer(deploy.app, name="deploy", help="Deploy packages to a cluster (Ray Serve).")


def main() -> None:
    """The ``impasto`` entry point; ``--debug`` works anywhere on the command line."""
    if "--debug" in sys.argv[1:]:
        DEBUG["on"] = True
        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--debug")]
    app()


if __name__ == "__main__":
    main()
