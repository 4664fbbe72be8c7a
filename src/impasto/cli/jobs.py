"""``impasto jobs list | show ID | cancel ID | prune``: async jobs from the command line,
in the local job store (``$IMPASTO_HOME/jobs.db``, ``--store``/``IMPASTO_JOBS_URL`` for
another) or, with ``--url``, through a running server. ``impasto predict --async/--wait``
submits one (see :func:`submit`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError, InputError, NotFound
from .output import ProgressBar, console, err_console, fail

app = typer.Typer(
    help="Async jobs: the local job store, or a running server with --url.\n\n"
    "Example: impasto jobs list --status processing",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Url = Annotated[
    str | None, typer.Option("--url", help="A running server instead of the local store.")
]
Store = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="IMPASTO_JOBS_URL",
        help="The job store (default: sqlite:///$IMPASTO_HOME/jobs.db).",
    ),
]
Results = Annotated[
    str | None,
    typer.Option("--results", help="The result store (default: $IMPASTO_HOME/results)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        raise fail(exc) from None


class _Local:
    """The local job store, with results shown as their locations in the result store."""

    def __init__(self, store: str | None, results: str | None) -> None:
        try:
            from ..config import JobsConfig
            from ..jobs.results import ResultFiles
            from ..jobs.service import results_url, store_url
            from ..jobs.store import open_store
        except ImportError as exc:
            raise ConfigError(f"the job store needs impasto[jobs] ({exc})") from None
        config = JobsConfig(url=store, results={"url": results})
        self.store = open_store(store_url(config))
        self.results = ResultFiles(results_url(config))

    def show(self, job: Any) -> dict[str, Any]:
        from ..jobs.envelope import cog_envelope
        from ..jobs.results import with_urls

        body = cog_envelope(job, self.results, None)
        body["output"] = with_urls(job.output, self.results.location)
        body.pop("urls", None)
        return body


def _client(url: str) -> Any:
    from ..client import Client

    return Client(url, timeout=60)


@app.command("list")
def list_jobs(
    status: Annotated[
        str | None,
        typer.Option("--status", help="starting, processing, succeeded, failed or canceled."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    url: Url = None,
    store: Store = None,
    results: Results = None,
    as_json: JsonFlag = False,
) -> None:
    """The newest jobs first."""
    with _errors():
        if url:
            with _client(url) as client:
                found = [
                    j
                    for _, j in zip(
                        range(limit),
                        client.list(status=status, model=model, page_size=min(limit, 100)),
                        strict=False,
                    )
                ]
        else:
            from ..jobs.records import FROM_COG

            local = _Local(store, results)
            statuses = [FROM_COG.get(s, s) for s in (status or "").split(",") if s]
            page = local.store.page(statuses=statuses, models=[model] if model else [], limit=limit)
            found = [local.show(job) for job in page]
        if as_json:
            for job in found:
                sys.stdout.write(json.dumps(job) + "\n")
            return
        table = Table()
        for name in ("id", "status", "model", "created", "progress"):
            table.add_column(name, no_wrap=True)
        table.add_column("error")
        for job in found:
            progress = job.get("progress") or {}
            step = f"{progress.get('step')}/{progress.get('total')}" if progress else ""
            table.add_row(
                job["id"],
                job["status"],
                job.get("model") or "",
                (job.get("created_at") or "")[:19].replace("T", " "),
                step,
                escape((job.get("error") or "")[:60]),
            )
        console.print(table)


@app.command("show")
def show(job_id: str, url: Url = None, store: Store = None, results: Results = None) -> None:
    """One job as JSON: status, input, output, logs, progress, attempts."""
    with _errors():
        if url:
            with _client(url) as client:
                body = client.get(job_id)
        else:
            local = _Local(store, results)
            job = local.store.get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id} in the store")
            body = local.show(job)
        sys.stdout.write(json.dumps(body, indent=2) + "\n")


@app.command("cancel")
def cancel(job_id: str, url: Url = None, store: Store = None) -> None:
    """Cancel a job: a queued one never starts; a running one stops within a step (in the
    local store: at its server's next heartbeat)."""
    with _errors():
        if url:
            with _client(url) as client:
                body = client.cancel(job_id)
            status = body["status"]
        else:
            local = _Local(store, None)
            job = local.store.cancel(job_id, now=time.time())
            if job is None:
                raise NotFound(f"no job {job_id} in the store")
            status = job.cog_status
        note = " (its server stops it at its next step)" if status == "processing" else ""
        console.print(f"{job_id}: {status}{note}")


@app.command("prune")
def prune(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Finished this long ago: 30m, 12h, 7d or seconds."),
    ] = "7d",
    store: Store = None,
    results: Results = None,
) -> None:
    """Delete finished jobs and their result files (servers also do this every hour past
    jobs.retention_s)."""
    with _errors():
        seconds = _duration(older_than)
        local = _Local(store, results)
        ids = local.store.prune(before=time.time() - seconds)
        for ident in ids:
            local.results.delete(ident)
        console.print(f"pruned {len(ids)} job(s) finished more than {older_than} ago")


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise InputError(
            f"--older-than: {text!r} is not a duration such as 30m, 12h or 7d", field="older_than"
        )
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


# impasto predict --async / --wait -------------------------------------------------------------
def submit(url: str, payload: Any, endpoint: str | None, wait: bool, output: str | None) -> None:
    """Submit ``payload`` as a job to the server at ``url``; print its id, or wait for it
    (a progress bar on a terminal, fed by its events) and print or write its output."""
    from ..client import Client

    if not isinstance(payload, dict):
        raise InputError("a job's input is a JSON object of the endpoint's fields", field="input")
    model, ep = None, None
    if endpoint:
        if ":" not in endpoint:
            raise InputError(
                "--endpoint: with --async or --wait, name it MODEL:ENDPOINT", field="endpoint"
            )
        model, ep = endpoint.rsplit(":", 1)
    with Client(url, timeout=60) as client:
        job = client.submit(payload, model=model, endpoint=ep or None)
        if not wait:
            sys.stdout.write(job["id"] + "\n")
            return
        bar = _Bar()
        try:
            done = client.wait(job["id"], on_event=bar)
        finally:
            bar.close()
        if done["status"] != "succeeded":
            from ..errors import Canceled, ModelError

            cls = Canceled if done["status"] == "canceled" else ModelError
            raise cls(f"job {job['id']} {done['status']}: {done.get('error') or ''}".rstrip(": "))
        value = done.get("output")
        if output:
            _write(client, value, Path(output))
            return
        sys.stdout.write(json.dumps(value) + "\n")


def _write(client: Any, value: Any, out: Path) -> None:
    """A single file output downloaded to ``out``; anything else written as JSON."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        response = client._http.get(value)
        response.raise_for_status()
        out.write_bytes(response.content)
    else:
        out.write_text(json.dumps(value) + "\n")
    console.print(f"wrote {out}")


class _Bar(ProgressBar):
    """The progress bar, and a ``started`` line where there is no terminal to draw it on."""

    def __call__(self, event: Any) -> None:
        if event.kind == "start" and not err_console.is_terminal:
            err_console.print("started")
        super().__call__(event)


__all__ = ["app", "submit"]
