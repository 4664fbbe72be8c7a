"""``impasto serve PATH...`` / ``impasto serve --models models.yaml``: serve packages over
HTTP with uvicorn, several behind one port when asked.

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
from ..models_file import ServePlan, load_models_file, model_paths, plan_for
from ..package import load_package
from ..serving import build_app
from .folders import choose_service_class, install_requirements, package_path
from .output import LogLevel, configure_logging, err_console, handle_errors

PACKAGE_ENV = "IMPASTO_PACKAGE"  # the package folders, os.pathsep-separated
MODELS_ENV = "IMPASTO_MODELS_FILE"
UI_ENV = "IMPASTO_UI"  # tells a --reload worker whether to mount the playground
log = logging.getLogger("impasto.serve")


def _plan(paths: list[Path], models_file: Path | None) -> ServePlan:
    """What to serve: the models.yaml, else the package folders (the first is the default)."""
    if models_file is not None:
        return load_models_file(models_file)
    return plan_for([load_package(path) for path in paths])


def reload_app() -> Starlette:
    """The factory uvicorn's ``--reload`` worker calls. That worker is a fresh process, so it
    configures logging itself, with the packages' redactor, before building the app. A
    package that does not load (a syntax error being fixed) is served as a 503 naming the
    error until the next change reloads it."""
    configure_logging(os.environ.get("IMPASTO_LOG_LEVEL", "info"))
    models_file = os.environ.get(MODELS_ENV)
    paths = [Path(p) for p in os.environ.get(PACKAGE_ENV, "").split(os.pathsep) if p]
    try:
        plan = _plan(paths, Path(models_file) if models_file else None)
    except ImpastoError as exc:
        log.error("%s; fix it and save: the server reloads", exc.message)
        return broken_app(exc)
    configure_logging(os.environ.get("IMPASTO_LOG_LEVEL", "info"), plan.redactor())
    return build_app(plan, ui=os.environ.get(UI_ENV) == "1")


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
    playground = f"; playground at {url}/ui" if getattr(app.state, "ui", None) else ""
    log.info(
        "%s ready in %.1f s at %s (POST %s; docs at %s/docs%s)",
        names,
        time.monotonic() - started,
        url,
        shown,
        url,
        playground,
    )


@handle_errors
def serve(
    paths: list[Path] | None = typer.Argument(
        None,
        help="Package folders (default: ., else SageMaker's /opt/ml/model); the first is the "
        "default model.",
    ),
    models_file: Path | None = typer.Option(
        None,
        "--models",
        envvar=MODELS_ENV,
        help="A models.yaml: names, paths, per-model overrides, default, lazy, max_loaded.",
    ),
    host: str = typer.Option("127.0.0.1", envvar="IMPASTO_HOST", help="Interface to bind."),
    port: int = typer.Option(
        8080, envvar=["IMPASTO_PORT", "SAGEMAKER_BIND_TO_PORT"], help="Port to listen on."
    ),
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
    install: bool = typer.Option(
        False, "--install-requirements", help="pip install the package's requirements first."
    ),
    service_class: str | None = typer.Option(
        None, "--service-class", help="The Service class of an OctoAI-style service.py."
    ),
    access_log: bool = typer.Option(
        True,
        "--access-log/--no-access-log",
        envvar="IMPASTO_ACCESS_LOG",
        help="Log every request (health probes and /metrics excepted).",
    ),
    ui: bool | None = typer.Option(
        None,
        "--ui/--no-ui",
        envvar="IMPASTO_UI",
        help="Serve the playground at /ui (default: with impasto[ui] installed, on loopback).",
    ),
    on_ray: bool = typer.Option(
        False, "--ray", help="Serve on a local Ray instance, as `impasto deploy ray` does."
    ),
) -> None:
    """Serve packages; models load in the background while /health/ready answers 503.

    Example: impasto serve examples/tiny-sd --port 8080
    """
    started = time.monotonic()
    configure_logging(log_level)
    if environment:
        os.environ["IMPASTO_ENVIRONMENT"] = environment
    if secrets_dir:
        os.environ["IMPASTO_SECRETS_DIR"] = str(secrets_dir)
    if models_file is not None and paths:
        raise typer.BadParameter("give package folders or --models, not both")
    folders = [package_path(p) for p in paths or ([] if models_file else [None])]
    choose_service_class(service_class)
    if install:
        for folder in folders or model_paths(models_file):
            install_requirements(folder)
    if on_ray:
        from .deploy import serve_on_ray

        serve_on_ray(folders, host, port)
        return
    if reload:
        from ..config import load_config
        from ..ui import ui_enabled

        first = folders[0] if folders else model_paths(models_file)[0]
        configured = load_config(Path(first) / "config.yaml").ui.enabled
        os.environ[UI_ENV] = "1" if ui_enabled(ui, configured, host) else "0"
        _serve_reload(folders, models_file, host, port, log_level)
        return
    sock = bind(host, port)  # a taken port fails here, before any model code runs
    plan = _plan(folders, models_file)  # fail fast on a broken package, before loading weights
    from ..ui import ui_enabled  # light: Gradio itself is imported only when the UI is on

    with_ui = ui_enabled(ui, plan.default_package.config.ui.enabled, host)
    configure_logging(log_level, plan.redactor())
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
        plan,
        on_load_failed=on_load_failed,
        on_ready=lambda a: _ready_line(a, url, started),
        ui=with_ui,
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


def _serve_reload(
    paths: list[Path], models_file: Path | None, host: str, port: int, log_level: str
) -> None:
    roots = [Path(p).resolve() for p in paths or model_paths(models_file)]
    bind(host, port).close()  # a taken port is one line here too
    os.environ[PACKAGE_ENV] = os.pathsep.join(str(root) for root in roots)
    if models_file is not None:
        os.environ[MODELS_ENV] = str(Path(models_file).resolve())
    os.environ["IMPASTO_LOG_LEVEL"] = str(getattr(log_level, "value", log_level))
    uvicorn.run(
        "impasto.cli.serve:reload_app",
        factory=True,
        host=host,
        port=port,
        reload=True,
        reload_dirs=[str(root) for root in roots],
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
