"""The OctoAI service routes: ``POST /infer``, ``GET /healthcheck``, ``GET /``.

For an OctoAI-style service (kind ``octoai``), as ``octoai-sdk``'s server answers them:
``/infer`` takes the ``infer`` parameters as top-level JSON keys (extra keys ignored) and
answers ``{"output": ..., "analytics": {"inference_time_ms", "performance_time_ms"}}`` with
the ``octoai_replica_name`` header; ``/healthcheck`` is ``200 {"status": "READY"}`` once
``setup()`` is done and ``503 {"status": ...}`` before; ``GET /`` names the docs.

Where the SDK answered 500 to bad input (a missing parameter, ``{"prompt": {}}``, unknown
keys inside a ``Text``), impasto answers 422 with FastAPI's ``{"detail": [{"loc", "msg",
"type"}]}`` shape: the SDK's client retries every 5xx five times. Requests sent while
``setup()`` runs wait for it (bounded by ``runtime.load_wait_s``, then 503).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_jsonable_python
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ...context import Event
from ...errors import ImpastoError, InputError, MalformedInput, NotReady
from ...media import to_jsonable
from ...prediction import Prediction
from ..callpath import CallPath, Inbound, Target
from ..dialects import Claim
from ..registry import Models
from ..responses import fast_dumps, raw_stream

OCTOAI = frozenset({"octoai"})
REPLICA_ENV = "OCTOAI_REPLICA_NAME"
_ROOT = {"docs": "/docs", "openapi": "/openapi.json"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(fast_dumps(body), status, headers, media_type="application/json")


class OctoAIAdapter:
    """Reads and writes the OctoAI SDK server's request and response shapes."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models: Models = callpath.models

    def routes(self) -> list[Route]:
        return []

    def claims(self) -> list[Claim]:
        return [
            Claim("/infer", "POST", self.infer, OCTOAI),
            Claim("/healthcheck", "GET", self.healthcheck, OCTOAI),
            Claim("/", "GET", self.root, OCTOAI),
        ]

    async def infer(self, request: Request) -> Response:
        return await self.callpath.handle(request, self)

    async def healthcheck(self, request: Request) -> Response:
        runner = self.models.default
        if runner.ready and not runner.closing:
            return _json({"status": "READY"})
        return _json({"status": self._state()}, 503)

    async def root(self, request: Request) -> Response:
        return _json(_ROOT)

    def _state(self) -> str:
        runner = self.models.default
        if runner.closing:
            return "SHUTTING_DOWN"
        return {"failed": "SETUP_FAILED", "ready": "READY"}.get(runner.state, "SETUP_SERVICE")

    def extend_openapi(self, doc: dict[str, Any]) -> None:
        if self.models.default.kind != "octoai":
            return
        paths = doc.setdefault("paths", {})
        predict = paths.get("/predict", {}).get("post")
        if predict is not None:
            paths["/infer"] = {"post": {**predict, "operationId": "infer"}}
        ok = {"200": {"description": "OK"}}
        paths["/healthcheck"] = {"get": {"summary": "Health", "responses": ok}}
        paths["/"] = {"get": {"summary": "Root", "responses": ok}}

    # reading and writing ---------------------------------------------------------------------
    async def read(self, request: Request, target: Target) -> Inbound:
        body = await target.body()
        try:
            payload = await target.json(body)
        except MalformedInput as exc:
            error = InputError(exc.message, field="body")
            error.details = [{"type": "json_invalid", "loc": (), "msg": exc.message}]
            raise error from None
        return Inbound(payload, size=len(body))

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        output = getattr(result, "output", result)
        analytics = getattr(result, "analytics", None)
        body = {
            "output": to_jsonable(output),
            "analytics": analytics.model_dump() if analytics is not None else {},
        }
        return _json(body, headers={"octoai_replica_name": os.environ.get(REPLICA_ENV, "")})

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        return raw_stream(chunks, self.models.get(p.model).config.media)

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        async def result() -> AsyncIterator[bytes]:  # no reader here asks for events
            async for event in events:
                if event.kind == "output":
                    yield fast_dumps({"output": to_jsonable(event.data["output"])})

        return StreamingResponse(result(), media_type="application/json")

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        if isinstance(error, InputError) and error.status in (400, 422):
            return _json({"detail": _detail(error)}, 422, error.headers)
        if isinstance(error, NotReady):
            return _json({"status": self._state()}, 503, error.headers)
        return _json({"detail": error.message}, error.status, error.headers)


def _detail(error: InputError) -> list[dict[str, Any]]:
    """FastAPI's validation error list, locations under ``body``."""
    if not error.details:
        loc = [] if error.field in (None, "body") else str(error.field).split(".")
        return [{"type": error.type, "loc": ["body", *loc], "msg": error.message}]
    detail = []
    for err in error.details:
        item = {
            "type": err.get("type"),
            "loc": ["body", *err.get("loc", ())],
            "msg": err.get("msg"),
        }
        if "input" in err:
            item["input"] = to_jsonable_python(err["input"], fallback=repr)
        detail.append(item)
    return detail
