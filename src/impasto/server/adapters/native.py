"""impasto's own routes, the first adapter over the call path.

``POST /predict`` and ``/v1/models/{name}:predict`` run a model's default endpoint;
``POST /<endpoint>`` and ``/v1/models/{name}/<endpoint>`` each endpoint. Bodies are JSON or
multipart; the result comes back as JSON, raw media bytes or multipart by ``Accept``; a
streaming endpoint streams raw chunks, SSE (``Accept: text/event-stream``, ending with an
``error`` event if the model fails mid-stream) or one gathered JSON value
(``Accept: application/json``); any other endpoint streams its ``progress``, ``preview`` and
``log`` events and then its ``result`` (or ``error``) over SSE when asked. Errors are
``{"error": {"type", "message", "field"}}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...accept import wants
from ...context import Event
from ...errors import ImpastoError
from ...prediction import Prediction
from ..callpath import CallPath, Gathered, Inbound, Target
from ..dialects import Claim
from ..errors import error_response
from ..registry import Models
from ..requests import output_prefs, read_payload
from ..responses import ClosingStream, encoded_chunk, gathered, render, sse, sse_data

_SSE_KINDS = ("progress", "preview", "log")


class NativeAdapter:
    """Reads and writes impasto's own request and response shapes."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models: Models = callpath.models

    # routes -------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        """Every model's endpoints by name; the default model's also at the root."""
        handle = self.callpath.handle

        def endpoint_route(endpoint: str | None, by_name: bool) -> Any:
            async def route(request: Request) -> Response:
                model = request.path_params.get("model_name") if by_name else None
                return await handle(request, self, model, endpoint)

            return route

        routes = [Route("/predict", endpoint_route(None, False), methods=["POST"])]
        names: set[str] = set()
        for runner in self.models:
            for ep in runner.spec.endpoints.values():
                if ep.name in names:
                    continue
                names.add(ep.name)
                if ep.route != "/predict":
                    routes.append(Route(ep.route, endpoint_route(ep.name, False), methods=["POST"]))
                routes.append(
                    Route(
                        f"/v1/models/{{model_name}}/{ep.name}",
                        endpoint_route(ep.name, True),
                        methods=["POST"],
                    )
                )
        return routes

    def claims(self) -> list[Claim]:
        """``/v1/models/{name}:predict`` for every kind of package no other adapter claims
        it for (a Truss-shaped model gets Truss's answers there)."""

        async def predict(request: Request) -> Response:
            model = request.path_params.get("model_name")
            return await self.callpath.handle(request, self, model, None)

        return [Claim("/v1/models/{model_name}:predict", "POST", predict)]

    # reading ------------------------------------------------------------------------------
    async def read(self, request: Request, target: Target) -> Inbound:
        config = target.runner.config
        endpoint = target.endpoint
        if not endpoint.reads_body:  # the model reads it from the request itself
            return Inbound(None, output_prefs(request, None, ()), gather=_gathers(request))
        payload, size = await read_payload(
            request,
            max_body=config.runtime.max_body_bytes,
            media=config.media,
            model=endpoint.input_model,
            max_depth=config.runtime.max_json_depth,
            offload=target.runner.in_input_pool,
        )
        fields = endpoint.input_model.model_fields if endpoint.input_model else None
        prefs = output_prefs(request, payload, fields)
        return Inbound(
            payload,
            prefs,
            events=not endpoint.streams and wants(prefs.accept, "text/event-stream"),
            gather=(prefs.accept or "").strip() == "application/json",
            size=size,
        )

    # writing ------------------------------------------------------------------------------
    def _media(self, p: Prediction) -> Any:
        return self.models.get(p.model).config.media

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        media = self._media(p)
        if isinstance(result, Gathered):
            result = await asyncio.to_thread(gathered, result, media)
        return await render(result, p.ctx.output, media, p.ctx.timings)

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        media = self._media(p)
        if wants(p.ctx.output.accept, "text/event-stream"):

            async def frames() -> AsyncIterator[bytes]:
                try:
                    async for chunk in chunks:
                        yield sse_data(await encoded_chunk(chunk, media))
                except ImpastoError as exc:  # the model failed mid-stream: say so, then end
                    yield sse("error", exc.to_dict())

            return ClosingStream(frames(), source=chunks, media_type="text/event-stream")

        async def raw() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield await encoded_chunk(chunk, media)

        return ClosingStream(raw(), source=chunks, media_type="application/octet-stream")

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        media = self._media(p)
        prefs = replace(p.ctx.output, accept=None)  # the result goes out as JSON

        async def frames() -> AsyncIterator[bytes]:
            async for event in events:
                if event.kind in _SSE_KINDS:
                    yield await _event_frame(event, media)
                elif event.kind == "output":
                    try:
                        response = await render(event.data["output"], prefs, media)
                    except ImpastoError as exc:
                        yield sse("error", exc.to_dict())
                        return
                    yield b"event: result\ndata: " + bytes(response.body) + b"\n\n"
                elif event.kind == "completed" and "error" in event.data:
                    yield sse("error", {"error": event.data["error"]})

        return ClosingStream(
            frames(),
            source=events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        return error_response(error)


def _gathers(request: Request) -> bool:
    return (request.headers.get("accept") or "").strip() == "application/json"


async def _event_frame(event: Event, media: Any) -> bytes:
    if event.kind == "preview":
        from ...media import encode

        image = event.data["image"]
        enc = await asyncio.to_thread(encode, image, format="jpeg", quality=70, config=media)
        return sse("preview", {"step": event.data.get("step"), "image": enc.b64(True)})
    return sse(event.kind, event.data)
