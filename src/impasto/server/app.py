"""The app factory: one Starlette app assembled from the models and the protocol adapters."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__, logs
from ..errors import ImpastoError
from ..runner import Runner
from .adapters import NativeAdapter, protocol_adapters
from .callpath import CallPath
from .dialects import shared_routes
from .errors import http_error, impasto_error, unhandled_error
from .health import health_routes
from .middleware import RequestIdMiddleware
from .openapi import DOCS_HTML, build_openapi, docs_assets
from .registry import Models
from .responses import FastJSONResponse

log = logging.getLogger("impasto.server")


@dataclass(frozen=True)
class ServerSettings:
    """What the app needs besides the models."""

    model_name: str | None = None  # the title of the API docs (default: the default model)
    on_load_failed: Callable[[], None] | None = None
    on_ready: Callable[[Starlette], None] | None = None  # once every model has loaded
    extra_routes: tuple[BaseRoute, ...] = ()
    # More protocols: each is called with the CallPath and gives ``routes()`` and optionally
    # ``claims()`` on shared paths (see docs/architecture.md); after impasto's own.
    adapters: tuple[Callable[[CallPath], Any], ...] = ()
    redact: Callable[[str], str] | None = None  # secrets scrubbed from every log record


def create_app(
    models: Runner | Sequence[Runner] | Models, settings: ServerSettings | None = None
) -> Starlette:
    """Build the ASGI app; every model starts loading in the background at startup."""
    settings = settings or ServerSettings()
    if isinstance(models, Runner):
        models = Models([models])
    elif not isinstance(models, Models):
        models = Models(list(models))
    registry = models
    title = settings.model_name or registry.default.name
    callpath = CallPath(registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        undo = logs.install(settings.redact)
        callback = settings.on_load_failed

        def loaded(runner: Runner) -> None:
            if not runner.ready:
                if callback is not None:
                    callback()
            elif settings.on_ready is not None and all(r.ready for r in registry):
                settings.on_ready(app)

        for runner in registry:
            runner.start().add_done_callback(lambda _t, r=runner: loaded(r))
        try:
            yield
        finally:
            for runner in registry:
                await runner.aclose()
            undo()

    openapi_body: list[bytes] = []

    async def openapi(request: Request) -> Response:
        if not openapi_body:  # built once, on first use
            doc = build_openapi(registry, title, __version__)
            openapi_body.append(FastJSONResponse(doc).body)
        return Response(openapi_body[0], media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML.format(title=title))

    metrics = registry.default.metrics

    async def metrics_route(request: Request) -> Response:
        if metrics is None:
            return Response(status_code=404)
        return Response(metrics.render(), media_type=metrics.content_type)

    native = NativeAdapter(callpath)
    adapters = [*(make(callpath) for make in (*protocol_adapters(), *settings.adapters))]
    health, health_claims = health_routes(registry)
    claims = [*native.claims(), *health_claims]
    for adapter in adapters:
        claims.extend(getattr(adapter, "claims", list)())
    routes: list[BaseRoute] = [
        *native.routes(),  # first: the hot path matches without scanning the rest
        *shared_routes(claims, registry),
        *health,
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=docs_assets()), name="docs-assets"),
        Route("/metrics", metrics_route, methods=["GET"]),
        *(route for adapter in adapters for route in adapter.routes()),
        *settings.extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            ImpastoError: impasto_error,
            HTTPException: http_error,
            Exception: unhandled_error,
        },
        lifespan=lifespan,
    )
    app.state.models = registry
    app.state.runner = registry.default
    app.state.callpath = callpath
    app.state.settings = settings
    return app
