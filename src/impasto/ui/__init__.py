"""The playground: a Gradio page generated from the endpoint descriptions, at ``/ui``.

``pip install 'impasto[ui]'`` adds it. :func:`mount_ui` mounts it in a server's own app
(predictions run in-process through the server's call path); :func:`remote_app` serves the
same page in front of a remote impasto server (``impasto ui --url``). Gradio is imported
only here, only when the page is built, so a server without it starts as fast as before.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from typing import Any

from ..errors import ConfigError

UI_PATH = "/ui"
INSTALL_HINT = "the playground needs Gradio: pip install 'impasto[ui]'"


def available() -> bool:
    """Whether the ``ui`` extra (Gradio) is installed."""
    return importlib.util.find_spec("gradio") is not None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def ui_enabled(flag: bool | None, configured: bool | None, host: str) -> bool:
    """Whether to serve the playground: ``--ui/--no-ui``, else ``ui:`` in config.yaml, else
    on when Gradio is installed and the server binds to loopback only (a server listening on
    every interface shows no page unless asked)."""
    wanted = flag if flag is not None else configured
    if wanted is None:
        return available() and is_loopback(host)
    if wanted and not available():
        source = "--ui" if flag is not None else "ui: in config.yaml"
        raise ConfigError(f"{source}: {INSTALL_HINT}", field="ui")
    return wanted


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_RUN_HISTORY", "False")
    try:
        import gradio
    except ImportError:
        raise ConfigError(INSTALL_HINT, field="ui") from None
    return gradio


def mount_page(app: Any, page: Any, path: str = UI_PATH) -> None:
    """Mount a built :class:`~impasto.ui.page.Page` on a Starlette app at ``path``; a browser
    opening ``/`` is sent there."""
    from .home import BrowserHome
    from .page import CSS

    gr = _gradio()
    blocks = page.build()
    gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        show_error=True,
        theme=gr.themes.Default(),
        css=CSS,
    )
    app.add_middleware(BrowserHome, path=path + "/")
    app.state.ui = page


def mount_ui(app: Any, models: Any, *, auth: Any = None, path: str = UI_PATH) -> None:
    """The playground for ``models`` (a :class:`~impasto.server.registry.Models`), running
    predictions in-process; ``auth`` is the server's API keys (``accepts(key)``), if any."""
    _gradio()
    from .backends import LocalBackend
    from .page import Page

    backend = LocalBackend(models, auth)
    title = f"{models.default.name} · impasto playground"
    mount_page(app, Page(backend, title=title, docs="/docs"), path)


def remote_app(url: str, *, api_key: str | None = None, path: str = UI_PATH) -> Any:
    """A small app serving the playground in front of the impasto server at ``url``."""
    import contextlib

    from starlette.applications import Starlette

    from .backends import RemoteBackend
    from .page import Page

    _gradio()
    backend = RemoteBackend(url, api_key=api_key)
    backend.connect_sync()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        try:
            yield
        finally:
            await backend.aclose()

    app = Starlette(lifespan=lifespan)
    names = ", ".join(m.name for m in backend.views())
    page = Page(backend, title=f"{names} · impasto playground", docs=backend.url + "/docs")
    mount_page(app, page, path)
    return app


__all__ = ["UI_PATH", "available", "mount_page", "mount_ui", "remote_app", "ui_enabled"]
