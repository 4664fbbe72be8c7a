"""The jobs service of one server: the store, the worker, result files and webhooks, and
the routes that reach them (Cog's job API, SageMaker's async invocations, ``/files``).

``create_app`` builds it when ``jobs.enabled`` (the default), starts it once the models
start loading and closes it first on shutdown: its worker stops claiming as soon as the
server stops admitting (SIGTERM), running jobs finish within the grace period (or go back
to the queue), queued jobs stay queued for the next server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ..config import JobsConfig, SageMakerConfig
from ..errors import ConfigError, NotReady
from ..secrets import resolve_secrets
from ..server.adapters.cog import CogAdapter
from ..server.adapters.sagemaker import Writers
from ..server.callpath import CallPath
from ..server.responses import dumps
from .cog_api import CogJobs
from .envelope import cog_envelope, sns_notification
from .kinds import CogKind, SageMakerKind
from .live import Notifier
from .records import Delivery, Job, NewJob
from .results import ResultFiles
from .sagemaker_api import SageMakerJobs
from .store import SQLJobStore, open_store
from .webhooks import Deliveries, Signer, WebhookSender, check_url
from .worker import Worker

log = logging.getLogger("impasto.jobs")

URL_ENV = "IMPASTO_JOBS_URL"


def impasto_home() -> Path:
    return Path(os.environ.get("IMPASTO_HOME") or "~/.impasto").expanduser()


def store_url(config: JobsConfig) -> str:
    """``IMPASTO_JOBS_URL``, else ``jobs.url``, else SQLite in ``$IMPASTO_HOME``."""
    return (
        os.environ.get(URL_ENV)
        or config.url
        or f"sqlite:///{(impasto_home() / 'jobs.db').resolve()}"
    )


def results_url(config: JobsConfig) -> str:
    return config.results.url or str(impasto_home() / "results")


class Jobs:
    """Durable asynchronous jobs for the models of one server."""

    def __init__(
        self,
        callpath: CallPath,
        config: JobsConfig,
        sagemaker: SageMakerConfig,
        *,
        secrets_dir: str | None = None,
    ) -> None:
        self.models = callpath.models
        self.config = config
        self.url = store_url(config)
        self.explicit = bool(os.environ.get(URL_ENV) or config.url)
        results = getattr(callpath.settings, "results", None)
        self.public_url: str | None = getattr(results, "public_url", None)
        self.results = ResultFiles(results_url(config), ttl_s=config.results.url_ttl_s)
        self.notifier = Notifier()
        self.secrets_dir = secrets_dir
        self.store: SQLJobStore | None = None
        self.unavailable = "the job store is starting"
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="impasto-jobs")
        self.cog = CogJobs(self, CogAdapter(callpath))
        self.sagemaker = SageMakerJobs(self, sagemaker, impasto_home())
        self._writers = Writers(callpath)
        self.worker: Worker | None = None
        self.deliveries: Deliveries | None = None
        self._delivery_task: asyncio.Task | None = None
        self._log_sent: dict[str, float] = {}
        self._log_timers: dict[str, asyncio.TimerHandle] = {}

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store (a configured store that cannot be opened stops the server; the
        default one only turns jobs off, with the reason in every answer) and start the
        worker and the webhook loop."""
        try:
            self.store = await asyncio.to_thread(open_store, self.url)
            key = await self.db(self.store.secret, "files_key")
            signer = Signer(self._webhook_secret())
        except ConfigError as exc:
            if self.explicit or exc.field != "jobs.url":
                raise
            self.unavailable = f"jobs are off: {exc.message}"
            log.error("%s", self.unavailable)
            return
        self.results.use_key(key)
        sender = WebhookSender(self.config.webhooks, signer)
        self.deliveries = Deliveries(
            sender, self.db, self.store, self._render, poll_s=self.config.poll_interval_s
        )
        kinds = {
            "cog": CogKind(self.results, self.config.results.max_inline_bytes),
            "sagemaker": SageMakerKind(self._writers, self.models),
        }
        self.worker = Worker(
            self.models,
            self.store,
            self.db,
            self.config,
            kinds,  # type: ignore[arg-type]
            self.notifier,
            self,
            self._pruned,
        )
        self.worker.start()
        self._delivery_task = asyncio.create_task(self.deliveries.run(), name="impasto-webhooks")
        self.unavailable = ""
        log.info(
            "jobs: store %s, results in %s",
            self.store.engine.url.render_as_string(),
            self.results.url,
        )

    def _webhook_secret(self) -> str | None:
        name = self.config.webhooks.secret
        secret = resolve_secrets({name: None}, self.secrets_dir).get(name)
        if secret is None:
            log.warning(
                "webhooks are sent unsigned: no secret %r (put it in the secrets folder or "
                "IMPASTO_SECRET_%s)",
                name,
                name.upper(),
            )
        return secret

    async def aclose(self) -> None:
        if self.worker is not None:
            await self.worker.aclose()
        if self._delivery_task is not None:
            self._delivery_task.cancel()
            await asyncio.gather(self._delivery_task, return_exceptions=True)
        if self.deliveries is not None:
            await self.deliveries.aclose()
        for timer in self._log_timers.values():
            timer.cancel()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        self._pool.shutdown(wait=False)

    def routes(self) -> list[Route]:
        return [
            *self.cog.routes(),
            *self.sagemaker.routes(),
            Route("/files/{job_id}/{name}", self.file, methods=["GET", "HEAD"]),
        ]

    # the store, off the loop ----------------------------------------------------------------
    async def db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def check_available(self) -> None:
        if self.unavailable or self.store is None:
            raise NotReady(self.unavailable or "jobs are off", headers={"Retry-After": "1"})

    async def check_webhook(self, url: str, field: str = "webhook") -> None:
        allow = self.config.webhooks.allow_private_urls
        await asyncio.to_thread(check_url, url, allow_private=allow, field=field)

    async def submit(self, new: NewJob) -> tuple[Job, bool]:
        assert self.store is not None and self.worker is not None
        job, created = await self.db(
            self.store.submit, new, max_queued=self.config.max_queued, now=time.time()
        )
        if created:
            self.worker.wake()
        return job, created

    async def get(self, ident: str) -> Job | None:
        assert self.store is not None
        return await self.db(self.store.get, ident)

    async def page(self, **query: Any) -> list[Job]:
        assert self.store is not None
        return await self.db(self.store.page, **query)

    async def cancel(self, ident: str) -> Job | None:
        assert self.store is not None and self.worker is not None
        job = await self.db(self.store.cancel, ident, now=time.time())
        if job is None:
            return None
        if job.status == "processing":
            self.worker.cancel_local(ident)
        elif job.done:
            self.ended(job)
        return job

    async def wait(self, ident: str) -> Job:
        """Until the job ends (a client waiting on ``PUT`` without respond-async)."""
        while True:
            job = await self.get(ident)
            if job is None or job.done:
                assert job is not None
                return job
            await self.notifier.wait(ident, min(self.config.poll_interval_s, 1.0))

    async def _pruned(self, ids: list[str]) -> None:
        for ident in ids:
            await asyncio.to_thread(self.results.delete, ident)

    # webhooks (the worker's hooks) ----------------------------------------------------------
    def started(self, job: Job) -> None:
        self._event(job, "start")

    def output(self, job: Job) -> None:
        self._event(job, "output")

    def logs(self, job: Job) -> None:
        """At most one ``logs`` webhook per ``jobs.webhooks.logs_interval_s``; the last
        lines always go out (a timer sends them)."""
        if "logs" not in job.webhook_events or not job.options.get("webhook"):
            return
        interval = self.config.webhooks.logs_interval_s
        wait = self._log_sent.get(job.id, 0.0) + interval - time.monotonic()
        if wait <= 0:
            self._log_sent[job.id] = time.monotonic()
            self._event(job, "logs")
        elif job.id not in self._log_timers:
            worker = self.worker

            def later() -> None:
                self._log_timers.pop(job.id, None)
                live = worker.live.get(job.id) if worker else None
                if live is not None:
                    self.logs(live.snapshot())

            loop = asyncio.get_running_loop()
            self._log_timers[job.id] = loop.call_later(wait, later)

    def ended(self, job: Job) -> None:
        self.notifier.changed(job.id)
        self._log_sent.pop(job.id, None)
        timer = self._log_timers.pop(job.id, None)
        if timer is not None:
            timer.cancel()
        if self.deliveries is not None:
            self.deliveries.wake()

    def _event(self, job: Job, event: str) -> None:
        url = job.options.get("webhook")
        if not url or event not in job.webhook_events or job.options.get("webhook_kind") != "cog":
            return
        assert self.deliveries is not None
        body = cog_envelope(job, self.results, job.options.get("base_url"))
        self.deliveries.fire(url, dumps(body))

    async def _render(self, delivery: Delivery) -> bytes | None:
        job = await self.get(delivery.job_id)
        if job is None:
            return None
        if delivery.kind == "sns":
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            return dumps(sns_notification(job, region or "us-east-1"))
        body = await asyncio.to_thread(cog_envelope, job, self.results, job.options.get("base_url"))
        return dumps(body)

    # result files ---------------------------------------------------------------------------
    async def file(self, request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        q = request.query_params
        if not self.results.check(f"{job_id}/{name}", q.get("expires", ""), q.get("sig", "")):
            return Response("this link is invalid or has expired\n", 403, media_type="text/plain")
        path = self.results.local_path(job_id, name)
        if path is not None:
            if not Path(path).is_file():
                return Response("no such result\n", 404, media_type="text/plain")
            return FileResponse(path)
        try:
            data, kind = await asyncio.to_thread(self.results.read, job_id, name)
        except FileNotFoundError:
            return Response("no such result\n", 404, media_type="text/plain")
        return Response(data, media_type=kind)
