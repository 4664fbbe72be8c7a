"""``impasto serve PATH``: serve a package over HTTP with uvicorn.

Shutdown is impasto's, not uvicorn's: on SIGTERM or Ctrl-C the server stops admitting work
at once (readiness and new requests answer 503 with ``Retry-After``) but keeps its port so
probes see that, lets in-flight predictions finish within ``runtime.shutdown_grace_s``,
cancels the rest at their next step (their clients get 503 ``shutting_down``), then exits
0. A second signal exits at once, with code 130.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import typer
import uvicorn
from starlette.applications import Starlette

from ..errors import AddressInUse, ImpastoError
from ..package import load_package
from ..serving import build_app
from .output import LogLevel, configure_logging, err_console, handle_errors

PACKAGE_ENV = "IMPASTO_PACKAGE"
log = logging.getLogger("impasto.serve")


def reload_app() -> Starlette:
    """The factory uvicorn's ``--reload`` worker calls. That worker is a fresh process, so it
    configures logging itself, with the package's redactor, before building the app. A
    package that does not load (a syntax error being fixed) is served as a 503 naming the
    error until the next change reloads it."""
    configure_logging(os.environ.get("IMPASTO_LOG_LEVEL", "info"))
    try:
        package = load_package(os.environ[PACKAGE_ENV])
    except ImpastoError as exc:
        log.error("%s; fix it and save: the server reloads", exc.message)
        return broken_app(exc)
    configure_logging(os.environ.get("IMPASTO_LOG_LEVEL", "info"), package.redactor)
    return build_app(package)


def broken_app(exc: ImpastoError) -> Starlette:
    """Every request answers 503 with the load error (file and line), at once."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    body = {"error": {"type": "not_ready", "message": exc.message, "field": None}}

    async def unavailable(request: Request) -> JSONResponse:
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", unavailable, methods=methods)])


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything loads: a taken port is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"port {port} is in use; pass --port") from None
        raise AddressInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn's server with impasto's graceful shutdown (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self.draining = False
        self.drained_with: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining:  # a second signal: go now, without tracebacks of torn-down tasks
            log.warning("second signal: exiting now")
            _flush()
            os._exit(130)
        self.draining = True
        if self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))

    async def _drain(self) -> None:
        models = list(self.app.state.models)
        for runner in models:
            runner.stop_admitting()
        grace = max(r.config.runtime.shutdown_grace_s for r in models)
        busy = sum(r.stats()["in_flight"] for r in models)
        if busy:
            log.info("shutting down: waiting up to %s s for %d request(s) in flight", grace, busy)
        aborted = sum(await asyncio.gather(*(r.drain(grace) for r in models)))
        if aborted:
            log.warning("canceled %d request(s) still running after %s s", aborted, grace)
            # their tasks were canceled: give them a moment to answer 503 before closing
            waits = [r.wait_idle() for r in models]
            await asyncio.wait_for(asyncio.gather(*waits), 5) if waits else None
        self.drained_with = aborted
        self.should_exit = True


def _ready_line(app: Starlette, url: str, started: float) -> None:
    """One line once every model is loaded: where, what, and how long it took."""
    models = list(app.state.models)
    routes = []
    for runner in models:
        for ep in runner.spec.endpoints.values():
            routes.append(ep.route if runner is app.state.models.default else ep.name)
    shown = ", ".join(dict.fromkeys(routes))
    names = ", ".join(r.name for r in models)
    log.info(
        "%s ready in %.1f s at %s (POST %s; docs at %s/docs)",
        names,
        time.monotonic() - started,
        url,
        shown,
        url,
    )


@handle_errors
def serve(
    path: Path = typer.Argument(Path("."), help="The package folder."),
    host: str = typer.Option("127.0.0.1", envvar="IMPASTO_HOST", help="Interface to bind."),
    port: int = typer.Option(8080, envvar="IMPASTO_PORT", help="Port to listen on."),
    reload: bool = typer.Option(False, "--reload", help="Restart when package files change."),
    stay_up: bool = typer.Option(
        False, "--stay-up", help="Keep serving (readiness 503) if load() fails."
    ),
    environment: str | None = typer.Option(
        None, envvar="IMPASTO_ENVIRONMENT", help="Deployment environment name for the model."
    ),
    secrets_dir: Path | None = typer.Option(
        None, envvar="IMPASTO_SECRETS_DIR", help="Folder of secret files (default /secrets)."
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.info,
        envvar="IMPASTO_LOG_LEVEL",
        case_sensitive=False,
        help="How much to log.",
    ),
    access_log: bool = typer.Option(
        True,
        "--access-log/--no-access-log",
        envvar="IMPASTO_ACCESS_LOG",
        help="Log every request (health probes and /metrics excepted).",
    ),
) -> None:
    """Serve a package; the model loads in the background while /health/ready answers 503.

    Example: impasto serve examples/tiny-sd --port 8080
    """
    started = time.monotonic()
    configure_logging(log_level)
    if environment:
        os.environ["IMPASTO_ENVIRONMENT"] = environment
    if secrets_dir:
        os.environ["IMPASTO_SECRETS_DIR"] = str(secrets_dir)
    if reload:
        _serve_reload(path, host, port, log_level)
        return
    sock = bind(host, port)  # a taken port fails here, before any model code runs
    package = load_package(path)  # fail fast on a broken package, before loading weights
    configure_logging(log_level, package.redactor)
    failed = {"load": False}
    server: DrainingServer | None = None
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    def on_load_failed() -> None:
        failed["load"] = True
        if not stay_up and server is not None:
            err_console.print(
                "[red]error:[/red] load() failed; stopping (use --stay-up to keep serving)"
            )
            server.should_exit = True

    app = build_app(
        package, on_load_failed=on_load_failed, on_ready=lambda a: _ready_line(a, url, started)
    )
    config = uvicorn.Config(
        app,
        log_config=None,
        timeout_graceful_shutdown=5,
        access_log=access_log,
    )
    server = DrainingServer(config, app)
    server.run(sockets=[sock])
    if failed["load"] and not stay_up:
        raise typer.Exit(6)
    _exit_now_if_threads_linger()


def _serve_reload(path: Path, host: str, port: int, log_level: str) -> None:
    root = Path(path).resolve()
    bind(host, port).close()  # a taken port is one line here too
    os.environ[PACKAGE_ENV] = str(root)
    os.environ["IMPASTO_LOG_LEVEL"] = str(getattr(log_level, "value", log_level))
    uvicorn.run(
        "impasto.cli.serve:reload_app",
        factory=True,
        host=host,
        port=port,
        reload=True,
        reload_dirs=[str(root)],
        reload_includes=["*.py", "*.yaml", "*.yml"],
        log_config=None,
    )


def _exit_now_if_threads_linger() -> None:
    """After a clean shutdown, a model thread still inside a long step (or a load) would
    hold the process until it returns: flush and leave without waiting for it."""
    lingering = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    if lingering:
        _flush()
        os._exit(0)


def _flush() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
