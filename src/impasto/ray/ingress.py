"""The ingress deployment: the same ASGI app as ``impasto serve``, models on replicas.

Every protocol's routes, the playground, ``/metrics``, the health routes and the job API
are the app :func:`impasto.serving.build_app` builds; only each model's runner is a
:class:`~impasto.ray.remote.RemoteRunner`. Ray Serve's HTTP proxy hands each request to an
ingress replica as ASGI, so streaming responses and SSE work as they do on one server.
Every response names, in ``X-Impasto-Replica``, the model replica that ran it (the ingress
replica for responses no model made).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import Metrics
from ..models_file import plan_for
from ..package import Package, load_package
from ..serving import build_app
from .remote import REPLICA_STATE_KEY, RemoteRunner
from .replica import replica_id
from .secrets import Sealed, with_secrets

REPLICA_HEADER = b"x-impasto-replica"
REQUEST_ID = b"x-request-id"


class ReplicaHeader:
    """Pure ASGI middleware: ``X-Impasto-Replica`` on every HTTP response."""

    def __init__(self, app: ASGIApp, ingress: str) -> None:
        self.app = app
        self.ingress = ingress.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                ran = scope.get("state", {}).get(REPLICA_STATE_KEY)
                value = ran.encode("latin-1") if ran else self.ingress
                # Ray's proxy adds X-Request-ID itself (the same id, which it passed in)
                headers = [(k, v) for k, v in message.get("headers", ()) if k != REQUEST_ID]
                message["headers"] = [*headers, (REPLICA_HEADER, value)]
            await send(message)

        await self.app(scope, receive, send_with_replica)

    def __getattr__(self, name: str) -> Any:  # app.state, routes... of the wrapped app
        return getattr(self.app, name)


def ingress_app(
    paths: Sequence[str],
    handles: Sequence[Any],
    secrets: Sequence[Sealed | None],
    job_concurrency: Sequence[int] | None = None,
) -> ASGIApp:
    """The ingress's ASGI app for the packages at ``paths``, each run by the model deployment
    behind the handle at the same place in ``handles``. ``job_concurrency``: the jobs this
    ingress replica runs at once per model, unless ``jobs.concurrency`` says (its share of
    what every model replica's slots run)."""
    packages = [with_secrets(load_package(p), s) for p, s in zip(paths, secrets, strict=True)]
    for package, jobs in zip(packages, job_concurrency or (), strict=False):
        if package.config.jobs.concurrency is None:
            package.config.jobs.concurrency = jobs
    by_name = {pkg.name: handle for pkg, handle in zip(packages, handles, strict=True)}

    def remote(package: Package, metrics: Metrics) -> RemoteRunner:
        return RemoteRunner(package, metrics, by_name[package.name])

    ui = packages[0].config.ui.enabled is True
    app = build_app(plan_for(packages), ui=ui, runner=remote)
    return ReplicaHeader(app, replica_id())


def ingress_class() -> type:
    """The ingress deployment's class: Ray Serve's ASGI wrapper around :func:`ingress_app`
    (imported here so that this module loads without Ray)."""
    from ray.serve._private.http_util import ASGIAppReplicaWrapper

    class ImpastoIngress(ASGIAppReplicaWrapper):
        def __init__(
            self, paths: list[str], handles: list[Any], secrets: list[Any], jobs: list[int]
        ) -> None:
            super().__init__(lambda: ingress_app(paths, handles, secrets, jobs))

    return ImpastoIngress
