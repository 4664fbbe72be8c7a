"""Routes several protocols share, each answered in the dialect of the package it serves.

Some paths mean different things to different protocols (``GET /``, ``/v1/models/{name}``,
``/invocations``...). Each adapter *claims* a shared path for the kinds of package whose
dialect it speaks (``truss``, ``sagemaker``, ``octoai``...), or for every other kind
(``kinds=None``); a request goes to the claim of the kind of the model it resolves to
(``{model_name}`` in the path, else the default model).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ImpastoError
from .errors import error_response
from .registry import Models

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Claim:
    """An adapter's handler for ``method path`` when the model is of one of ``kinds``
    (None: any kind no other claim of that path and method names)."""

    path: str
    method: str
    endpoint: Endpoint
    kinds: frozenset[str] | None = None


def shared_routes(claims: Iterable[Claim], models: Models) -> list[Route]:
    """One route per claimed path, dispatching each request on its model's kind."""
    by_path: dict[str, dict[tuple[str, str | None], Endpoint]] = {}
    for claim in claims:
        table = by_path.setdefault(claim.path, {})
        for kind in claim.kinds or (None,):
            key = (claim.method.upper(), kind)
            if key in table:
                raise ValueError(f"two adapters claim {claim.method} {claim.path} for {kind}")
            table[key] = claim.endpoint
    return [_route(path, table, models) for path, table in by_path.items()]


def _route(path: str, table: dict[tuple[str, str | None], Endpoint], models: Models) -> Route:
    methods = sorted({method for method, _ in table})

    async def dispatch(request: Request) -> Response:
        try:
            runner = models.get(request.path_params.get("model_name"))
        except ImpastoError as exc:
            return error_response(exc)
        method = request.method
        endpoint = table.get((method, runner.kind)) or table.get((method, None))
        if endpoint is None and method == "HEAD":
            endpoint = table.get(("GET", runner.kind)) or table.get(("GET", None))
        if endpoint is None:
            return Response(status_code=404)
        return await endpoint(request)

    return Route(path, dispatch, methods=methods)
