"""The app factory: one Starlette app assembled from the models and the protocol adapters."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
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
from .auth import ApiKeyMiddleware, ApiKeys
from .callpath import CallPath
from .dialects import shared_routes
from .errors import http_error, impasto_error, unhandled_error
from .health import health_routes
from .middleware import RequestIdMiddleware
from .openapi import DOCS_HTML, build_openapi, docs_assets
from .registry import Models
from .responses import FastJSONResponse
from .results import ResultsConfig

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
    api_keys: ApiKeys | None = None  # keys every protocol's routes require (None: open)
    results: ResultsConfig = field(default_factory=ResultsConfig)  # results served by URL
    ui: bool = False  # the playground at /ui (impasto.ui; needs the ui extra)
    # durable async jobs: called with the CallPath, gives routes(), start() and aclose()
    jobs: Callable[[CallPath], Any] | None = None


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
    callpath = CallPath(registry, settings)
    jobs = callpath.jobs = settings.jobs(callpath) if settings.jobs is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        undo = logs.install(settings.redact)
        callback = settings.on_load_failed

        def loaded(runner: Runner) -> None:
            if not runner.ready:
                if callback is not None:
                    callback()
            elif settings.on_ready is not None and all(registry.available(r) for r in registry):
                settings.on_ready(app)  # every model that loads at start has

        registry.start(loaded)
        if jobs is not None:
            await jobs.start()
        try:
            yield
        finally:
            if jobs is not None:  # first: running jobs go back to the queue, not fail
                await jobs.aclose()
            await registry.pool.aclose()
            for runner in registry:
                await runner.aclose()
            undo()

    openapi_body: list[bytes] = []

    async def openapi(request: Request) -> Response:
        if not openapi_body:  # built once, on first use
            doc = build_openapi(registry, title, __version__)
            for adapter in adapters:  # each may describe its own routes
                getattr(adapter, "extend_openapi", lambda doc: None)(doc)
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
        *(jobs.routes() if jobs is not None else ()),
        *settings.extra_routes,
    ]
    middleware = [Middleware(RequestIdMiddleware)]
    if settings.api_keys:
        owners = [a.unauthorized for a in adapters if hasattr(a, "unauthorized")]
        middleware.append(
            Middleware(
                ApiKeyMiddleware,
                keys=settings.api_keys,
                unauthorized=_first(owners),
                checks_its_own=("/ui",) if settings.ui else (),  # the page asks for the key
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
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
    if settings.ui:  # imported only when on: Gradio is heavy
        from ..ui import mount_ui

        mount_ui(app, registry, auth=getattr(settings, "api_keys", None))
    return app


def _first(owners: list[Callable[[Any, str], Response | None]]) -> Callable[[Any, str], Response]:
    """A 401 in the shape of the first protocol that owns the path, else impasto's own."""

    def unauthorized(scope: Any, message: str) -> Response:
        for owner in owners:
            response = owner(scope, message)
            if response is not None:
                return response
        body = {"error": {"type": "unauthorized", "message": message, "field": None}}
        return FastJSONResponse(body, status_code=401)

    return unauthorized
