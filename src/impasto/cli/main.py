"""The ``impasto`` command: wires the command modules together."""

from __future__ import annotations

import typer

from . import models
from .init import init
from .output import DEBUG
from .predict import predict
from .serve import serve
from .setup import setup

app = typer.Typer(
    name="impasto",
    help="Package, serve and scale diffusion models (and any Python model) over HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    DEBUG["on"] = debug


app.command("init")(init)
app.command("serve")(serve)
app.command("setup")(setup)
app.command("predict")(predict)
app.add_typer(models.app, name="models", help="The local model store.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
