"""Build, deploy, inspect and delete impasto's Ray Serve application.

::

    ingress (ASGI: every protocol, playground, metrics, jobs)  ── DeploymentHandle ──>
        model-<name> (one deployment per package; each replica loads it once)

Which layer queues: the model replica's runner. Ray sends a replica at most
``max_ongoing_requests`` requests, by default what that runner holds (what its slots and
batches run at once plus ``runtime.max_queue``), so requests wait in the runner (where
they batch) and the runner never refuses what Ray sent it. When every replica is full,
Ray's router holds at most ``max_queued_requests`` more (default ``runtime.max_queue``, at
least 1: Ray cannot hold none) and refuses the rest, which the ingress answers as impasto's
429 with ``Retry-After``.
Autoscaling reads
each replica's requests in flight (running and queued in its runner, batched ones
included) against ``target_ongoing_requests``, by default what the slots run at once: a
queue anywhere means more replicas.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Unreachable
from ..package import Package, load_package
from .config import AutoscalingConfig, RayConfig
from .secrets import Sealed

log = logging.getLogger("impasto.ray")

INGRESS = "ingress"


@dataclass(frozen=True)
class DeployOptions:
    """The command line's overrides of each package's ``ray:`` section."""

    replicas: int | None = None
    autoscale: tuple[int, int] | None = None
    gpus_per_replica: float | None = None
    max_ongoing_requests: int | None = None


def parse_autoscale(text: str) -> tuple[int, int]:
    """``MIN:MAX`` (``1:4``) as two numbers, with a clear error naming the flag."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text or "")
    if not match:
        raise ConfigError(f"--autoscale takes MIN:MAX, e.g. 1:4; got {text!r}", field="autoscale")
    low, high = int(match[1]), int(match[2])
    if high < 1 or low > high:
        raise ConfigError(
            f"--autoscale {text}: MAX must be at least 1 and at least MIN", field="autoscale"
        )
    return low, high


def deployment_name(package: Package) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "-", package.name)


def slots_capacity(package: Package) -> tuple[int, int]:
    """What one replica's runner runs at once (slots, times the batch size when an endpoint
    batches) and the most it holds (that plus ``runtime.max_queue``): Runner.capacity."""
    config = package.config
    batched = config.batching.enabled and any(
        ep.batch_call for ep in package.spec.endpoints.values()
    )
    per_slot = config.batching.max_batch_size if batched else 1
    running = config.runtime.predict_concurrency * per_slot
    return running, running + config.runtime.max_queue


def model_options(package: Package, opts: DeployOptions) -> dict[str, Any]:
    """The model deployment's Ray Serve options: the package's ``ray:`` section, the
    command line's flags over it, and defaults that keep the runner the one queue."""
    cfg: RayConfig = package.config.ray
    running, capacity = slots_capacity(package)
    actor = cfg.actor_options()
    if opts.gpus_per_replica is not None:
        actor["num_gpus"] = opts.gpus_per_replica
    options: dict[str, Any] = {
        "max_ongoing_requests": opts.max_ongoing_requests or cfg.max_ongoing_requests or capacity,
        "max_queued_requests": (
            cfg.max_queued_requests
            if cfg.max_queued_requests is not None
            else max(1, package.config.runtime.max_queue)
        ),
        "ray_actor_options": actor,
        "graceful_shutdown_timeout_s": package.config.runtime.shutdown_grace_s,
        # the ingress logs each request; a line per hop on the replica too is only noise
        "logging_config": {"enable_access_log": False},
    }
    autoscaling = cfg.autoscaling_config
    if opts.replicas is not None:
        autoscaling = None
    elif opts.autoscale is not None:
        low, high = opts.autoscale
        base = autoscaling.model_dump(exclude_none=True) if autoscaling else {}
        autoscaling = AutoscalingConfig.model_validate(
            {**base, "min_replicas": low, "max_replicas": high}
        )
    if autoscaling is not None:
        config = autoscaling.model_dump(exclude_none=True)
        config.setdefault("target_ongoing_requests", running)
        options["autoscaling_config"] = config
    else:
        options["num_replicas"] = opts.replicas or cfg.num_replicas or 1
    return options


def ingress_options(package: Package) -> dict[str, Any]:
    cfg: RayConfig = package.config.ray
    return {
        "num_replicas": cfg.ingress_replicas,
        "ray_actor_options": cfg.ingress_actor_options.model_dump(exclude_none=True),
        "max_ongoing_requests": cfg.ingress_max_ongoing_requests,
        "graceful_shutdown_timeout_s": package.config.runtime.shutdown_grace_s,
    }


def application(packages: Sequence[Package], opts: DeployOptions) -> Any:
    """The Ray Serve application for ``packages`` (the first is the default model)."""
    from ray import serve

    from .ingress import ingress_class
    from .replica import ModelReplica

    models = []
    for package in packages:
        deployment = serve.deployment(
            ModelReplica, name=deployment_name(package), **model_options(package, opts)
        )
        models.append(deployment.bind(str(package.root), Sealed(package.secrets)))
    options = ingress_options(packages[0])
    ingress = serve.deployment(ingress_class(), name=INGRESS, **options)
    paths = [str(p.root) for p in packages]
    jobs = [job_share(p, opts, options["num_replicas"]) for p in packages]
    return ingress.bind(paths, models, [Sealed(p.secrets) for p in packages], jobs)


def job_share(package: Package, opts: DeployOptions, ingresses: int) -> int:
    """Jobs one ingress replica runs at once for ``package``: its share of what every model
    replica's slots run (at the most replicas), so jobs never overfill the replicas."""
    options = model_options(package, opts)
    replicas = options.get("num_replicas") or options["autoscaling_config"]["max_replicas"]
    running, _ = slots_capacity(package)
    return max(1, -(-replicas * running // ingresses))


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001``, a head's GCS
    ``host:port``; None: ``$RAY_ADDRESS``, else ``auto``)."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address or "auto",
            namespace="serve",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except ConnectionError as exc:
        first = str(exc).split(". ")[0]
        raise Unreachable(
            f"no Ray cluster at {address or 'auto'} ({first}); start one with "
            "`ray start --head` and pass --address, or try `impasto serve PATH --ray`"
        ) from None


def deploy(
    paths: Sequence[str | Path],
    opts: DeployOptions,
    *,
    name: str | None = None,
    address: str | None = None,
    http_host: str = "127.0.0.1",
    http_port: int = 8000,
    route_prefix: str = "/",
) -> str:
    """Deploy (or update) the application and wait until it is running; returns its name."""
    from ray import serve

    packages = [load_package(p) for p in paths]
    app_name = name or packages[0].name
    connect(address)
    serve.start(http_options={"host": http_host, "port": http_port})
    serve.run(application(packages, opts), name=app_name, route_prefix=route_prefix, blocking=False)
    return app_name


def status(name: str | None = None, *, address: str | None = None) -> dict[str, Any]:
    """The applications (or the one called ``name``): their status and each deployment's
    replicas by state."""
    from ray import serve

    connect(address)
    apps = serve.status().applications
    if name is not None:
        if name not in apps:
            raise ConfigError(
                f"no Ray Serve application named {name!r}; deployed: {', '.join(apps) or 'none'}",
                field="name",
            )
        apps = {name: apps[name]}
    return {app_name: _app_status(app) for app_name, app in apps.items()}


def _app_status(app: Any) -> dict[str, Any]:
    return {
        "status": str(getattr(app.status, "value", app.status)),
        "message": app.message,
        "deployments": {
            dep_name: {
                "status": str(getattr(dep.status, "value", dep.status)),
                "replicas": {
                    str(getattr(k, "value", k)): v for k, v in (dep.replica_states or {}).items()
                },
                "message": dep.message,
            }
            for dep_name, dep in app.deployments.items()
        },
    }


def delete(name: str, *, address: str | None = None) -> None:
    """Delete the application called ``name`` (its replicas stop)."""
    from ray import serve

    connect(address)
    if name not in serve.status().applications:
        raise ConfigError(f"no Ray Serve application named {name!r}", field="name")
    serve.delete(name)


def serve_locally(
    paths: Sequence[str | Path], opts: DeployOptions, *, host: str, port: int
) -> None:
    """``impasto serve PATH --ray``: a local Ray instance, the packages deployed there with
    the proxy at ``host:port``, until Ctrl-C or SIGTERM (which stop it all)."""
    import signal
    import threading

    import ray
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(namespace="serve", include_dashboard=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": host, "port": port})
        name = deploy(paths, opts, http_host=host, http_port=port)
        log.info("%s is running on a local Ray instance at http://%s:%s/", name, host, port)
        stop.wait()
        log.info("stopping %s and the local Ray instance", name)
    finally:
        serve.shutdown()
        ray.shutdown()
