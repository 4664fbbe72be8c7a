"""``impasto setup PATH``: load a package once, then exit.

The step a container build runs to bake weights into the image: a model's ``load()``, an
OctoAI-style service's ``setup()``, a SageMaker folder's ``model_fn`` (or the ``HF_MODEL_ID``
download into the model store) run exactly as ``impasto serve`` would run them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from ..config import load_config
from ..errors import NotReady
from ..formats import detect_format
from ..package import Package, load_package, package_scope
from ..serving import runner_for
from .folders import choose_service_class, install_requirements, package_path
from .output import configure_logging, console, handle_errors


async def load_once(package: Package) -> float:
    """Build and load the package's model once, then release it; the seconds it took."""
    runner = runner_for(package)
    try:
        loaded = await runner.load()
    finally:
        await runner.aclose()
    if not loaded:
        raise NotReady(f"load failed: {runner.load_error}")
    return runner.load_seconds or 0.0


@handle_errors
def setup(
    path: Path | None = typer.Argument(
        None, help="The package folder (default: ., else /opt/ml/model)."
    ),
    install: bool = typer.Option(
        False, "--install-requirements", help="pip install the package's requirements first."
    ),
    service_class: str | None = typer.Option(
        None, "--service-class", help="The Service class of an OctoAI-style service.py."
    ),
    environment: str | None = typer.Option(
        None, envvar="IMPASTO_ENVIRONMENT", help="Deployment environment name for the model."
    ),
    log_level: str = typer.Option("info", envvar="IMPASTO_LOG_LEVEL"),
    download_only: bool = typer.Option(
        False,
        "--download-only",
        help="Only download the weights the config declares (model_cache, hub ids); "
        "import no package code.",
    ),
) -> None:
    """Load a package once (load(), setup(), model_fn) and exit 0, or non-zero if it fails."""
    from ..store.prefetch import prefetch

    folder = package_path(path)
    if environment:
        os.environ["IMPASTO_ENVIRONMENT"] = environment
    choose_service_class(service_class)
    if install:
        install_requirements(folder)
    root = folder.resolve()
    fmt = detect_format(root)
    config = fmt.config(root) if fmt else load_config(root / "config.yaml")
    configure_logging(log_level)
    with package_scope(root, config):
        fetched = prefetch(root, config)
    if download_only:
        console.print(f"{root.name}: {len(fetched)} download(s) in place")
        return
    package = load_package(folder)
    configure_logging(log_level, package.redactor)
    seconds = asyncio.run(load_once(package))
    console.print(f"{package.name}: loaded in {seconds:.2f} s")
