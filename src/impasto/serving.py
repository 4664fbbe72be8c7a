"""Glue from package folders to a served app: load the packages, build runners and the app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette

from .metrics import Metrics
from .models_file import ServePlan, plan_for
from .package import Package, load_package
from .runner import Runner
from .server import ServerSettings, create_app
from .server.auth import ApiKeys
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
    package: Package | str | Path | Sequence[Package | str | Path] | ServePlan,
    *,
    on_load_failed: Callable[[], None] | None = None,
    on_ready: Callable[[Starlette], None] | None = None,
    ui: bool = False,
) -> Starlette:
    """The ASGI app serving one package (a folder or a loaded :class:`Package`), several
    (the first is the default model) or a :class:`ServePlan` (from models.yaml); ``ui``
    mounts the playground at ``/ui``."""
    if isinstance(package, ServePlan):
        plan = package
    else:
        items = list(package) if isinstance(package, list | tuple) else [package]
        plan = plan_for([p if isinstance(p, Package) else load_package(p) for p in items])
    packages = plan.packages
    metrics = Metrics()
    runners = [runner_for(pkg, metrics) for pkg in packages]
    raw_keys = plan.api_keys()
    settings = ServerSettings(
        on_load_failed=on_load_failed,
        on_ready=on_ready,
        redact=plan.redactor(),
        ui=ui,
        api_keys=ApiKeys.of(raw_keys, plan.auth_config.open_routes) if raw_keys else None,
        results=plan.results,
    )
    models = Models(runners, plan.default, lazy=plan.lazy, max_loaded=plan.max_loaded)
    app = create_app(models, settings)
    app.state.package = plan.default_package
    app.state.packages = packages
    return app
