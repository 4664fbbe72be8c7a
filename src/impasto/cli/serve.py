"""``impasto serve PATH``: serve a package over HTTP with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

import typer
import uvicorn
from starlette.applications import Starlette

from ..package import load_package
from ..serving import build_app
from .folders import choose_service_class, install_requirements, package_path
from .output import configure_logging, err_console, handle_errors
from .signals import exit_zero_after_sigterm

PACKAGE_ENV = "IMPASTO_PACKAGE"


def reload_app() -> Starlette:
    """The factory uvicorn's ``--reload`` worker calls. That worker is a fresh process, so it
    configures logging itself, with the package's redactor, before building the app."""
    package = load_package(os.environ[PACKAGE_ENV])
    configure_logging(os.environ.get("IMPASTO_LOG_LEVEL", "info"), package.redactor)
    return build_app(package)


@handle_errors
def serve(
    path: Path | None = typer.Argument(
        None, help="The package folder (default: ., else SageMaker's /opt/ml/model)."
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
    log_level: str = typer.Option("info", envvar="IMPASTO_LOG_LEVEL"),
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
) -> None:
    """Serve a package; the model loads in the background while /health/ready answers 503."""
    if environment:
        os.environ["IMPASTO_ENVIRONMENT"] = environment
    if secrets_dir:
        os.environ["IMPASTO_SECRETS_DIR"] = str(secrets_dir)
    path = package_path(path)
    choose_service_class(service_class)
    if install:
        install_requirements(path)
    package = load_package(path)  # fail fast on a broken package, before binding the port
    configure_logging(log_level, package.redactor)
    if reload:
        os.environ[PACKAGE_ENV] = str(package.root)
        os.environ["IMPASTO_LOG_LEVEL"] = log_level
        uvicorn.run(
            "impasto.cli.serve:reload_app",
            factory=True,
            host=host,
            port=port,
            reload=True,
            reload_dirs=[str(package.root)],
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

    app = build_app(package, on_load_failed=on_load_failed)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=30,
        access_log=access_log,
    )
    server = uvicorn.Server(config)
    with exit_zero_after_sigterm():
        server.run()
    if failed["load"] and not stay_up:
        raise typer.Exit(6)
