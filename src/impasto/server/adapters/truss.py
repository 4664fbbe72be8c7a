"""Truss's routes, answered as a Truss server answers them, for Truss-shaped packages.

A package whose model class has its own ``predict`` (or ``websocket``) is of kind ``truss``:
on the paths a Truss server serves, it gets that server's answers, byte for byte where a
client could tell (see :mod:`.truss_wire` for bodies, results and errors)::

    GET  /                                  true (liveness, also while loading)
    GET  /v1/models/{name}                  {} when loaded and is_healthy() is not False
    GET  /v1/models/{name}/loaded, /ping    {} when loaded (is_healthy() not asked)
    GET  /v1/models/{name}/schema           input/output schema, supports_streaming
    POST /v1/models/{name}:predict          preprocess -> predict -> postprocess
    POST /v1/models/{name}:predict_binary   the same
    POST /invocations                       the same, for the default model
    POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, /v1/responses
                                            the model's method of that name
    WS   /v1/websocket                      the model's ``websocket(ws)``

Everything between reading and writing is the call path's: admission, limits, slots,
deadlines, disconnects, metrics and logs are impasto's. impasto's own routes (``/predict``,
``/<endpoint>``) keep impasto's error object for the same models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...context import Event
from ...errors import ImpastoError, PredictTimeout, pydantic_errors
from ...prediction import Prediction
from ...runner import Runner
from ...spec import EndpointSpec
from ..callpath import CallPath, Gathered, Inbound, Target
from ..dialects import Claim
from ..middleware import _VALID_ID
from ..openapi import schema_of
from ..registry import Models
from ..requests import header, read_body
from ..responses import ClosingStream, _small_plain, encoded_chunk
from . import truss_wire as wire

log = logging.getLogger("impasto.truss")

KIND = frozenset({"truss"})
OPENAI_ROUTES = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}
WEBSOCKET_MISSING = "WebSocket is not implemented on this deployment."
WEBSOCKET_SERVER_ERROR = 1011


class TrussAdapter:
    """Reads and writes Truss's request and response shapes over the call path."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models: Models = callpath.models
        self._schemas: dict[str, dict[str, Any] | None] = {}

    # routes -------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        """The websocket, when a Truss-shaped model is served."""
        if not any(r.kind == "truss" for r in self.models):
            return []
        return [WebSocketRoute("/v1/websocket", self._websocket)]

    def claims(self) -> list[Claim]:
        """Truss's paths, for Truss-shaped packages."""
        claims = [
            Claim("/", "GET", self._live, KIND),
            Claim("/v1/models/{model_name}", "GET", self._model_ready, KIND),
            Claim("/v1/models/{model_name}/loaded", "GET", self._loaded, KIND),
            Claim("/v1/models/{model_name}/schema", "GET", self._schema, KIND),
            Claim("/v1/models/{model_name}:predict", "POST", self._predict, KIND),
            Claim("/v1/models/{model_name}:predict_binary", "POST", self._predict, KIND),
            Claim("/ping", "GET", self._loaded, KIND),
            Claim("/invocations", "POST", self._predict, KIND),
        ]
        for path, method in OPENAI_ROUTES.items():
            claims.append(Claim(path, "POST", self._method_route(method), KIND))
        return claims

    def _name(self, request: Any) -> str:
        """The model's name in messages: ``model`` (what a Truss server calls its one
        model) when one model is served, else the name the request resolved."""
        if len(self.models) == 1:
            return "model"
        return request.path_params.get("model_name") or self.models.default.name

    def _not_ready(self, request: Any) -> Response:
        return wire.error_body(503, wire.not_ready(self._name(request)), wire.MODEL_SIDE)

    async def _live(self, request: Request) -> Response:
        return JSONResponse(True)

    async def _model_ready(self, request: Request) -> Response:
        runner = self.models.get(request.path_params.get("model_name"))
        healthy = await runner.healthy()
        if healthy is False or not runner.ready or runner.closing:
            return self._not_ready(request)
        return JSONResponse({})

    async def _loaded(self, request: Request) -> Response:
        runner = self.models.get(request.path_params.get("model_name"))
        if not runner.ready or runner.closing:
            return self._not_ready(request)
        return JSONResponse({})

    async def _schema(self, request: Request) -> Response:
        runner = self.models.get(request.path_params.get("model_name"))
        if runner.name not in self._schemas:
            self._schemas[runner.name] = _schema(runner)
        doc = self._schemas[runner.name]
        if doc is not None:
            return JSONResponse(doc)
        if runner.ready:
            return wire.error_body(404, "No schema found", wire.MODEL_SIDE)
        message = "Schema not available, please try again later."
        return wire.error_body(503, message, wire.MODEL_SIDE)

    async def _predict(self, request: Request) -> Response:
        _baseten_request_id(request)
        model = request.path_params.get("model_name")
        runner = self.models.get(model)
        if "predict" not in runner.spec.endpoints:  # a websocket model
            return await self._missing(request, runner, "predict")
        return await self.callpath.handle(request, self, model, "predict")

    def _method_route(self, method: str) -> Any:
        async def route(request: Request) -> Response:
            _baseten_request_id(request)
            runner = self.models.get(None)
            if method in runner.spec.endpoints:
                return await self.callpath.handle(request, self, None, method)
            return await self._missing(request, runner, method)

        return route

    async def _missing(self, request: Request, runner: Runner, method: str) -> Response:
        """A model without ``method``: 503 while loading, 400 for a body that is not JSON,
        else 404, in the order a Truss server checks them."""
        if not runner.ready or runner.closing:
            return self._not_ready(request)
        rt = runner.config.runtime
        typed = _typed_input(runner)  # a Truss server parses every body for predict's input
        try:
            body = await read_body(request, rt.max_body_bytes)
            if wire.is_binary(header(request, b"content-type")):
                payload = wire.msgpack_loads(body)
            else:
                payload = wire.parse_json(body, rt.max_json_depth, typed)
            if typed is not None:
                try:
                    typed.model_validate(payload)
                except ValidationError as exc:
                    raise pydantic_errors(exc) from None
        except ImpastoError as exc:
            return self.write_error(request, exc)
        return wire.error_body(
            404, f"`{method}` must only be called if model has it.", wire.CLIENT_SIDE
        )

    # reading ------------------------------------------------------------------------------
    async def read(self, request: Request, target: Target) -> Inbound:
        _install_disconnect_watch(request)
        accept = header(request, b"accept")
        agent = header(request, b"user-agent") or ""
        # Gathered into one JSON string only for exactly this Accept, and never for the
        # OpenAI SDK, which sends it while it expects a stream.
        gather = accept == "application/json" and "openai" not in agent.lower()
        endpoint = target.endpoint
        if not endpoint.reads_body:  # the model reads the request itself
            return Inbound(None, gather=gather)
        body = await target.body()
        runner = target.runner
        if wire.is_binary(header(request, b"content-type")):
            if len(body) > 64 * 1024:
                payload = await runner.in_input_pool(lambda: wire.msgpack_loads(body))
            else:
                payload = wire.msgpack_loads(body)
        else:
            typed = _typed_input(runner, endpoint)
            depth = runner.config.runtime.max_json_depth
            if len(body) > 64 * 1024:
                payload = await runner.in_input_pool(lambda: wire.parse_json(body, depth, typed))
            else:
                payload = wire.parse_json(body, depth, typed)
        return Inbound(payload, gather=gather, size=len(body))

    # writing ------------------------------------------------------------------------------
    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        if isinstance(result, Gathered):
            try:
                result = wire.gathered_text(result)
            except UnicodeDecodeError as exc:
                message = f"Unhandled exception: {type(exc).__name__}: {exc}"
                return wire.error_body(500, message, wire.UNEXPECTED)
        if isinstance(result, Response):  # the model's own response, as it made it
            if result.status_code >= 300:
                result.headers.update(wire.error_headers(wire.CLIENT_SIDE))
            return result
        binary = wire.is_binary(header(request, b"content-type"))
        if isinstance(result, str | int | float | bool | None) or _small_plain(result):
            return wire.render(result, binary)
        return await anyio.to_thread.run_sync(wire.render, result, binary)

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        media = self.models.get(p.model).config.media

        async def raw() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    if isinstance(chunk, bytes | bytearray | memoryview):
                        yield bytes(chunk)
                    elif isinstance(chunk, str):
                        yield chunk.encode()
                    else:
                        yield await encoded_chunk(chunk, media)
            except PredictTimeout:
                raise  # a stalled stream breaks off, as under Truss
            except ImpastoError as exc:  # the model failed mid-stream: the stream just ends
                log.warning("request %s: stream ended by %s: %s", p.id, exc.type, exc.message)

        return ClosingStream(raw(), source=chunks, media_type="application/octet-stream")

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        """Truss has no event streams (``read`` never asks for one): the result, or the
        error, once the prediction ends."""

        async def last() -> AsyncIterator[bytes]:
            async for event in events:
                if event.kind == "output":
                    yield bytes(wire.render(event.data["output"], False).body)
                elif event.kind == "completed" and "error" in event.data:
                    yield json.dumps({"error": event.data["error"]["message"]}).encode()

        return ClosingStream(last(), source=events, media_type="application/json")

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        return wire.error_response(error, self._name(request))

    # websocket ----------------------------------------------------------------------------
    async def _websocket(self, ws: WebSocket) -> None:
        """The model's ``websocket(ws)``: refused (503) until the model is loaded, then
        accepted and closed 1000 when it returns, 1011 when it raises (the traceback goes to
        the log), 1003 when the model has none."""
        runner = self.models.default
        if runner.kind != "truss":
            runner = next(r for r in self.models if r.kind == "truss")
        if not runner.ready or runner.closing:  # the handshake is refused with Truss's 503
            if "websocket.http.response" in ws.scope.get("extensions", {}):
                await ws.send_denial_response(self._not_ready(ws))
            else:
                await ws.close(code=1013, reason=wire.not_ready(self._name(ws)))
            return
        await ws.accept()
        if "websocket" not in runner.spec.hooks:
            log.error(WEBSOCKET_MISSING)
            await _close(ws, 1003, WEBSOCKET_MISSING)
            return
        try:
            await runner.model.websocket(ws)
        except WebSocketDisconnect as exc:
            log.info("websocket client left: %s", exc)
            return
        except Exception as exc:
            runner.calls.model_error(exc, _WebSocketContext(ws))
            await _close(ws, WEBSOCKET_SERVER_ERROR, wire.MODEL_ERROR_MESSAGE)
            return
        await _close(ws, 1000, None)


def _schema(runner: Runner) -> dict[str, Any] | None:
    """Truss's reading of the model's annotations; a first stage taking impasto's input
    fields (``count: int``, ``image: Image``, which Truss models never use) reports them."""
    doc = wire.schema(runner.spec.cls)
    endpoint = runner.spec.endpoints.get("predict")
    if endpoint is not None and (endpoint.preprocess or endpoint.call).style == "fields":
        doc = doc or {"input_schema": None, "output_schema": None, "supports_streaming": None}
        doc["input_schema"] = schema_of(endpoint.input_model)
    return doc


def _typed_input(runner: Runner, endpoint: EndpointSpec | None = None) -> Any:
    """The pydantic model the first stage of ``endpoint`` (default: predict) validates the
    body into, if it has one."""
    endpoint = endpoint or runner.spec.endpoints.get("predict")
    if endpoint is None:
        return None
    first = endpoint.preprocess or endpoint.call
    return endpoint.input_model if first.style == "model" else None


class _WebSocketContext:
    """What :meth:`Runner.model_error` logs about a websocket (its request id)."""

    def __init__(self, ws: WebSocket) -> None:
        self.request_id = ws.scope.get("state", {}).get("request_id") or ws.headers.get(
            "x-baseten-request-id", "-"
        )


async def _close(ws: WebSocket, code: int, reason: str | None) -> None:
    with contextlib.suppress(RuntimeError):  # already closed by the model or the client
        await ws.close(code=code, reason=reason)


def _baseten_request_id(request: Request) -> None:
    """Baseten's request id names the prediction in logs unless the client sent its own
    ``X-Request-ID``."""
    value = header(request, b"x-baseten-request-id")
    if value and header(request, b"x-request-id") is None and _VALID_ID.match(value.encode()):
        request.scope.setdefault("state", {})["request_id"] = value


def _install_disconnect_watch(request: Request) -> None:
    """``request.state.watch_disconnect()``, Truss's helper for model code: a context
    manager giving a ``threading.Event`` set once the client has gone (usable from a
    model thread and from async code)."""
    loop = asyncio.get_running_loop()

    @contextlib.contextmanager
    def watch_disconnect() -> Iterator[threading.Event]:
        disconnected = threading.Event()

        async def watch() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(1)
            disconnected.set()

        future = asyncio.run_coroutine_threadsafe(watch(), loop)
        try:
            yield disconnected
        finally:
            future.cancel()

    request.state.watch_disconnect = watch_disconnect
