"""``impasto predict PATH``: run one prediction in-process, or against a running server."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import typer

from .. import logs
from ..errors import (
    Canceled,
    ImpastoError,
    InputError,
    MalformedInput,
    ModelError,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    PredictTimeout,
)
from ..media import encode, find_media, to_jsonable
from ..package import load_package
from ..serving import runner_for
from .output import configure_logging, console, handle_errors


def _input(data: str | None, file: Path | None, example: str | None, path: Path) -> Any:
    given = [x for x in (data, file, example) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one of -d JSON, -f FILE or --example NAME", field="input")
    if example is not None:
        return load_package(path).example(example).input
    text = data if data is not None else Path(file).read_text()  # type: ignore[arg-type]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"the input is not valid JSON: {exc}", field="input") from None


def _write(result: Any, out: Path | None) -> None:
    media = find_media(result)
    if out is not None and len(media) == 1:
        fmt = out.suffix.lstrip(".").lower() or None
        out.write_bytes(encode(media[0], format=fmt).data)
        console.print(f"wrote {out}")
        return
    text = json.dumps(to_jsonable(result), indent=2, ensure_ascii=False)
    if out is not None:
        out.write_text(text + "\n")
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text + "\n")


async def _run_local(
    path: Path, payload: Any, endpoint: str | None, out: Path | None, log_level: str
) -> None:
    package = load_package(path)
    configure_logging(log_level, package.redactor)  # the model's own log lines are redacted too
    runner = runner_for(package)
    undo = logs.install(package.redactor)
    try:
        if not await runner.load():
            raise NotReady(f"load() failed: {runner.load_error}")
        result = await runner.predict(payload, endpoint)
        if inspect.isasyncgen(result):
            async for chunk in result:
                text = chunk.decode() if isinstance(chunk, bytes) else chunk
                sys.stdout.write(text if isinstance(text, str) else json.dumps(to_jsonable(text)))
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        _write(result, out)
    finally:
        await runner.aclose()
        undo()


_REMOTE_ERRORS: dict[Any, type[ImpastoError]] = {
    cls.type: cls
    for cls in (
        InputError,
        MalformedInput,
        PayloadTooLarge,
        NotFound,
        NotReady,
        Overloaded,
        PredictTimeout,
        Canceled,
        ModelError,
    )
}


def _run_remote(url: str, payload: Any, endpoint: str | None, out: Path | None) -> None:
    target = url.rstrip("/")
    if httpx.URL(target).path in ("", "/"):
        target += f"/{endpoint or 'predict'}"
    with httpx.Client(timeout=None) as client, client.stream("POST", target, json=payload) as r:
        if r.status_code >= 400:
            body = r.read()
            try:
                error = json.loads(body)["error"]
                kind, message = error.get("type"), error["message"]
            except Exception:
                kind, message = None, body.decode(errors="replace")
            # the exit code of the error the server named (422 -> 2, 503 -> 6, 504 -> 8, ...)
            cls = _REMOTE_ERRORS.get(kind, ModelError)
            raise cls(f"{target} answered {r.status_code}: {message}")
        if out is not None:
            with out.open("wb") as fh:
                for chunk in r.iter_bytes():
                    fh.write(chunk)
            console.print(f"wrote {out}")
            return
        for chunk in r.iter_text():
            sys.stdout.write(chunk)
        sys.stdout.write("\n")


@handle_errors
def predict(
    path: Path = typer.Argument(Path("."), help="The package folder."),
    data: str | None = typer.Option(None, "-d", "--data", help="Input as JSON text."),
    file: Path | None = typer.Option(None, "-f", "--file", help="Input from a JSON file."),
    example: str | None = typer.Option(None, "--example", help="A named input in examples.yaml."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the result here."),
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="Endpoint to call."),
    url: str | None = typer.Option(None, "--url", help="Send to a running server instead."),
    log_level: str = typer.Option("warning", envvar="IMPASTO_LOG_LEVEL"),
) -> None:
    """Run one prediction: load the package in-process (or use --url) and print the output."""
    payload = _input(data, file, example, path)
    if url:
        _run_remote(url, payload, endpoint, output)
        return
    asyncio.run(_run_local(path, payload, endpoint, output, log_level))
