"""The SageMaker hosting contract: ``GET /ping``, ``POST /invocations`` and the API's
``POST /endpoints/{name}/invocations``.

``/invocations`` speaks the dialect of the package it serves:

- a SageMaker model folder (kind ``sagemaker``) gets the Hugging Face inference toolkit's:
  the raw body and its ``Content-Type`` go to the handlers, the reply is what they wrote,
  with ``Content-Type`` set to the Accept (``application/json`` when missing or ``*/*``);
  anything a handler raises is ``400 {"code": 400, "type": "InternalServerException",
  "message": ...}``, while an overloaded server still answers 429 and a deadline 504;
- every kind no other adapter claims (impasto's own packages) gets a mapping onto its
  endpoints: a JSON body goes to the default endpoint (``X-Amzn-SageMaker-Custom-Attributes:
  endpoint=NAME`` picks another), ``{"inputs": x, "parameters": {...}}`` becomes the
  endpoint's first required field plus those fields, and Accept picks the output format.

``/endpoints/{name}/invocations`` is the path ``boto3``'s ``invoke_endpoint`` sends to, so a
local server works as its ``endpoint_url``: it answers what ``/invocations`` answers, and
turns a non-2xx answer into SageMaker's own ``ModelError`` (424, with ``OriginalStatusCode``
and ``OriginalMessage``), as the SageMaker API does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ...context import Event, OutputPrefs
from ...errors import ImpastoError, InputError, MalformedInput
from ...prediction import Prediction
from ...sagemaker import codec
from ...sagemaker.mms import CUSTOM_ATTRIBUTES, Headers
from ...sagemaker.model import Invocation, Reply
from ...spec import EndpointSpec
from ..callpath import CallPath, Gathered, Inbound, Target
from ..dialects import Claim
from ..errors import error_response
from ..registry import Models
from ..requests import header, media_type
from ..responses import gathered, raw_stream, render

SAGEMAKER = frozenset({"sagemaker"})
API_MAX_BODY = 6 * 1024 * 1024  # InvokeEndpoint's own limit on Body, enforced by the API
_TYPES = {
    404: "ModelNotFoundException",
    413: "PayloadTooLargeException",
    429: "TooManyRequestsException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}
_ALIASES = {"num_images_per_prompt": "num_images"}  # diffusers' name -> impasto's field


class Writers:
    """What both dialects write alike: a result, a stream of chunks (no reader here asks
    for one from a streaming endpoint, which is gathered) and events (never asked for)."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models: Models = callpath.models

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        if isinstance(result, Reply):
            return result
        media = self.models.get(p.model).config.media
        if isinstance(result, Gathered):
            result = await asyncio.to_thread(gathered, result, media)
        return await render(result, p.ctx.output, media, p.ctx.timings)

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        return raw_stream(chunks, self.models.get(p.model).config.media)

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        media = self.models.get(p.model).config.media

        async def result() -> AsyncIterator[bytes]:
            async for event in events:
                if event.kind == "output":
                    yield bytes((await render(event.data["output"], p.ctx.output, media)).body)

        return StreamingResponse(result(), media_type=p.ctx.output.accept or "application/json")


class SageMakerAdapter(Writers):
    """The toolkit's ``/invocations`` for SageMaker folders; ``/ping``; the API alias."""

    def __init__(self, callpath: CallPath) -> None:
        super().__init__(callpath)
        self.generic = InvocationsAdapter(callpath)

    def routes(self) -> list[Route]:
        return [Route("/endpoints/{endpoint_name}/invocations", ApiAlias(), methods=["POST"])]

    def claims(self) -> list[Claim]:
        async def invocations(request: Request) -> Response:
            return await self.callpath.handle(request, self)

        return [
            Claim("/ping", "GET", self.ping, SAGEMAKER),
            Claim("/ping", "GET", self.ping),
            Claim("/invocations", "POST", invocations, SAGEMAKER),
            Claim("/invocations", "POST", self.generic.invocations),
        ]

    async def ping(self, request: Request) -> Response:
        """200 with an empty body once every model can serve, 503 before (and after a
        failed load, and while shutting down)."""
        for runner in self.models:
            if not runner.ready or runner.closing:
                state = "shutting down" if runner.closing else runner.state
                return toolkit_error(503, f"model {runner.name} is not ready ({state})")
        return Response(status_code=200)

    def extend_openapi(self, doc: dict[str, Any]) -> None:
        paths = doc.setdefault("paths", {})
        body = {"required": True, "content": {"*/*": {"schema": {}}}}
        ok = {"200": {"description": "The reply, in the Accept's format"}}
        invoke = {"summary": "SageMaker invocation", "requestBody": body, "responses": ok}
        paths["/invocations"] = {"post": {**invoke, "operationId": "sagemaker_invocations"}}
        paths["/endpoints/{endpoint_name}/invocations"] = {
            "post": {**invoke, "operationId": "sagemaker_invoke_endpoint"}
        }
        paths["/ping"] = {"get": {"summary": "SageMaker health check", "responses": ok}}

    # the toolkit's dialect -------------------------------------------------------------------
    async def read(self, request: Request, target: Target) -> Inbound:
        body = await target.body()
        headers = Headers(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
        )
        return toolkit_inbound(
            body, header(request, b"content-type"), header(request, b"accept"), headers
        )

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        return toolkit_error(error.status, error.message, error.headers)


def toolkit_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The model server's error body: ``{"code", "type", "message"}``, indented as MMS does."""
    kind = _TYPES.get(status, "InternalServerException")
    body = json.dumps({"code": status, "type": kind, "message": message}, indent=2)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class InvocationsAdapter(Writers):
    """``/invocations`` for impasto's own packages: JSON onto their endpoints."""

    async def invocations(self, request: Request) -> Response:
        endpoint = custom_attributes(header(request, b"x-amzn-sagemaker-custom-attributes")).get(
            "endpoint"
        )
        return await self.callpath.handle(request, self, None, endpoint or None)

    async def read(self, request: Request, target: Target) -> Inbound:
        check_json_type(media_type(request))
        body = await target.body()
        return mapped_inbound(
            await target.json(body), target.endpoint, header(request, b"accept"), len(body)
        )

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        return error_response(error)


def toolkit_inbound(
    body: bytes, content_type: str | None, accept: str | None, headers: Headers
) -> Inbound:
    """A SageMaker folder's request: the raw body and its types, for its handlers."""
    accept = codec.accept_type(accept)
    invocation = Invocation(body, content_type, accept, headers)
    return Inbound(invocation, OutputPrefs(accept=accept), size=len(body))


def check_json_type(kind: str) -> None:
    """impasto's own packages take JSON on ``/invocations``: media bodies are refused."""
    if kind.startswith(("image/", "audio/", "video/")) or kind == "text/csv":
        raise MalformedInput(
            f"Content type {kind} is not supported for this model: send a JSON body, "
            '{"inputs": ..., "parameters": {...}} or the endpoint\'s own fields, with '
            "media as base64",
            field="body",
        )


def mapped_inbound(data: Any, endpoint: EndpointSpec, accept: str | None, size: int) -> Inbound:
    """An impasto package's request: the toolkit's JSON onto the endpoint's fields, the
    Accept picking the output format."""
    payload = from_toolkit(data, endpoint.input_model)
    prefs = OutputPrefs(accept=None if codec.accept_type(accept) == codec.JSON else accept)
    return Inbound(payload, prefs, gather=endpoint.streams, size=size)


def custom_attributes(value: str | None) -> dict[str, str]:
    """``key=value`` pairs of ``X-Amzn-SageMaker-Custom-Attributes`` (``;`` or ``,``
    between pairs; items without ``=`` are ignored: the header is opaque to SageMaker)."""
    found: dict[str, str] = {}
    for item in (value or "").replace(",", ";").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            found[key.strip()] = val.strip()
    return found


def from_toolkit(payload: Any, model: type[BaseModel] | None) -> Any:
    """``{"inputs": x, "parameters": {...}}`` as an endpoint's own fields: ``inputs`` goes
    to the first required field (``prompt`` for text2img), ``parameters`` are the others.
    Bodies already in the endpoint's own shape pass unchanged."""
    if model is None or not isinstance(payload, dict) or "inputs" not in payload:
        return payload
    fields = model.model_fields
    if "inputs" in fields or not fields:
        return payload
    primary = next((n for n, f in fields.items() if f.is_required()), next(iter(fields)))
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(
            "parameters must be a JSON object of the model's fields", field="parameters"
        )
    out = {k: v for k, v in payload.items() if k not in ("inputs", "parameters")}
    for key, value in params.items():
        alias = _ALIASES.get(key)
        out[alias if alias in fields and key not in fields else key] = value
    out[primary] = payload["inputs"]
    return out


class ApiAlias:
    """``/endpoints/{name}/invocations``: what ``/invocations`` answers, as the SageMaker
    API relays it (a non-2xx answer becomes a ``ModelError``; a body over 6 MiB a
    ``ValidationError``)."""

    def __init__(self, max_body: int = API_MAX_BODY) -> None:
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            message = (
                "1 validation error detected: Value at 'body' failed to satisfy constraint: "
                f"Member must have length less than or equal to {self.max_body}"
            )
            await _aws_error(send, 400, "ValidationError", {"message": message})
            return
        inner = {**scope, "path": "/invocations", "raw_path": b"/invocations"}
        failed: dict[str, Any] = {}

        async def relay(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] >= 300:
                    failed.update(status=message["status"], body=b"")
                    return
                headers = [*message.get("headers", []), _VARIANT]
                await send({**message, "headers": headers})
            elif failed:
                failed["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    await _model_error(send, failed["status"], failed["body"])
            else:
                await send(message)

        await scope["app"].router(inner, receive, relay)


_VARIANT = (b"x-amzn-invoked-production-variant", b"AllTraffic")


async def _model_error(send: Send, status: int, body: bytes) -> None:
    original = body.decode("utf-8", "replace")
    side = "client" if status < 500 else "server"
    message = f'Received {side} error ({status}) from primary with message "{original}".'
    await _aws_error(
        send,
        424,
        "ModelError",
        {
            "ErrorCode": f"{side.upper()}_ERROR_FROM_MODEL",
            "message": message,
            "OriginalStatusCode": status,
            "OriginalMessage": original,
        },
    )


async def _aws_error(send: Send, status: int, code: str, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"x-amzn-errortype", code.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


__all__ = ["CUSTOM_ATTRIBUTES", "ApiAlias", "SageMakerAdapter", "custom_attributes"]
