"""Glue from package folders to a served app: load the packages, build runners and the app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette

from .metrics import Metrics
from .package import Package, load_package
from .runner import Runner
from .server import ServerSettings, create_app
from .server.registry import Models


def runner_for(package: Package, metrics: Metrics | None = None) -> Runner:
    """A runner for a loaded package (its model is built and loaded when the server starts)."""
    return Runner(
        package.spec,
        package.factory(),
        package.config,
        name=package.name,
        kind=package.kind,
        metrics=metrics,
        redact=package.redactor,
        scope=package.scope,
        before_load=package.before_load,
    )


def build_app(
    package: Package | str | Path | Sequence[Package | str | Path],
    *,
    on_load_failed: Callable[[], None] | None = None,
    on_ready: Callable[[Starlette], None] | None = None,
    ui: bool = False,
) -> Starlette:
    """The ASGI app serving one package (a folder or a loaded :class:`Package`) or several
    (the first is the default model); ``ui`` mounts the playground at ``/ui``."""
    items = list(package) if isinstance(package, list | tuple) else [package]
    packages = [p if isinstance(p, Package) else load_package(p) for p in items]
    metrics = Metrics()
    runners = [runner_for(pkg, metrics) for pkg in packages]
    redactors = [pkg.redactor for pkg in packages]

    def redact(text: str) -> str:
        for redactor in redactors:
            text = redactor(text)
        return text

    settings = ServerSettings(
        on_load_failed=on_load_failed, on_ready=on_ready, redact=redact, ui=ui
    )
    app = create_app(Models(runners), settings)
    app.state.package = packages[0]
    app.state.packages = packages
    return app
