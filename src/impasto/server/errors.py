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
    body = {
        "error": {
            "type": _HTTP_TYPES.get(exc.status_code, "http_error"),
            "message": exc.detail or "error",
            "field": None,
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def unhandled_error(request: Request, exc: Exception) -> Response:
    log.exception("request %s: unhandled server error", _rid(request))
    return error_response(ImpastoError("internal server error"))


def _rid(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))
