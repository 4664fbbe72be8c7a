"""``impasto models ...``: the local model store from the command line.

Each command parses its arguments, calls :class:`impasto.store.ModelStore` and prints; store
errors become one red line on stderr and the error's exit code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..store import ModelStore, ProgressFn, StoredModel
from ..store.files import pickle_files
from .output import fail

app = typer.Typer(
    help="Manage the local model store ($IMPASTO_HOME/models).\n\nExample: impasto models list",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table or YAML.")]


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn errors into one red line and the error's exit code (a traceback only with --debug)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        raise fail(exc) from None


@contextmanager
def _progress() -> Iterator[ProgressFn]:
    """A copy/hash progress bar on stderr, started at the first update.

    Starting late keeps it from fighting the hub client's own download bars.
    """
    console = _err()
    bar: Progress | None = None
    task = TaskID(0)

    def update(rel: str, done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            quiet = not console.is_terminal
            bar = Progress(*columns, console=console, transient=True, disable=quiet)
            bar.start()
            task = bar.add_task(rel, total=total)
        bar.update(task, description=rel, completed=done, total=total)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _created(stored: StoredModel) -> str:
    return f"{stored.manifest.created_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}"


def _summary(stored: StoredModel) -> dict[str, Any]:
    m = stored.manifest
    return {
        "ref": str(stored.ref),
        "name": m.name,
        "version": m.version,
        "framework": m.framework,
        "pipeline_class": m.pipeline_class,
        "size": m.size,
        "created": m.created,
        "path": str(stored.path),
    }


@app.command("import")
def import_(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="Name, optional version.")],
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE", help="A folder written by save_pretrained, or a hub repo id org/name."
        ),
    ],
    revision: Annotated[
        str | None, typer.Option(help="Hub branch, tag or commit to download.")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="Download only *.VARIANT.safetensors weights, e.g. fp16.")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Hub file pattern to download (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Hub file pattern to skip (repeatable).")
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle", help="Accept .bin/.pt/.ckpt/.pkl weights, which can run code on load."
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Re-read every stored file and check its sha256 afterwards."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace NAME:VERSION if it exists.")
    ] = False,
) -> None:
    """Import a model folder or a Hugging Face repo; prints the stored NAME:VERSION.

    Example: impasto models import sd21 stabilityai/stable-diffusion-2-1
    """
    store = ModelStore()
    with _errors():
        with _progress() as progress:
            stored = store.import_source(
                ref,
                source,
                revision=revision,
                variant=variant,
                include=include,
                exclude=exclude,
                allow_pickle=allow_pickle,
                force=force,
                progress=progress,
            )
        if pickles := pickle_files(stored.manifest.files):
            _err().print(
                f"[yellow]warning:[/yellow] imported pickle weights ({escape(', '.join(pickles))});"
                " load them only if you trust the source"
            )
        if verify:
            store.resolve(stored.ref, verify=True)
    typer.echo(str(stored.ref))


@app.command("list")
def list_(json_: JsonFlag = False) -> None:
    """List stored model versions.

    Example: impasto models list --json
    """
    with _errors():
        models = ModelStore().list()
    if json_:
        typer.echo(json.dumps([_summary(m) for m in models], indent=2))
        return
    if not models:
        _err().print("no models in the store; add one with `impasto models import NAME SOURCE`")
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("REF", no_wrap=True)
    table.add_column("PIPELINE")
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("CREATED (UTC)", no_wrap=True)
    for m in models:
        row = (str(m.ref), m.manifest.pipeline_class or m.manifest.framework)
        table.add_row(*map(escape, row), _human(m.manifest.size), _created(m))
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: never truncate refs for the reader downstream
        console = Console(highlight=False, width=1000)
    console.print(table)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME:VERSION or NAME:latest.")],
    json_: JsonFlag = False,
) -> None:
    """Print a stored version's manifest (model.yaml).

    Example: impasto models show tiny-sd:latest
    """
    with _errors():
        stored = ModelStore().locate(ref)
    data = stored.manifest.to_dict()
    if json_:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command("rm")
def rm(
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME:VERSION or NAME:latest.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove one stored version (NAME:latest removes only the newest).

    Example: impasto models rm sd21:20261201-120000
    """
    store = ModelStore()
    with _errors():
        stored = store.locate(ref)
        question = f"Remove {stored.ref} ({_human(stored.manifest.size)})?"
        if not yes and not typer.confirm(question, err=True):
            _err().print("nothing removed")
            raise typer.Exit(1)
        store.remove(stored.ref)
    typer.echo(f"removed {stored.ref}")


@app.command("export")
def export(
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME:VERSION or NAME:latest.")],
    file: Annotated[Path, typer.Argument(help="Archive to write: .tar or .tar.gz.")],
) -> None:
    """Write a stored version, manifest included, as a tar archive.

    Example: impasto models export sd21:latest sd21.tar
    """
    with _errors():
        path = ModelStore().export(ref, file)
    typer.echo(str(path))


@app.command("import-archive")
def import_archive(
    file: Annotated[Path, typer.Argument(help="An archive written by `impasto models export`.")],
    name: Annotated[
        str | None, typer.Option(metavar="NAME[:VERSION]", help="Store it under another ref.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the version if it exists.")
    ] = False,
) -> None:
    """Import an exported archive after checking every file's sha256.

    Example: impasto models import-archive sd21.tar
    """
    with _errors():
        stored = ModelStore().import_archive(file, name, force=force)
    typer.echo(str(stored.ref))
