"""The OpenAI Images API over the call path: what the ``openai`` SDK and the UIs built on it
speak.

``POST /v1/images/generations`` (JSON) runs the model's text-to-image endpoint,
``/v1/images/edits`` (multipart; ``image`` or ``image[]``, an optional ``mask`` whose
transparent pixels mark what to repaint) its inpainting or image-to-image endpoint, once per
image, and ``/v1/images/variations`` image-to-image with an empty prompt. ``GET /v1/models``
lists the served models. The request's fields map onto the endpoint's inputs (see
:mod:`.openai_fields`); results come back as base64 or as URLs this server answers for
``results.ttl_s`` seconds, or as the SSE events the SDK parses (``stream=true``, with
``partial_images`` built from the model's step previews). Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with ``x-should-retry: false`` where a
retry cannot help.

The model name is in the body, so these routes read the body before admission (bounded by
``runtime.max_body_bytes``); decoding still waits for a place in the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...context import Event
from ...errors import ImpastoError, MalformedInput, NotFound
from ...media import encode
from ...prediction import Prediction
from ..callpath import CallPath, Gathered, Inbound, Many, Target
from ..requests import parse_form, parse_json, read_body
from ..responses import ClosingStream, FastJSONResponse, dumps
from ..results import ResultsConfig, ResultStore
from .fields import images_of, task_endpoint
from .openai_fields import ImagesCall, read_edit, read_generation, read_variation

_PLAN = "impasto.openai"


class OpenAIAdapter:
    """Reads and writes the OpenAI Images API's shapes."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models = callpath.models
        settings = callpath.settings
        config: ResultsConfig = getattr(settings, "results", None) or ResultsConfig()
        self.store = ResultStore(config.ttl_s, config.max_bytes)
        self.public_url = config.public_url.rstrip("/") if config.public_url else None
        self.created = int(time.time())

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self.generations, methods=["POST"]),
            Route("/v1/images/edits", self.edits, methods=["POST"]),
            Route("/v1/images/variations", self.variations, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/images/results/{token}", self.result, methods=["GET"]),
        ]

    def unauthorized(self, scope: Any, message: str) -> Response | None:
        path = scope["path"]
        if path.startswith("/v1/images/") or path == "/v1/models":
            return openai_error(401, message, "invalid_request_error", code="invalid_api_key")
        return None

    # routes -------------------------------------------------------------------------------
    async def generations(self, request: Request) -> Response:
        return await self._call(request, "generations")

    async def edits(self, request: Request) -> Response:
        return await self._call(request, "edits")

    async def variations(self, request: Request) -> Response:
        return await self._call(request, "variations")

    async def _call(self, request: Request, kind: str) -> Response:
        try:
            limit = max(r.config.runtime.max_body_bytes for r in self.models)
            body = await read_body(request, limit)
            if kind == "generations":
                data = parse_json(body, self.models.default.config.runtime.max_json_depth)
                if not isinstance(data, dict):
                    raise MalformedInput("the body must be a JSON object", field="body")
            else:
                data = await parse_form(request, self.models.default.config.media, limit)
            runner = self._runner(data.get("model"))
            if kind == "generations":
                call = read_generation(runner, data)
            elif kind == "edits":
                call = await read_edit(runner, data)
            else:
                call = await read_variation(runner, data)
        except ImpastoError as exc:
            return self.write_error(request, exc)
        request.scope[_PLAN] = call
        return await self.callpath.handle(request, self, runner.name, call.endpoint.name)

    def _runner(self, name: Any) -> Any:
        if name is not None and not isinstance(name, str):
            raise MalformedInput("model must be a string", field="model")
        try:
            return self.models.get(name or None)
        except NotFound:
            known = ", ".join(self.models.names)
            raise NotFound(
                f"The model `{name}` does not exist; this server serves: {known}", field="model"
            ) from None

    async def list_models(self, request: Request) -> Response:
        data = [
            {
                "id": runner.name,
                "object": "model",
                "created": int(runner.load_completed_at or self.created),
                "owned_by": "impasto",
                "state": self.models.state(runner),
                "default": runner is self.models.default,
                "can_generate": task_endpoint(runner, "text2img") is not None,
                "can_edit": task_endpoint(runner, "img2img") is not None,
            }
            for runner in self.models
        ]
        return FastJSONResponse({"object": "list", "data": data})

    async def result(self, request: Request) -> Response:
        item = self.store.get(request.path_params["token"])
        if item is None:
            return openai_error(404, "this result URL has expired or never existed", "not_found")
        left = max(0, int(item.expires - time.monotonic()))
        headers = {"Cache-Control": f"private, max-age={left}"}
        return Response(item.data, media_type=item.content_type, headers=headers)

    # reading ------------------------------------------------------------------------------
    async def read(self, request: Request, target: Target) -> Inbound:
        call: ImagesCall = request.scope[_PLAN]
        if len(call.payloads) > 1:
            return Inbound(None, call.prefs, items=list(call.payloads), gather=True)
        return Inbound(call.payloads[0], call.prefs, events=call.stream, gather=True)

    # writing ------------------------------------------------------------------------------
    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        call: ImagesCall = request.scope[_PLAN]
        results = list(result) if isinstance(result, Many) else [result]
        images = [img for r in results for img in images_of(_flat(r))]
        if not images:
            raise ImpastoError(f"model {p.model} returned no images")
        media = self.models.get(p.model).config.media
        encoded = await asyncio.to_thread(
            lambda: [
                encode(i, format=call.format, quality=call.quality, config=media) for i in images
            ]
        )
        data = []
        for enc in encoded:
            if call.response_format == "url":
                token = self.store.put(enc.data, enc.content_type)
                data.append({"url": self._url(request, token), "revised_prompt": None})
            else:
                data.append({"b64_json": enc.b64(False), "revised_prompt": None})
        body = {"created": int(time.time()), "data": data, **call.echo(encoded[0].format)}
        return FastJSONResponse(body)

    def _url(self, request: Request, token: str) -> str:
        base = self.public_url or str(request.base_url).rstrip("/")
        return f"{base}/v1/images/results/{token}"

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        raise AssertionError("OpenAI requests gather streamed chunks")  # read() sets gather

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        call: ImagesCall = request.scope[_PLAN]
        media = self.models.get(p.model).config.media
        prefix = "image_edit" if call.kind == "edits" else "image_generation"

        def frame(kind: str, image: Any, **extra: Any) -> bytes:
            enc = encode(image, format=call.format, quality=call.quality, config=media)
            event = {
                "type": f"{prefix}.{kind}",
                "b64_json": enc.b64(False),
                "created_at": int(time.time()),
                **call.event_echo(enc.format),
                **extra,
            }
            return f"event: {prefix}.{kind}\ndata: ".encode() + dumps(event) + b"\n\n"

        async def frames() -> AsyncIterator[bytes]:
            sent = 0
            async for event in events:
                if event.kind == "preview" and sent < call.partial_images:
                    image = call.preview_size(event.data["image"])
                    yield await asyncio.to_thread(
                        frame, "partial_image", image, partial_image_index=sent
                    )
                    sent += 1
                elif event.kind == "output":
                    for image in images_of(_flat(event.data["output"])):
                        yield await asyncio.to_thread(frame, "completed", image, usage=_USAGE)
                elif event.kind == "completed" and "error" in event.data:
                    error = event.data["error"]
                    body = _error_body(
                        error.get("message", "error"), "server_error", _param(error.get("field"))
                    )
                    yield b"event: error\ndata: " + dumps(body) + b"\n\n"

        return ClosingStream(
            frames(),
            source=events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        status = 400 if error.status == 422 else error.status
        param = _param(error.field)
        if status == 404 and error.field == "model":
            return openai_error(
                404, error.message, "invalid_request_error", param, "model_not_found"
            )
        if status == 429:
            kind, code = "requests", "rate_limit_exceeded"
        elif status >= 500:
            kind, code = "server_error", "timeout" if status == 504 else None
        else:
            kind, code = "invalid_request_error", None
        response = openai_error(status, error.message, kind, param, code)
        response.headers.update(error.headers)
        return response


def _flat(result: Any) -> Any:
    return list(result) if isinstance(result, Gathered) else result


_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}

# impasto's field names as OpenAI's parameters
_PARAMS = {
    "num_images": "n",
    "width": "size",
    "height": "size",
    "num_inference_steps": "quality",
    "body": None,
}


def _param(field: str | None) -> str | None:
    if field is None:
        return None
    head = field.split(".")[0]
    return _PARAMS.get(head, head)


def _error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> Response:
    """An error in OpenAI's shape; ``x-should-retry: false`` where a retry cannot help."""
    retry = status in (408, 409, 429) or status in (502, 503, 504)
    headers = {"x-should-retry": "true" if retry else "false"}
    return FastJSONResponse(_error_body(message, kind, param, code), status, headers=headers)
