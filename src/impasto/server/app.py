"""The app factory: one Starlette app assembled from the runner and the route modules."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..errors import ImpastoError
from ..runner import Runner
from .errors import http_error, impasto_error, unhandled_error
from .middleware import RequestIdMiddleware
from .openapi import DOCS_HTML, build_openapi
from .responses import FastJSONResponse
from .routes import health_routes, predict_routes

log = logging.getLogger("impasto.server")


@dataclass(frozen=True)
class ServerSettings:
    """What the app needs besides the runner."""

    model_name: str = "model"
    on_load_failed: Callable[[], None] | None = None
    extra_routes: tuple[BaseRoute, ...] = ()


def create_app(runner: Runner, settings: ServerSettings | None = None) -> Starlette:
    """Build the ASGI app; the model starts loading in the background at startup."""
    settings = settings or ServerSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = runner.start()
        if settings.on_load_failed is not None:
            callback = settings.on_load_failed
            task.add_done_callback(lambda t: None if runner.ready else callback())
        try:
            yield
        finally:
            await runner.aclose()

    async def openapi(request: Request) -> Response:
        return FastJSONResponse(build_openapi(runner, settings.model_name, __version__))

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML.format(title=settings.model_name))

    async def metrics(request: Request) -> Response:
        if runner.metrics is None:
            return Response(status_code=404)
        return Response(runner.metrics.render(), media_type=runner.metrics.content_type)

    routes: list[BaseRoute] = [
        *predict_routes(runner),  # first: the hot path matches without scanning the rest
        *health_routes(runner, settings.model_name),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
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
    app.state.runner = runner
    app.state.settings = settings
    return app
