"""A browser opening ``/`` goes to the playground; every other client gets the answer of
the model's dialect there (impasto's ``true``, Truss's, ...), unchanged."""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def wants_html(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"accept":
            return b"text/html" in value
    return False


class BrowserHome:
    """Pure ASGI: ``GET /`` with ``Accept: text/html`` is redirected to ``path``."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/"
            and scope["method"] in ("GET", "HEAD")
            and wants_html(scope)
        ):
            root = scope.get("root_path", "")
            await RedirectResponse(root + self.path, status_code=307)(scope, receive, send)
            return
        await self.app(scope, receive, send)
