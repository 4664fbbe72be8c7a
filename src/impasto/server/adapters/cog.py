"""Cog's container API over the call path: what Replicate-style clients and Cog's own tools
send to a model container.

``POST /predictions`` runs the default model's default endpoint synchronously and answers
Cog's prediction object (``id``, ``status``, ``output``, ``logs``, ``error``, ``metrics``,
timestamps); media outputs are ``data:`` URIs, as Cog returns files when no upload URL is
set. ``Accept: text/event-stream`` streams a generator endpoint's ``start``, ``output``,
``log`` and ``completed`` events (406 on any other endpoint, as Cog does). ``GET
/health-check`` always answers 200 with Cog's states (``STARTING``, ``READY``, ``BUSY``,
``SETUP_FAILED``, ``DEFUNCT``). Each model is also at ``/models/{name}/predictions`` and
``/models/{name}/health-check``, and each of its other endpoints at
``/models/{name}:{endpoint}/predictions``.

Statuses follow Cog: a model that raised is 200 with ``status: "failed"``; invalid input is
422 ``{"detail": [{"loc": ["body", "input", field], ...}]}`` (unknown input keys are
dropped); a full queue is 409 "At capacity" (Cog has no queue: ``runtime.max_queue: 0``
gives its exact behaviour); a model still loading is 503 "Setup has not finished yet".

Asynchronous predictions (``Prefer: respond-async``, webhooks), ``PUT /predictions/{id}``,
``GET /predictions[/{id}]`` and cancel need a durable owner for the prediction: the job
store (:mod:`impasto.jobs.cog_api`) serves them on top of :func:`read_prediction_request`,
:func:`prediction_body` and :func:`cog_output`, which are the whole protocol; a
``respond-async`` request is handed to it from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ... import __version__
from ...accept import wants
from ...config import MediaConfig
from ...context import Event
from ...errors import (
    Canceled,
    ImpastoError,
    InputError,
    MalformedInput,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
)
from ...media import encode, find_media, is_media, to_jsonable
from ...prediction import Prediction
from ..callpath import CallPath, Gathered, Inbound, Target
from ..requests import header, media_type
from ..responses import ClosingStream, FastJSONResponse, dumps
from .fields import fields_of

_COG = "impasto.cog"
SETUP_NOT_FINISHED = (
    "Setup has not finished yet. Wait until it has finished, or GET /health-check for status."
)


class NotAcceptable(ImpastoError):
    status = 406
    type = "not_acceptable"


class _BadJSON(MalformedInput):
    """A body that is not JSON: Cog answers it in plain text."""


@dataclass
class CogRequest:
    """A prediction request as Cog reads it."""

    input: dict[str, Any]
    id: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    sse: bool = False
    chunks: list[Any] = field(default_factory=list)


def read_prediction_request(data: Any, fields: dict[str, Any] | None) -> CogRequest:
    """Cog's request body: ``input`` (``null`` is ``{}``; keys the endpoint does not take
    are dropped), an optional ``id``, ``webhook`` and ``webhook_events_filter``."""
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object", field="body")
    raw = data.get("input")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InputError("input must be an object", field="input")
    if fields is not None:
        raw = {k: v for k, v in raw.items() if k in fields}
    ident = data.get("id")
    webhook = data.get("webhook")
    events = data.get("webhook_events_filter")
    return CogRequest(
        input=raw,
        id=str(ident) if ident is not None else None,
        webhook=webhook if isinstance(webhook, str) else None,
        webhook_events_filter=list(events) if isinstance(events, list) else None,
    )


def prediction_body(
    p: Prediction,
    status: str,
    *,
    media: MediaConfig,
    ident: str | None = None,
    output: Any = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Cog's prediction object for ``p`` (``output`` already in Cog's shape)."""
    body: dict[str, Any] = {
        "id": ident or p.id,
        "status": status,
        "output": output,
        "logs": "".join(f"{line}\n" for line in p.logs),
        "error": error,
        "created_at": _iso(p.created_at),
        "started_at": _iso(p.started_at),
        "completed_at": _iso(p.completed_at or (time.time() if status != "processing" else None)),
        "metrics": {},
    }
    if p.started_at is not None and status != "processing":
        body["metrics"]["predict_time"] = round((p.completed_at or time.time()) - p.started_at, 4)
    return body


def cog_output(result: Any, media: MediaConfig, uri: Callable[[Any], str] | None = None) -> Any:
    """A result as Cog writes it: media as ``data:`` URIs (or what ``uri`` makes of each:
    a job's stored file); a result holding media (an impasto ImageResult...) as just its
    media, one URI or a list of them."""
    to_uri = uri or (lambda value: _uri(value, media))
    if isinstance(result, Gathered):
        return [cog_output(chunk, media, uri) for chunk in result]
    if is_media(result):
        return to_uri(result)
    found = find_media(result)
    if found:
        if isinstance(result, list | tuple) and len(found) == len(result):
            return [to_uri(x) for x in found]
        return to_uri(found[0]) if len(found) == 1 else [to_uri(x) for x in found]
    return to_jsonable(result, config=media)


def _uri(value: Any, media: MediaConfig) -> str:
    return encode(value, config=media).b64(True)


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()


class CogAdapter:
    """Reads and writes Cog's container API shapes."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models = callpath.models

    def routes(self) -> list[Route]:
        return [
            Route("/predictions", self.predictions, methods=["POST"]),
            Route("/health-check", self.health_check, methods=["GET"]),
            Route("/models/{name}/predictions", self.predictions, methods=["POST"]),
            Route("/models/{name}/health-check", self.health_check, methods=["GET"]),
        ]

    def unauthorized(self, scope: Any, message: str) -> Response | None:
        path = scope["path"]
        if path.startswith("/predictions") or (
            path.startswith("/models/") and "/predictions" in path
        ):
            return FastJSONResponse({"error": message, "status": "failed"}, 401)
        return None

    # routes -------------------------------------------------------------------------------
    async def predictions(self, request: Request) -> Response:
        if media_type(request) != "application/json":
            return PlainTextResponse("Expected request with `Content-Type: application/json`", 415)
        model, endpoint = self.models.split(request.path_params.get("name"))
        if "respond-async" in (header(request, b"prefer") or ""):
            jobs = getattr(self.callpath, "jobs", None)
            if jobs is None:
                body = {
                    "error": "asynchronous predictions (Prefer: respond-async) need impasto's "
                    "job store, which this server does not run (install impasto[jobs], and "
                    "leave jobs.enabled on); send the request without it",
                    "status": "failed",
                }
                return FastJSONResponse(body, 501)
            return await jobs.cog.create(request, model, endpoint)
        return await self.callpath.handle(request, self, model, endpoint)

    async def health_check(self, request: Request) -> Response:
        try:
            runner = self.models.get(self.models.split(request.path_params.get("name"))[0])
        except NotFound as exc:
            return FastJSONResponse({"error": exc.message, "status": "failed"}, 404)
        state = self.models.state(runner)
        if state == "failed":
            status, setup = "SETUP_FAILED", "failed"
        elif state == "shutting_down":
            status, setup = "DEFUNCT", "succeeded"
        elif state in ("pending", "loading") and runner.on_demand is None:
            status, setup = "STARTING", "starting"
        elif runner.ready:
            full = runner.stats()["in_flight"] >= runner.capacity(runner.endpoint(None))
            status, setup = ("BUSY" if full else "READY"), "succeeded"
        else:  # lazy or evicted: loads on its next prediction
            status, setup = "READY", "starting" if state in ("loading", "waiting") else None
        body: dict[str, Any] = {
            "status": status,
            "setup": None
            if setup is None
            else {
                "started_at": _iso(runner.load_started_at),
                "completed_at": _iso(runner.load_completed_at),
                "status": setup,
                "logs": runner.load_error or "",
            },
            "version": {"impasto": __version__},
        }
        return FastJSONResponse(body)

    # reading ------------------------------------------------------------------------------
    async def read(self, request: Request, target: Target) -> Inbound:
        request.scope["impasto.prediction"] = target.prediction
        body = await target.body()
        try:
            data = await target.json(body)
        except PayloadTooLarge:
            raise
        except MalformedInput as exc:
            raise _BadJSON(
                "Failed to parse the request body as JSON: "
                + exc.message.removeprefix("invalid JSON payload: ")
            ) from None
        cog = read_prediction_request(data, fields_of(target.endpoint))
        cog.sse = wants(header(request, b"accept"), "text/event-stream")
        request.scope[_COG] = cog
        if cog.sse and not target.endpoint.streams:
            raise NotAcceptable(
                "This model does not support streaming responses. Its endpoint "
                f"{target.endpoint.name} is not a generator."
            )
        return Inbound(
            cog.input, events=cog.sse, chunk_events=cog.sse, gather=not cog.sse, size=len(body)
        )

    # writing ------------------------------------------------------------------------------
    def _media(self, p: Prediction) -> MediaConfig:
        return self.models.get(p.model).config.media

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        cog: CogRequest = request.scope[_COG]
        media = self._media(p)
        output = await asyncio.to_thread(cog_output, result, media)
        body = prediction_body(p, "succeeded", media=media, ident=cog.id, output=output)
        return FastJSONResponse(body)

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        raise AssertionError("Cog requests gather streamed chunks or take events")

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        cog: CogRequest = request.scope[_COG]
        media = self._media(p)
        ident = cog.id or p.id

        async def frames() -> AsyncIterator[bytes]:
            outputs: list[Any] = []
            async for event in events:
                if event.kind == "start":
                    yield _sse("start", {"id": ident, "status": "processing"})
                elif event.kind == "log":
                    line = str(event.data.get("message", ""))
                    yield _sse("log", {"data": line + "\n", "source": "stdout"})
                elif event.kind == "output" and "chunk" in event.data:
                    chunk = await asyncio.to_thread(cog_output, event.data["chunk"], media)
                    yield _sse("output", {"chunk": chunk, "index": len(outputs)})
                    outputs.append(chunk)
                elif event.kind == "completed":
                    status = event.data["status"]
                    error = (event.data.get("error") or {}).get("message")
                    final = prediction_body(
                        p, status, media=media, ident=ident, output=outputs, error=error
                    )
                    yield _sse("completed", final)

        return ClosingStream(
            frames(),
            source=events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        if isinstance(error, _BadJSON):
            return PlainTextResponse(error.message, 400)
        if isinstance(error, ShuttingDown):
            return _failed(error.message, 503, error.headers)
        if isinstance(error, NotReady):
            return _failed(SETUP_NOT_FINISHED, 503, error.headers)
        if isinstance(error, Overloaded):
            return _failed("At capacity - all prediction slots busy", 409, error.headers)
        if isinstance(error, NotAcceptable | NotFound | PayloadTooLarge):
            return _failed(error.message, error.status, error.headers)
        if isinstance(error, InputError):
            loc = ["body", "input", *(error.field or "input").split(".")]
            if error.field in ("body", "input"):
                loc = ["body", *([] if error.field == "body" else ["input"])]
            detail = [{"loc": loc, "msg": _first_message(error), "type": "value_error"}]
            return FastJSONResponse({"detail": detail}, 422)
        p: Prediction | None = request.scope.get("impasto.prediction")
        cog: CogRequest | None = request.scope.get(_COG)
        if p is None:
            return _failed(error.message, error.status, error.headers)
        status = "canceled" if isinstance(error, Canceled) else "failed"
        message = None if status == "canceled" else f"Prediction failed: {error.message}"
        body = prediction_body(
            p, status, media=self._media(p), ident=cog.id if cog else None, error=message
        )
        return FastJSONResponse(body, 200)


def _first_message(error: ImpastoError) -> str:
    """The message about the field the error names (impasto joins several with ``; ``)."""
    first = error.message.split("; ")[0]
    prefix = f"{error.field}: " if error.field else ""
    return first.removeprefix(prefix)


def _failed(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return FastJSONResponse({"error": message, "status": "failed"}, status, headers=headers)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: ".encode() + dumps(data) + b"\n\n"
