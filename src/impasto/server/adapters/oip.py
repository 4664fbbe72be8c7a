"""KServe v2 / the Open Inference Protocol over the call path: what ``tritonclient[http]``
and the ``kserve`` client speak, with the binary tensor data extension both ways.

``/v2/health/live``, ``/v2/health/ready`` (503 while a model that loads at start is
loading), ``/v2`` (server metadata), ``/v2/models`` (the names), ``/v2/models/{name}``
(metadata from the endpoint's schema), ``/v2/models/{name}/ready`` and ``POST
/v2/models/{name}/infer``; each also under ``/versions/1`` (the one version a served model
has; any other is a 404). ``{name}`` is a model; ``{model}:{endpoint}`` (or the query
parameter ``endpoint``) one of its other endpoints. Tensors map onto the endpoint's inputs
and its results back (:mod:`.oip_mapping`). Errors are ``{"error": "..."}``: bad input 400,
unknown model 404, overloaded 429, not loaded 503.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ... import __version__
from ...context import Event, OutputPrefs
from ...errors import ImpastoError, MalformedInput, NotFound, PayloadTooLarge
from ...prediction import Prediction
from ...runner import Runner
from ...spec import EndpointSpec
from ..callpath import CallPath, Gathered, Inbound, Many, Target
from ..requests import header
from ..responses import FastJSONResponse
from .oip_mapping import tensor_specs, to_payloads, to_tensors
from .tensors import parse_infer, render_outputs

VERSION = "1"  # the one version of each served model
_INFO = "impasto.oip"
_HEADER_LENGTH = b"inference-header-content-length"


@dataclass(frozen=True)
class InferInfo:
    """What the response needs from the request."""

    name: str  # the model name as the client sent it
    id: str | None
    outputs: tuple[dict[str, Any], ...] | None  # requested outputs (None: all)
    binary: bool  # binary_data_output
    pixels: bool  # image_encoding: "uint8"


class OIPAdapter:
    """Reads and writes the Open Inference Protocol's REST shapes."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.models = callpath.models

    def routes(self) -> list[Route]:
        routes = [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/models", self.list_models, methods=["GET"]),
        ]
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes += [
                Route(prefix, self.metadata, methods=["GET"]),
                Route(prefix + "/ready", self.model_ready, methods=["GET"]),
                Route(prefix + "/infer", self.infer, methods=["POST"]),
            ]
        return routes

    def unauthorized(self, scope: Any, message: str) -> Response | None:
        path = scope["path"]
        if path == "/v2" or path.startswith("/v2/"):
            return FastJSONResponse({"error": message}, 401)
        return None

    # names --------------------------------------------------------------------------------
    def _resolve(self, request: Request) -> tuple[Runner, EndpointSpec]:
        name, endpoint = self.models.split(request.path_params["name"])
        version = request.path_params.get("version")
        endpoint = endpoint or request.query_params.get("endpoint") or None
        runner, ep = self.models.resolve(name, endpoint)
        if version is not None and version != VERSION:
            raise NotFound(f"model {name} has no version {version!r}; it has: {VERSION}")
        return runner, ep

    # health and metadata ------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return FastJSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        waiting = [r for r in self.models if not self.models.available(r)]
        if waiting:
            listed = ", ".join(f"{r.name} ({self.models.state(r)})" for r in waiting)
            body = {"ready": False, "error": f"not ready: {listed}"}
            return FastJSONResponse(body, 503, headers={"Retry-After": "1"})
        return FastJSONResponse({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return FastJSONResponse(
            {"name": "impasto", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def list_models(self, request: Request) -> Response:
        return FastJSONResponse({"models": self.models.names})

    async def metadata(self, request: Request) -> Response:
        try:
            runner, ep = self._resolve(request)
        except ImpastoError as exc:
            return self.write_error(request, exc)
        return FastJSONResponse(
            {
                "name": request.path_params["name"],
                "versions": [VERSION],
                "platform": "impasto",
                "inputs": tensor_specs(ep.input_model, "input"),
                "outputs": tensor_specs(None if ep.streams else ep.output_model, "output"),
                "parameters": {"endpoint": ep.name, "endpoints": list(runner.spec.endpoints)},
            }
        )

    async def model_ready(self, request: Request) -> Response:
        try:
            runner, _ = self._resolve(request)
        except ImpastoError as exc:
            return self.write_error(request, exc)
        name = request.path_params["name"]
        if self.models.available(runner):
            return FastJSONResponse({"name": name, "ready": True})
        state = self.models.state(runner)
        body = {
            "name": name,
            "ready": False,
            "error": f"Model with name {name} is not ready ({state}).",
        }
        return FastJSONResponse(body, 503, headers={"Retry-After": "1"})

    # inference ----------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        try:
            runner, ep = self._resolve(request)
        except ImpastoError as exc:
            return self.write_error(request, exc)
        return await self.callpath.handle(request, self, runner.name, ep.name)

    async def read(self, request: Request, target: Target) -> Inbound:
        runtime = target.runner.config.runtime
        body = _decompressed(request, await target.body(), runtime.max_body_bytes)
        length = header(request, _HEADER_LENGTH)
        parse = lambda: parse_infer(body, length, runtime.max_json_depth)  # noqa: E731
        if len(body) > 64 * 1024:
            infer, tensors = await target.runner.in_input_pool(parse)
        else:
            infer, tensors = parse()
        params = infer.get("parameters") or {}
        if not isinstance(params, dict):
            raise MalformedInput("parameters must be an object", field="parameters")
        outputs = infer.get("outputs")
        if outputs is not None and not (
            isinstance(outputs, list) and all(isinstance(o, dict) and "name" in o for o in outputs)
        ):
            raise MalformedInput("outputs must be a list of {name, parameters}", field="outputs")
        encoding = params.get("image_encoding", "file")
        if encoding not in ("file", "uint8"):
            raise MalformedInput('image_encoding must be "file" or "uint8"', field="image_encoding")
        fmt = params.get("output_format")
        quality = params.get("quality")
        if quality is not None and (not isinstance(quality, int) or not 1 <= quality <= 100):
            raise MalformedInput("quality must be an integer from 1 to 100", field="quality")
        request_id = infer.get("id")
        request.scope[_INFO] = InferInfo(
            name=request.path_params["name"],
            id=str(request_id) if request_id is not None else None,
            outputs=tuple(outputs) if outputs is not None else None,
            binary=params.get("binary_data_output") is True,
            pixels=encoding == "uint8",
        )
        payloads = to_payloads(target.endpoint, tensors, params)
        prefs = OutputPrefs(format=str(fmt).lower() if fmt else None, quality=quality)
        if len(payloads) == 1:
            return Inbound(payloads[0], prefs, gather=True, size=len(body))
        return Inbound(None, prefs, items=payloads, gather=True, size=len(body))

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        info: InferInfo = request.scope[_INFO]
        results = [_flat(r) for r in result] if isinstance(result, Many) else [_flat(result)]
        media = self.models.get(p.model).config.media
        prefs = p.ctx.output
        tensors = await asyncio.to_thread(
            to_tensors,
            results,
            media=media,
            fmt=prefs.format,
            quality=prefs.quality,
            pixels=info.pixels,
        )
        binary = [info.binary] * len(tensors)
        if info.outputs is not None:
            by_name = {t.name: t for t in tensors}
            missing = [o["name"] for o in info.outputs if o["name"] not in by_name]
            if missing:
                raise MalformedInput(
                    f"unknown output {missing[0]!r}; the model returns: {', '.join(by_name)}",
                    field="outputs",
                )
            tensors = [by_name[o["name"]] for o in info.outputs]
            binary = [
                (o.get("parameters") or {}).get("binary_data", info.binary) is True
                for o in info.outputs
            ]
        head = {
            "model_name": info.name,
            "model_version": VERSION,
            "id": info.id or p.id,
            "parameters": {"endpoint": p.endpoint},
        }
        body, length = await asyncio.to_thread(render_outputs, head, tensors, binary)
        if length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(length)},
        )

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        raise AssertionError("inference requests gather streamed chunks")  # read() sets gather

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        raise AssertionError("inference requests never ask for events")

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        status = 400 if error.status == 422 else error.status
        return FastJSONResponse({"error": error.message}, status, headers=error.headers)


def _flat(result: Any) -> Any:
    return list(result) if isinstance(result, Gathered) else result


def _decompressed(request: Request, body: bytes, limit: int) -> bytes:
    """A body sent with ``Content-Encoding: gzip`` or ``deflate`` (tritonclient's request
    compression), inflated up to ``limit`` bytes."""
    encoding = (header(request, b"content-encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise MalformedInput(f"Content-Encoding {encoding!r} is not supported", field="body")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedInput(f"the {encoding} body does not inflate: {exc}", field="body") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"the inflated body exceeds {limit} bytes (runtime.max_body_bytes)", field="body"
        )
    return out
