"""Glue from package folders to a served app: load the packages, build runners and the app."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from .errors import ConfigError
from .metrics import Metrics
from .models_file import ServePlan, plan_for
from .package import Package, load_package
from .runner import Runner
from .server import ServerSettings, create_app
from .server.auth import ApiKeys
from .server.registry import Models

log = logging.getLogger("impasto.serve")


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


def jobs_service(plan: ServePlan) -> Callable[[Any], Any] | None:
    """The factory of the server's jobs service, or None: off (``jobs.enabled: false``), or
    the ``jobs`` extra is not installed (an error when a job store is configured)."""
    config = plan.jobs_config
    if not config.enabled:
        return None
    try:
        from .jobs.service import Jobs
    except ImportError as exc:
        if config.url or os.environ.get("IMPASTO_JOBS_URL"):
            raise ConfigError(
                f"jobs.url is set but the job store cannot be loaded ({exc}); "
                "pip install 'impasto[jobs]'",
                field="jobs.url",
            ) from None
        log.info("async jobs are off: pip install 'impasto[jobs]' to serve them")
        return None
    secrets_dir = plan.default_package.config.secrets_dir
    return lambda callpath: Jobs(callpath, config, plan.sagemaker_config, secrets_dir=secrets_dir)


def build_app(
    package: Package | str | Path | Sequence[Package | str | Path] | ServePlan,
    *,
    on_load_failed: Callable[[], None] | None = None,
    on_ready: Callable[[Starlette], None] | None = None,
    ui: bool = False,
    runner: Callable[[Package, Metrics], Runner] = runner_for,
) -> Starlette:
    """The ASGI app serving one package (a folder or a loaded :class:`Package`), several
    (the first is the default model) or a :class:`ServePlan` (from models.yaml); ``ui``
    mounts the playground at ``/ui``. ``runner`` makes each model's runner (an in-process
    one; on Ray Serve, one whose ``run`` step happens on a model replica)."""
    if isinstance(package, ServePlan):
        plan = package
    else:
        items = list(package) if isinstance(package, list | tuple) else [package]
        plan = plan_for([p if isinstance(p, Package) else load_package(p) for p in items])
    packages = plan.packages
    metrics = Metrics()
    runners = [runner(pkg, metrics) for pkg in packages]
    raw_keys = plan.api_keys()
    settings = ServerSettings(
        on_load_failed=on_load_failed,
        on_ready=on_ready,
        redact=plan.redactor(),
        ui=ui,
        api_keys=ApiKeys.of(raw_keys, plan.auth_config.open_routes) if raw_keys else None,
        results=plan.results,
        jobs=jobs_service(plan),
    )
    models = Models(runners, plan.default, lazy=plan.lazy, max_loaded=plan.max_loaded)
    app = create_app(models, settings)
    app.state.package = plan.default_package
    app.state.packages = packages
    return app
