"""Glue from package folders to a served app: load the packages, build runners and the app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette

from .metrics import Metrics
from .models_file import ServePlan, plan_for
from .package import Package, load_package
from .runner import Runner
from .secrets import Redactor
from .server import ServerSettings, create_app
from .server.auth import ApiKeys, api_key_values
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
    )


def build_app(
    package: Package | str | Path | Sequence[Package | str | Path] | ServePlan,
    *,
    on_load_failed: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI app serving one package (a folder or a loaded :class:`Package`), several
    (the first is the default model) or a :class:`ServePlan` (from models.yaml)."""
    if isinstance(package, ServePlan):
        plan = package
    else:
        items = list(package) if isinstance(package, list | tuple) else [package]
        plan = plan_for([p if isinstance(p, Package) else load_package(p) for p in items])
    packages = plan.packages
    metrics = Metrics()
    runners = [runner_for(pkg, metrics) for pkg in packages]
    auth = plan.auth_config
    default = next((p for p in packages if p.name == plan.default), packages[0])
    keys_dir = default.config.secrets_dir
    raw_keys = api_key_values(auth, keys_dir)
    api_keys = ApiKeys.of(raw_keys, auth.open_routes)
    redactors = [pkg.redactor for pkg in packages]
    if raw_keys:
        redactors.append(Redactor({f"api_key_{i}": k for i, k in enumerate(raw_keys)}))

    def redact(text: str) -> str:
        for redactor in redactors:
            text = redactor(text)
        return text

    settings = ServerSettings(
        on_load_failed=on_load_failed,
        redact=redact,
        api_keys=api_keys or None,
        results=plan.results,
    )
    models = Models(runners, plan.default, lazy=plan.lazy, max_loaded=plan.max_loaded)
    app = create_app(models, settings)
    app.state.package = default
    app.state.packages = packages
    return app
