"""KServe v1 (``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``) for impasto's
own packages.

That path is shared: a Truss-shaped package answers it as Truss does whatever its body
holds, so this adapter claims it only for packages of kind ``impasto`` (zero-code diffusers,
``@impasto.endpoint`` classes). There a body that is a JSON object with an ``instances``
key, sent to an endpoint whose inputs have no field called ``instances``, is a KServe v1
request: each instance is one input of the default endpoint (an object: its fields; any
other value: the endpoint's first required field, e.g. ``{"instances": ["a cat"]}`` is a
prompt), run as its own prediction, and the answer is ``{"predictions": [...]}`` with
errors as ``{"error": "..."}``. Every other body gets impasto's own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ...context import Event
from ...errors import ImpastoError, MalformedInput
from ...media import to_jsonable
from ...prediction import Prediction
from ..callpath import CallPath, Inbound, Many, Target
from ..dialects import Claim
from ..responses import FastJSONResponse
from .fields import fields_of, required
from .native import NativeAdapter

_KSERVE = "impasto.kserve_v1"


class KServeV1Adapter:
    """impasto's dialect on ``:predict``, with KServe v1's ``instances`` understood."""

    def __init__(self, callpath: CallPath) -> None:
        self.callpath = callpath
        self.native = NativeAdapter(callpath)

    def routes(self) -> list[Any]:
        return []

    def claims(self) -> list[Claim]:
        async def predict(request: Request) -> Response:
            model = request.path_params.get("model_name")
            return await self.callpath.handle(request, self, model, None)

        return [Claim("/v1/models/{model_name}:predict", "POST", predict, frozenset({"impasto"}))]

    async def read(self, request: Request, target: Target) -> Inbound:
        inbound = await self.native.read(request, target)
        payload = inbound.payload
        fields = fields_of(target.endpoint)
        if not (isinstance(payload, dict) and "instances" in payload):
            return inbound
        if fields is not None and "instances" in fields:
            return inbound  # the model's own field of that name
        request.scope[_KSERVE] = True
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise MalformedInput('Expected "instances" to be a list', field="instances")
        first = (required(target.endpoint) or [None])[0]
        items = []
        for i, instance in enumerate(instances):
            if isinstance(instance, dict) or fields is None:
                items.append(instance)
            elif first is None:
                raise MalformedInput(
                    f"instances[{i}]: the endpoint takes an object of its fields",
                    field="instances",
                )
            else:
                items.append({first: instance})
        return Inbound(None, inbound.prefs, items=items, gather=True, size=inbound.size)

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response:
        if not request.scope.get(_KSERVE):
            return await self.native.write_result(request, p, result)
        media = self.callpath.models.get(p.model).config.media
        predictions = await asyncio.to_thread(
            lambda: (
                [to_jsonable(r, format=p.ctx.output.format, config=media) for r in result]
                if isinstance(result, Many)
                else [to_jsonable(result, config=media)]
            )
        )
        return FastJSONResponse({"predictions": predictions})

    def write_stream(self, request: Request, p: Prediction, chunks: AsyncIterator[Any]) -> Response:
        return self.native.write_stream(request, p, chunks)

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response:
        return self.native.write_events(request, p, events)

    def write_error(self, request: Request, error: ImpastoError) -> Response:
        if not request.scope.get(_KSERVE):
            return self.native.write_error(request, error)
        status = 400 if error.status == 422 else error.status
        return FastJSONResponse({"error": error.message}, status, headers=error.headers)
