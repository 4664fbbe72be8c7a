"""API keys on every protocol, as one pure-ASGI piece in front of all routes.

Keys come from the secret ``api_keys`` (the secrets folder, or ``IMPASTO_SECRET_API_KEYS``)
or ``IMPASTO_API_KEYS``, comma-separated so that a new key can be added before the old one
is removed. A client sends one as ``Authorization: Bearer <key>``, ``Authorization: Api-Key
<key>`` (what Baseten clients send) or ``X-API-Key: <key>``. Every key is compared in
constant time (digests of equal length, all of them, no early exit). Health, readiness and
metrics routes stay open (``auth.open_routes``) so probes keep working. A missing or wrong
key is a 401 in the shape of the protocol the path belongs to; keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import OPEN_ROUTES, AuthConfig
from ..secrets import resolve_secrets

log = logging.getLogger("impasto.server")

KEYS_ENV = "IMPASTO_API_KEYS"

# (scope, message) -> the 401 response in the shape of the protocol that owns the path
Unauthorized = Callable[[Scope, str], Response]


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys (as digests) and the routes open without one."""

    digests: tuple[bytes, ...]
    open_routes: tuple[str, ...] = OPEN_ROUTES

    @classmethod
    def of(cls, keys: Iterable[str], open_routes: Sequence[str] = OPEN_ROUTES) -> ApiKeys:
        digests = tuple(_digest(k) for k in (key.strip() for key in keys) if k)
        return cls(digests, tuple(open_routes))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def accepts(self, key: str | None) -> bool:
        if not key:
            return False
        given = _digest(key)
        ok = False
        for digest in self.digests:  # every key compared: the time says nothing of which
            ok |= hmac.compare_digest(given, digest)
        return ok


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def api_key_values(
    config: AuthConfig | None = None, secrets_dir: str | Path | None = None
) -> list[str]:
    """The server's keys: the secret ``auth.secret`` (``api_keys``: a file in the secrets
    folder, or ``IMPASTO_SECRET_API_KEYS``), else ``IMPASTO_API_KEYS``; none: auth is off."""
    config = config or AuthConfig()
    secret = resolve_secrets({config.secret: None}, secrets_dir).get(config.secret)
    raw = secret if secret is not None else os.environ.get(KEYS_ENV, "")
    return [key.strip() for key in raw.split(",") if key.strip()]


def resolve_api_keys(
    config: AuthConfig | None = None, secrets_dir: str | Path | None = None
) -> ApiKeys:
    """:func:`api_key_values` as the digests the middleware compares against."""
    config = config or AuthConfig()
    return ApiKeys.of(api_key_values(config, secrets_dir), config.open_routes)


def _pattern(route: str) -> re.Pattern[str]:
    parts = (re.escape(p) if p != "*" else "[^/]+" for p in route.split("/"))
    return re.compile("/".join(parts) + r"\Z")


class ApiKeyMiddleware:
    """Refuse requests without a valid key, except GET/HEAD on the open routes."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeys,
        unauthorized: Unauthorized,
        checks_its_own: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.unauthorized = unauthorized
        self.open = [_pattern(route) for route in keys.open_routes]
        # path prefixes whose app asks for the key itself (the playground's page)
        self.own = tuple(checks_its_own)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or _under(scope["path"], self.own):
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD") and any(p.match(scope["path"]) for p in self.open):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        if self.keys.accepts(key):
            await self.app(scope, receive, send)
            return
        message = "invalid API key" if key else "missing API key"
        request_id = scope.get("state", {}).get("request_id", "-")
        log.info("request %s: %s for %s %s", request_id, message, scope["method"], scope["path"])
        hint = (
            "; send it as `Authorization: Bearer <key>`, `Authorization: Api-Key <key>` "
            "or `X-API-Key: <key>`"
        )
        response = self.unauthorized(scope, message + hint)
        response.headers.setdefault("WWW-Authenticate", "Bearer")
        await response(scope, receive, send)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def presented_key(scope: Scope) -> str | None:
    """The key a request carries, in any of the accepted headers."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in ("bearer", "api-key") and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None
