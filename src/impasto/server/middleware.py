"""Pure ASGI middleware: request ids on every response."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIds:
    """Unique request ids, cheaply: a random per-process prefix and a counter (ids are
    for correlation, not secrets; job ids that must not be guessed are made elsewhere)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"  # 32 hex digits, as a uuid4 hex


class RequestIdMiddleware:
    """Echo the client's ``X-Request-ID`` (or make one) on every response, errors included,
    and expose it to routes as ``scope["state"]["request_id"]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.new_id = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = b""
        for key, value in scope.get("headers") or ():
            if key == b"x-request-id":
                raw = value
                break
        if not (raw and _VALID_ID.match(raw)):
            raw = self.new_id().encode("latin-1")
        scope.setdefault("state", {})["request_id"] = raw.decode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", raw))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
