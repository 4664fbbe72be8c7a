"""``impasto serve PATH...`` / ``impasto serve --models models.yaml``: serve packages over
HTTP with uvicorn, several behind one port when asked."""

from __future__ import annotations

import os
from pathlib import Path

import typer
import uvicorn
from starlette.applications import Starlette

from ..models_file import ServePlan, load_models_file, plan_for
from ..package import load_package
from ..serving import build_app
from .output import configure_logging, err_console, handle_errors

PACKAGE_ENV = "IMPASTO_PACKAGE"  # the package folders, os.pathsep-separated
MODELS_ENV = "IMPASTO_MODELS_FILE"


def _plan(paths: list[Path], models_file: Path | None) -> ServePlan:
    if models_file is not None:
        if paths:
            raise typer.BadParameter("give package folders or --models, not both")
        return load_models_file(models_file)
    return plan_for([load_package(path) for path in paths or [Path(".")]])


def reload_app() -> Starlette:
    """The factory uvicorn's ``--reload`` worker calls. That worker is a fresh process, so it
    configures logging itself, with the packages' redactor, before building the app."""
    models_file = os.environ.get(MODELS_ENV)
    paths = [Path(p) for p in os.environ.get(PACKAGE_ENV, "").split(os.pathsep) if p]
    plan = _plan(paths, Path(models_file) if models_file else None)
    configure_logging(os.environ.get("IMPASTO_LOG_LEVEL", "info"), plan.redactor())
    return build_app(plan)


@handle_errors
def serve(
    paths: list[Path] = typer.Argument(
        None, help="Package folders (default: the current one); the first is the default model."
    ),
    models_file: Path | None = typer.Option(
        None,
        "--models",
        envvar=MODELS_ENV,
        help="A models.yaml: names, paths, per-model overrides, default, lazy, max_loaded.",
    ),
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
    log_level: str = typer.Option("info", envvar="IMPASTO_LOG_LEVEL"),
    access_log: bool = typer.Option(
        True,
        "--access-log/--no-access-log",
        envvar="IMPASTO_ACCESS_LOG",
        help="Log every request (health probes and /metrics excepted).",
    ),
) -> None:
    """Serve packages; models load in the background while /health/ready answers 503."""
    if environment:
        os.environ["IMPASTO_ENVIRONMENT"] = environment
    if secrets_dir:
        os.environ["IMPASTO_SECRETS_DIR"] = str(secrets_dir)
    plan = _plan(paths or [], models_file)  # fail fast on a broken package, before binding
    configure_logging(log_level, plan.redactor())
    if reload:
        os.environ[PACKAGE_ENV] = os.pathsep.join(str(p.root) for p in plan.packages)
        if models_file is not None:
            os.environ[MODELS_ENV] = str(models_file.resolve())
        os.environ["IMPASTO_LOG_LEVEL"] = log_level
        uvicorn.run(
            "impasto.cli.serve:reload_app",
            factory=True,
            host=host,
            port=port,
            reload=True,
            reload_dirs=[str(p.root) for p in plan.packages],
            reload_includes=["*.py", "*.yaml", "*.yml"],
            log_config=None,
        )
        return
    failed = {"load": False}
    server: uvicorn.Server | None = None

    def on_load_failed() -> None:
        failed["load"] = True
        if not stay_up and server is not None:
            err_console.print(
                "[red]error:[/red] load() failed; stopping (use --stay-up to keep serving)"
            )
            server.should_exit = True

    app = build_app(plan, on_load_failed=on_load_failed)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=30,
        access_log=access_log,
    )
    server = uvicorn.Server(config)
    server.run()
    if failed["load"] and not stay_up:
        raise typer.Exit(6)
