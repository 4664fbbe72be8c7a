"""Glue from a package folder to a served app: load the package, build runner and app."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette

from .metrics import Metrics
from .package import Package, load_package
from .runner import Runner
from .server import ServerSettings, create_app


def build_app(
    package: Package | str | Path,
    *,
    on_load_failed: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI app serving ``package`` (a folder or an already loaded :class:`Package`)."""
    pkg = package if isinstance(package, Package) else load_package(package)
    runner = Runner(pkg.spec, pkg.factory(), pkg.config, metrics=Metrics(), redact=pkg.redactor)
    settings = ServerSettings(model_name=pkg.name, on_load_failed=on_load_failed)
    app = create_app(runner, settings)
    app.state.package = pkg
    return app
