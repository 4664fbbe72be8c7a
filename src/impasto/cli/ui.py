"""``impasto ui --url URL``: the playground in front of a remote impasto server.

The page is the one ``impasto serve`` mounts at ``/ui``, built from the remote server's
``/openapi.json``; predictions go over impasto's HTTP API (progress as server-sent events,
cancel by closing the stream), the way a hosted page in front of a GPU box works.
"""

from __future__ import annotations

import logging

import typer
import uvicorn

from .output import LogLevel, configure_logging, handle_errors
from .serve import bind

log = logging.getLogger("impasto.ui")


@handle_errors
def ui(
    url: str = typer.Option(..., "--url", help="The impasto server, e.g. http://gpu-box:8080."),
    host: str = typer.Option("127.0.0.1", envvar="IMPASTO_UI_HOST", help="Interface to bind."),
    port: int = typer.Option(7860, envvar="IMPASTO_UI_PORT", help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, envvar="IMPASTO_API_KEY", help="API key for the server (else the page asks)."
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.info, envvar="IMPASTO_LOG_LEVEL", case_sensitive=False, help="How much to log."
    ),
) -> None:
    """Serve the playground for a remote impasto server.

    Example: impasto ui --url http://127.0.0.1:8080 --port 7860
    """
    configure_logging(log_level)
    sock = bind(host, port)
    from ..ui import remote_app

    app = remote_app(url, api_key=api_key)
    shown = host if ":" not in host else f"[{host}]"
    log.info("playground for %s at http://%s:%d/ui", url, shown, port)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    server.run(sockets=[sock])
