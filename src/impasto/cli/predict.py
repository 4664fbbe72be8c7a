"""``impasto predict PATH``: run one prediction in-process, or against a running server.

In-process, the prediction takes the same call path as a request (admit, decode, run) and
its result is encoded by the same code the server answers with: the same compact JSON, and
``output_format``/``quality`` from the input honoured the same way. ``-o FILE`` writes one
media output's bytes (its format from the file's extension), ``-o FOLDER/`` one file per
media output.
"""

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
    NotAcceptable,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    PredictTimeout,
    Unreachable,
)
from ..media import encode, find_media, normalize_format
from ..package import load_package
from ..server.requests import prefs_from
from ..server.responses import encode_result
from ..serving import runner_for
from .output import (
    LogLevel,
    ProgressBar,
    configure_logging,
    console,
    handle_errors,
)


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


def write_result(result: Any, output: str | None, prefs: Any, media: Any) -> None:
    """Print the server's JSON for ``result``, or write its media (see the module doc)."""
    found = find_media(result)
    out = Path(output) if output else None
    if out is not None and (out.is_dir() or output.endswith(("/", "\\"))):  # type: ignore[union-attr]
        if not found:
            raise InputError(f"-o {out}: the result holds no media to write", field="output")
        out.mkdir(parents=True, exist_ok=True)
        for i, value in enumerate(found):
            enc = encode(value, format=prefs.format, quality=prefs.quality, config=media)
            target = out / f"{i}.{enc.format}"
            target.write_bytes(enc.data)
            console.print(f"wrote {target}")
        return
    if out is not None and found:
        if len(found) > 1:
            raise InputError(
                f"-o {out}: the result holds {len(found)} media outputs; pass a folder "
                "(-o out/) to write one file each",
                field="output",
            )
        fmt = _format_of(out) or prefs.format
        enc = encode(found[0], format=fmt, quality=prefs.quality, config=media)
        out.write_bytes(enc.data)
        console.print(f"wrote {out}")
        return
    response = encode_result(result, prefs, media)  # the same bytes the server answers
    text = bytes(response.body).decode()
    if out is not None:
        out.write_text(text + "\n")
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text + "\n")


def _format_of(out: Path) -> str | None:
    suffix = out.suffix.lstrip(".").lower()
    if not suffix:
        return None
    for kind in ("image", "video"):
        try:
            return normalize_format(suffix, kind)
        except (InputError, ValueError):
            continue
    return None


async def _run_local(
    path: Path, payload: Any, endpoint: str | None, out: str | None, log_level: str
) -> None:
    package = load_package(path)
    configure_logging(log_level, package.redactor)  # the model's own log lines are redacted too
    runner = runner_for(package)
    undo = logs.install(package.redactor)
    progress = ProgressBar()
    try:
        if not await runner.load():
            raise NotReady(f"load() failed: {runner.load_error}")
        ep = runner.endpoint(endpoint)
        fields = ep.input_model.model_fields if ep.input_model else None
        prefs = prefs_from(payload, fields)
        result = await runner.predict(payload, endpoint, output=prefs, on_event=progress)
        progress.close()
        if inspect.isasyncgen(result):
            async for chunk in result:
                text = chunk.decode() if isinstance(chunk, bytes) else chunk
                sys.stdout.write(text if isinstance(text, str) else json.dumps(text))
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        await asyncio.to_thread(write_result, result, out, prefs, runner.config.media)
    finally:
        progress.close()
        await runner.aclose()
        undo()


_REMOTE_ERRORS: dict[Any, type[ImpastoError]] = {
    cls.type: cls
    for cls in (
        InputError,
        MalformedInput,
        NotAcceptable,
        PayloadTooLarge,
        NotFound,
        NotReady,
        Overloaded,
        PredictTimeout,
        Canceled,
        ModelError,
    )
}


def _run_remote(url: str, payload: Any, endpoint: str | None, output: str | None) -> None:
    out = Path(output) if output else None
    target = url.rstrip("/")
    if httpx.URL(target).path in ("", "/"):
        target += f"/{endpoint or 'predict'}"
    try:
        with httpx.Client(timeout=None) as client, client.stream("POST", target, json=payload) as r:
            _remote_answer(r, target, out)
    except httpx.TransportError as exc:
        raise Unreachable(
            f"no server answers at {target} ({type(exc).__name__}); is `impasto serve` running?"
        ) from None


def _remote_answer(r: httpx.Response, target: str, out: Path | None) -> None:
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
    output: str | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Write the result here: a file for one media output or JSON, a folder (ending "
        "in /) for one file per media output.",
    ),
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="Endpoint to call."),
    url: str | None = typer.Option(None, "--url", help="Send to a running server instead."),
    as_job: bool = typer.Option(
        False, "--async", help="With --url: submit it as a job and print its id."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="With --url: submit it as a job and wait (a progress bar)."
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.warning,
        envvar="IMPASTO_LOG_LEVEL",
        case_sensitive=False,
        help="How much to log.",
    ),
) -> None:
    """Run one prediction: load the package in-process (or use --url) and print the output.

    Example: impasto predict examples/tiny-sd -d '{"prompt": "a red fox"}' -o fox.png
    """
    payload = _input(data, file, example, path)
    if as_job or wait:
        if not url:
            raise InputError("--async and --wait submit a job to a server: add --url", field="url")
        from .jobs import submit

        submit(url, payload, endpoint, wait, output)
        return
    if url:
        _run_remote(url, payload, endpoint, output)
        return
    asyncio.run(_run_local(path, payload, endpoint, output, log_level))
