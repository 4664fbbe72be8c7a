"""Liveness, readiness and schema routes, for one model or several (impasto's dialect).

``GET /`` and ``/health/live`` answer while the process runs; ``/health/ready`` once every
model is available (loaded, or lazy: loaded by its first request) and none's
``is_healthy()`` says otherwise, with each model's state, or 503 naming the ones that are
not; ``GET
/v1/models/{name}`` (and ``/loaded``) is one model's readiness, ``/schema`` its default
endpoint's input and output schemas.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import NotFound, NotReady
from ..runner import Runner
from .dialects import Claim
from .errors import error_response
from .openapi import schema_of
from .registry import Models
from .responses import FastJSONResponse


def not_ready(runner: Runner) -> Response:
    if runner.state == "failed":
        message = f"model {runner.name} failed to load: {runner.load_error}"
    elif runner.closing:
        message = f"model {runner.name} is shutting down"
    elif runner.ready:
        message = f"model {runner.name} is not healthy (its is_healthy() said so)"
    else:
        message = f"model {runner.name} is not ready (state: {runner.state})"
    return error_response(NotReady(message, headers={"Retry-After": "1"}))


def _state(models: Models, runner: Runner) -> str:
    """The registry's state of a model, or ``unhealthy`` for a loaded one that says so."""
    state = models.state(runner)
    return "unhealthy" if state == "ready" else state


def health_routes(models: Models) -> tuple[list[Route], list[Claim]]:
    """impasto's own health routes, and its claims on the shared ones (every kind of
    package whose protocol adapter does not claim them)."""

    async def root(request: Request) -> Response:
        return FastJSONResponse(True)

    async def live(request: Request) -> Response:
        return FastJSONResponse({"status": "alive"})

    async def ready(request: Request) -> Response:
        waiting = [r for r in models if not models.available(r) or await r.healthy() is False]
        if waiting:
            if len(models) == 1:
                return not_ready(waiting[0])
            listed = ", ".join(f"{r.name} ({_state(models, r)})" for r in waiting)
            return error_response(NotReady(f"not ready: {listed}", headers={"Retry-After": "1"}))
        if len(models) == 1:
            runner = models.default
            return FastJSONResponse(
                {"status": "ready", "model": runner.name, "state": models.state(runner)}
            )
        states = {r.name: models.state(r) for r in models}
        return FastJSONResponse({"status": "ready", "models": states})

    async def model_ready(request: Request) -> Response:
        runner = models.get(request.path_params["model_name"])
        return FastJSONResponse({}) if models.available(runner) else not_ready(runner)

    async def schema(request: Request) -> Response:
        runner = models.get(request.path_params["model_name"])
        if not runner.ready:
            return not_ready(runner)
        ep = runner.endpoint(None)
        if ep.input_model is None and ep.output_model is None:
            return error_response(NotFound("no schema found"))
        return FastJSONResponse(
            {
                "input_schema": schema_of(ep.input_model),
                "output_schema": schema_of(ep.output_model, mode="serialization"),
            }
        )

    routes = [
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]
    claims = [
        Claim("/", "GET", root),
        Claim("/v1/models/{model_name}", "GET", model_ready),
        Claim("/v1/models/{model_name}/loaded", "GET", model_ready),
        Claim("/v1/models/{model_name}/schema", "GET", schema),
    ]
    return routes, claims
