"""The one boundary where exceptions become HTTP error responses."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ImpastoError

log = logging.getLogger("impasto.server")

_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(exc: ImpastoError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers)


async def impasto_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImpastoError)
    if exc.status >= 500:
        log.warning("request %s: %s %s", _rid(request), exc.type, exc.message)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail or "error"
    if exc.status_code == 404:
        message = (
            f"no route for {request.method} {request.url.path}; "
            f"this server answers: {', '.join(_routes(request))}"
        )
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.url.path} does not take {request.method}; it takes {allowed}"
    body = {
        "error": {
            "type": _HTTP_TYPES.get(exc.status_code, "http_error"),
            "message": message,
            "field": None,
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _routes(request: Request) -> list[str]:
    """``METHOD /path`` of every route of the app (HEAD left out: GET implies it)."""
    found = []
    for route in getattr(request.app, "routes", []):
        methods = sorted(m for m in getattr(route, "methods", None) or () if m != "HEAD")
        path = getattr(route, "path", None)
        if path and methods:
            found.append(f"{'|'.join(methods)} {path}")
    return found


async def unhandled_error(request: Request, exc: Exception) -> Response:
    log.exception("request %s: unhandled server error", _rid(request))
    return error_response(ImpastoError("internal server error"))


def _rid(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))
