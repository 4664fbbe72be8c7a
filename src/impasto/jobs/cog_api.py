"""Cog's asynchronous prediction API over the job store.

::

    POST /predictions  (Prefer: respond-async)   202, the job once committed
    PUT  /predictions/{id}                       idempotent create (202 with the job if known)
    GET  /predictions/{id}                       the job; with Accept: text/event-stream its
                                                 events from where it stands (reconnectable)
    GET  /predictions?status=&model=&cursor=     {"results", "next", "previous"}, newest first
    POST /predictions/{id}/cancel                200 with the job, 404 {} if unknown

Requests are read with the Cog adapter's own pieces (:func:`read_prediction_request`, its
error shapes: 415 without JSON, 400 text for a broken body, 422 ``{"detail": [...]}`` naming
the field); the input is validated when it is submitted, so a bad one is refused then.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..accept import wants
from ..errors import ImpastoError, InputError, MalformedInput, Overloaded
from ..server.adapters.cog import CogAdapter, _BadJSON, read_prediction_request
from ..server.adapters.fields import fields_of
from ..server.requests import header, media_type, parse_json, read_body
from ..server.responses import FastJSONResponse, sse
from .envelope import cog_envelope
from .records import EVENTS, FROM_COG, NewJob, new_id, valid_id
from .results import with_urls

if TYPE_CHECKING:
    from .service import Jobs

MAX_PAGE = 1000
_REQUEST_FIELDS = ("id", "webhook", "webhook_events_filter")
KEEPALIVE_S = 15.0


class CogJobs:
    """Cog's job routes; ``create`` also serves ``POST /predictions`` with respond-async."""

    def __init__(self, jobs: Jobs, adapter: CogAdapter) -> None:
        self.jobs = jobs
        self.adapter = adapter
        self.models = adapter.models

    def routes(self) -> list[Route]:
        return [
            Route("/predictions", self.list, methods=["GET"]),
            Route("/predictions/{prediction_id}", self.one, methods=["GET", "PUT"]),
            Route("/predictions/{prediction_id}/cancel", self.cancel, methods=["POST"]),
        ]

    def base_url(self, request: Request) -> str:
        return self.jobs.public_url or str(request.base_url).rstrip("/")

    def envelope(self, request: Request, job: Any) -> dict[str, Any]:
        return cog_envelope(job, self.jobs.results, self.base_url(request))

    def error(self, request: Request, exc: ImpastoError) -> Response:
        if isinstance(exc, Overloaded):  # the job queue is full: retry later
            body = {"error": exc.message, "status": "failed"}
            return FastJSONResponse(body, 429, headers=exc.headers)
        if isinstance(exc, InputError) and exc.field in _REQUEST_FIELDS:  # not in `input`
            return _detail(["body", exc.field], exc.message.removeprefix(f"{exc.field}: "))
        return self.adapter.write_error(request, exc)

    # creating -------------------------------------------------------------------------------
    async def create(
        self, request: Request, model: str | None, endpoint: str | None, ident: str | None = None
    ) -> Response:
        """A job from a Cog request body; 202 with it once it is committed."""
        try:
            self.jobs.check_available()
            runner, ep = self.models.resolve(model, endpoint)
            body = await read_body(request, runner.config.runtime.max_body_bytes)
            try:
                data = parse_json(body, runner.config.runtime.max_json_depth)
            except MalformedInput as exc:
                raise _BadJSON(
                    "Failed to parse the request body as JSON: "
                    + exc.message.removeprefix("invalid JSON payload: ")
                ) from None
            cog = read_prediction_request(data, fields_of(ep))
            if ident is not None and cog.id is not None and cog.id != ident:
                return _detail(
                    ["body", "id"], "prediction ID must match the ID supplied in the URL"
                )
            job_id = ident or cog.id or new_id()
            if not valid_id(job_id):
                return _detail(
                    ["body", "id"], "an id is 1 to 128 letters, digits and ._:- characters"
                )
            found = await self.jobs.get(job_id)
            if found is not None:  # a retry: the job as it stands, never a second run
                return FastJSONResponse(self.envelope(request, found), 202)
            options = await self._options(request, data, cog.webhook, cog.webhook_events_filter)
            options["stream"] = ep.streams
            await runner.validate(ep, cog.input, size=len(body))
            job, _ = await self.jobs.submit(
                NewJob(job_id, "cog", runner.name, ep.name, cog.input, options)
            )
        except ImpastoError as exc:
            return self.error(request, exc)
        location = {"Location": f"{self.base_url(request)}/predictions/{job.id}"}
        if ident is not None and "respond-async" not in (header(request, b"prefer") or ""):
            job = await self.jobs.wait(job.id)  # Cog's PUT without respond-async waits
            return FastJSONResponse(self.envelope(request, job), 200, headers=location)
        return FastJSONResponse(self.envelope(request, job), 202, headers=location)

    async def _options(
        self, request: Request, data: dict[str, Any], webhook: str | None, events: list[str] | None
    ) -> dict[str, Any]:
        if data.get("webhook") is not None and webhook is None:
            raise InputError("webhook: must be a URL string", field="webhook")
        if data.get("webhook_events_filter") is not None and events is None:
            raise InputError("webhook_events_filter: must be a list", field="webhook_events_filter")
        unknown = [e for e in events or () if e not in EVENTS]
        if unknown:
            raise InputError(
                f"webhook_events_filter: unknown event {unknown[0]!r}; use {', '.join(EVENTS)}",
                field="webhook_events_filter",
            )
        options: dict[str, Any] = {"base_url": self.base_url(request)}
        if webhook:
            await self.jobs.check_webhook(webhook)
            options.update(webhook=webhook, webhook_kind="cog")
            if events is not None:
                options["webhook_events"] = list(dict.fromkeys(events))
        return options

    # one job --------------------------------------------------------------------------------
    async def one(self, request: Request) -> Response:
        ident = request.path_params["prediction_id"]
        if request.method == "PUT":
            if media_type(request) != "application/json":
                return PlainTextResponse(
                    "Expected request with `Content-Type: application/json`", 415
                )
            return await self.create(request, None, None, ident)
        try:
            self.jobs.check_available()
            job = await self.jobs.get(ident)
        except ImpastoError as exc:
            return self.error(request, exc)
        if job is None:
            return FastJSONResponse({"error": f"no prediction {ident}", "status": "failed"}, 404)
        if wants(header(request, b"accept"), "text/event-stream"):
            cursor = Cursor.parse(header(request, b"last-event-id"))
            return StreamingResponse(
                self._events(request, ident, cursor),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return FastJSONResponse(self.envelope(request, job))

    async def cancel(self, request: Request) -> Response:
        ident = request.path_params["prediction_id"]
        try:
            self.jobs.check_available()
            job = await self.jobs.cancel(ident)
        except ImpastoError as exc:
            return self.error(request, exc)
        if job is None:
            return FastJSONResponse({}, 404)
        return FastJSONResponse(self.envelope(request, job))

    # the list -------------------------------------------------------------------------------
    async def list(self, request: Request) -> Response:
        q = request.query_params
        try:
            self.jobs.check_available()
            statuses = [FROM_COG.get(s, s) for v in q.getlist("status") for s in v.split(",") if s]
            bad = [s for s in statuses if s not in FROM_COG.values()]
            if bad:
                raise InputError(
                    f"status: unknown status {bad[0]!r}; use starting, processing, succeeded, "
                    "failed or canceled",
                    field="status",
                )
            models = [m for v in q.getlist("model") for m in v.split(",") if m]
            size = _int(q.get("page_size"), 100, "page_size")
            after, before = _cursor(q.get("cursor"))
            page = await self.jobs.page(
                statuses=statuses, models=models, after=after, before=before, limit=size + 1
            )
        except ImpastoError as exc:
            return self.error(request, exc)
        more = len(page) > size
        page = page[-size:] if before is not None else page[:size]
        base = f"{self.base_url(request)}/predictions"
        keep = [(k, v) for k, v in q.multi_items() if k != "cursor"]

        def link(cursor: str) -> str:
            return f"{base}?{urlencode([*keep, ('cursor', cursor)])}"

        older = (more or before is not None) and page
        newer = (after is not None or (before is not None and more)) and page
        body = {
            "results": [self.envelope(request, job) for job in page],
            "next": link(_encode("a", page[-1].seq)) if older else None,
            "previous": link(_encode("b", page[0].seq)) if newer else None,
        }
        return FastJSONResponse(body)

    # events ---------------------------------------------------------------------------------
    async def _events(self, request: Request, ident: str, cursor: Cursor) -> AsyncIterator[bytes]:
        """The job's events from ``cursor`` on, until it ends (see :class:`Cursor`)."""
        quiet_since = time.monotonic()
        wait_s = min(self.jobs.config.poll_interval_s, 1.0)
        while True:
            job = await self.jobs.get(ident)
            if job is None:
                return
            frames = cursor.advance(job, lambda v: self._urls(request, v))
            for frame in frames:
                yield frame
            if job.done:
                yield _frame("completed", self.envelope(request, job), "done")
                return
            if frames:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield b": keepalive\n\n"
            await self.jobs.notifier.wait(ident, wait_s)

    def _urls(self, request: Request, value: Any) -> Any:
        return with_urls(value, lambda ref: self.jobs.results.url_for(ref, self.base_url(request)))


class Cursor:
    """How far a client has seen a job: started, log lines, outputs, progress step. Each
    event's SSE ``id`` is the cursor after it, so a client reconnecting with
    ``Last-Event-ID`` gets only what it missed."""

    __slots__ = ("logs", "outputs", "started", "step")

    def __init__(self, started: bool = False, logs: int = 0, outputs: int = 0, step: int = -1):
        self.started = started
        self.logs = logs
        self.outputs = outputs
        self.step = step

    @classmethod
    def parse(cls, value: str | None) -> Cursor:
        try:
            s, logs, outputs, step = (value or "").split(".")
            return cls(s == "1", int(logs), int(outputs), int(step))
        except ValueError:
            return cls()

    def __str__(self) -> str:
        return f"{int(self.started)}.{self.logs}.{self.outputs}.{self.step}"

    def advance(self, job: Any, urls: Any) -> list[bytes]:
        frames: list[bytes] = []
        if job.started_at is not None and not self.started:
            self.started = True
            frames.append(_frame("start", {"id": job.id, "status": "processing"}, str(self)))
        for line in job.logs[self.logs :]:
            self.logs += 1
            frames.append(_frame("log", {"data": line + "\n", "source": "stdout"}, str(self)))
        if job.progress is not None and job.progress[0] != self.step:
            self.step = job.progress[0]
            data = {"step": job.progress[0], "total": job.progress[1]}
            frames.append(_frame("progress", data, str(self)))
        if job.options.get("stream") and isinstance(job.output, list):
            for chunk in job.output[self.outputs :]:
                data = {"chunk": urls(chunk), "index": self.outputs}
                self.outputs += 1
                frames.append(_frame("output", data, str(self)))
        elif job.status == "succeeded" and self.outputs == 0:
            self.outputs = 1
            frames.append(_frame("output", {"output": urls(job.output)}, str(self)))
        return frames


def _frame(event: str, data: Any, ident: str) -> bytes:
    return f"id: {ident}\n".encode() + sse(event, data)


def _detail(loc: list[str], msg: str) -> Response:
    return FastJSONResponse({"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]}, 422)


def _int(value: str | None, default: int, name: str) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InputError(f"{name}: expected a whole number from 1 to {MAX_PAGE}", field=name)
    return int(value)


def _encode(direction: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}{seq}".encode()).decode().rstrip("=")


def _cursor(value: str | None) -> tuple[int | None, int | None]:
    """``(after, before)`` from a list cursor (``a<seq>``: older; ``b<seq>``: newer)."""
    if not value:
        return None, None
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        direction, seq = text[0], int(text[1:])
    except (ValueError, IndexError, UnicodeDecodeError):
        raise InputError("cursor: not a cursor this server gave out", field="cursor") from None
    if direction not in "ab":
        raise InputError("cursor: not a cursor this server gave out", field="cursor")
    return (seq, None) if direction == "a" else (None, seq)


__all__ = ["CogJobs", "Cursor"]
