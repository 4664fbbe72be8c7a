"""impasto's own routes: predict and endpoints, readiness and liveness.

Every prediction route is the same thin adapter: read the payload, validate it, call the
runner with a request context, render the output. Progress streaming (SSE) subscribes to
the context's events; a client that goes away cancels the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import Event, RequestContext
from ..errors import Canceled, ImpastoError, NotFound, NotReady
from ..runner import Runner
from ..spec import EndpointSpec
from .errors import error_response
from .requests import output_prefs, read_payload
from .responses import (
    ClosingStream,
    FastJSONResponse,
    gather_stream,
    render,
    sse,
    stream_response,
    wants,
)

log = logging.getLogger("impasto.server")

WATCH_AFTER_S = 0.02


def request_context(
    request: Request, runner: Runner, payload: Any, endpoint: EndpointSpec
) -> RequestContext:
    """The context of one request: id, deadline and output preferences (``output_format`` and
    ``quality`` in the body count only where the endpoint's schema declares them)."""
    timeout = runner.config.runtime.predict_timeout_s
    model = endpoint.input_model
    return RequestContext(
        request.scope.get("state", {}).get("request_id"),
        deadline=time.monotonic() + timeout if timeout else None,
        output=output_prefs(request, payload, model.model_fields if model else None),
    )


@contextlib.asynccontextmanager
async def cancel_on_disconnect(request: Request, ctx: RequestContext) -> AsyncIterator[None]:
    """While the body of the ``async with`` runs, a client disconnect cancels ``ctx``."""
    task = asyncio.current_task()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                log.info("request %s: client disconnected; canceling", ctx.request_id)
                ctx.cancel("disconnected")
                if task is not None:
                    task.cancel()
                return

    # Fast requests finish before anyone could notice a disconnect, so the watcher starts
    # only once the work has run for WATCH_AFTER_S (a disconnect before then is still seen).
    watcher: list[asyncio.Task] = []
    timer = asyncio.get_running_loop().call_later(
        WATCH_AFTER_S, lambda: watcher.append(asyncio.create_task(watch()))
    )
    try:
        yield
    finally:
        timer.cancel()
        for pending in watcher:
            pending.cancel()


class Predictor:
    """The handler behind every prediction route of one endpoint (None: the default)."""

    def __init__(self, runner: Runner, endpoint: str | None) -> None:
        self.runner = runner
        self.endpoint = endpoint

    async def handle(self, request: Request) -> Response:
        runner = self.runner
        try:
            endpoint = runner.endpoint(self.endpoint)
            payload = await read_payload(
                request,
                max_body=runner.config.runtime.max_body_bytes,
                media=runner.config.media,
                model=endpoint.input_model,
            )
            ctx = request_context(request, runner, payload, endpoint)
            if wants(ctx.output.accept, "text/event-stream") and not endpoint.streams:
                return await self._progress_stream(request, endpoint.name, payload, ctx)
            value = await runner.validate(endpoint, payload)
            gather = endpoint.streams and (ctx.output.accept or "").strip() == "application/json"
            try:
                async with cancel_on_disconnect(request, ctx):
                    result = await runner.call(endpoint.name, value, ctx)
                    if gather:  # drained while the client waits: leaving cancels it too
                        async with contextlib.aclosing(result):
                            return await gather_stream(result, runner.config.media)
            except asyncio.CancelledError:
                if ctx.cancel_reason == "disconnected":
                    return error_response(Canceled("the client went away"))
                raise
            if endpoint.streams:
                return stream_response(result, ctx.output, runner.config.media)
            return await render(result, ctx.output, runner.config.media, ctx.timings)
        except ImpastoError as exc:
            return error_response(exc)
        except Exception:
            rid = request.scope.get("state", {}).get("request_id")
            log.exception("request %s: unhandled error", rid)
            return error_response(ImpastoError("internal server error"))

    async def _progress_stream(
        self, request: Request, name: str, payload: Any, ctx: RequestContext
    ) -> Response:
        """SSE: one ``progress`` event per step, optional ``preview``s, then ``result``."""
        runner = self.runner
        endpoint = runner.endpoint(name)
        value = await runner.validate(endpoint, payload)  # 422 before the stream starts
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        ctx.subscribe(lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        media = runner.config.media

        async def run() -> Response:
            try:
                result = await runner.call(name, value, ctx)
                return await render(result, replace(ctx.output, accept=None), media)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async def events() -> AsyncIterator[bytes]:
            task = asyncio.create_task(run())
            try:
                while True:
                    event = await queue.get()
                    if event is None:
                        break
                    yield await _event_frame(event, media)
                try:
                    response = await task
                    yield b"event: result\ndata: " + bytes(response.body) + b"\n\n"
                except ImpastoError as exc:
                    yield sse("error", exc.to_dict())
            finally:
                if not task.done():  # the client went away mid-stream
                    ctx.cancel("disconnected")
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

        return ClosingStream(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


async def _event_frame(event: Event, media: Any) -> bytes:
    if event.kind == "preview":
        from ..media import encode

        image = event.data["image"]
        enc = await asyncio.to_thread(encode, image, format="jpeg", quality=70, config=media)
        return sse("preview", {"step": event.data.get("step"), "image": enc.b64(True)})
    return sse(event.kind, event.data)


def health_routes(runner: Runner, model_name: str) -> list[Route]:
    def not_ready() -> Response:
        if runner.state == "failed":
            message = f"model {model_name} failed to load: {runner.load_error}"
        else:
            message = f"model {model_name} is not ready (state: {runner.state})"
        return error_response(NotReady(message))

    async def root(request: Request) -> Response:
        return FastJSONResponse(True)

    async def live(request: Request) -> Response:
        return FastJSONResponse({"status": "alive"})

    async def ready(request: Request) -> Response:
        if not runner.ready:
            return not_ready()
        return FastJSONResponse({"status": "ready", "model": model_name})

    async def model_ready(request: Request) -> Response:
        return FastJSONResponse({}) if runner.ready else not_ready()

    async def schema(request: Request) -> Response:
        if not runner.ready:
            return not_ready()
        ep = runner.endpoint(None)
        if ep.input_model is None and ep.output_model is None:
            return error_response(NotFound("no schema found"))
        from .openapi import schema_of

        return FastJSONResponse(
            {
                "input_schema": schema_of(ep.input_model),
                "output_schema": schema_of(ep.output_model, mode="serialization"),
            }
        )

    return [
        Route("/", root, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/v1/models/{model_name}", model_ready, methods=["GET"]),
        Route("/v1/models/{model_name}/loaded", model_ready, methods=["GET"]),
        Route("/v1/models/{model_name}/schema", schema, methods=["GET"]),
    ]


def predict_routes(runner: Runner) -> list[Route]:
    """``/predict`` and ``/v1/models/{name}:predict`` for the default endpoint, and
    ``/<endpoint>`` plus ``/v1/models/{name}/<endpoint>`` for each endpoint."""
    default = Predictor(runner, None).handle
    routes = [
        Route("/predict", default, methods=["POST"]),
        Route("/v1/models/{model_name}:predict", default, methods=["POST"]),
    ]
    for ep in runner.spec.endpoints.values():
        handler: Callable[[Request], Awaitable[Response]] = Predictor(runner, ep.name).handle
        if ep.route != "/predict":
            routes.append(Route(ep.route, handler, methods=["POST"]))
        routes.append(Route(f"/v1/models/{{model_name}}/{ep.name}", handler, methods=["POST"]))
    return routes
