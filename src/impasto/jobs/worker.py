"""The worker: takes queued jobs for the models this server serves and runs them through
the same core as a request (``Runner.admit -> decode -> run``), owned by the store.

Three loops, none on a prediction's path:

- **claim**: while a model has room (``jobs.concurrency``, default what its slots and
  batches run at once) and is not shutting down, claim its oldest queued job and run it;
  woken by a local submission or a job ending, else every ``jobs.poll_interval_s``;
- **tick**: every ``jobs.progress_interval_s`` save running jobs' progress and logs; every
  third of ``jobs.lease_s`` renew their leases (and learn of cancels asked elsewhere, or of
  a lease lost); every half lease return jobs whose server died to the queue (or fail them
  after ``jobs.max_attempts``); every hour prune jobs past ``jobs.retention_s``;
- **runs**: one task per job, which ends it exactly once in the store.

A job's attempt ends with the prediction's true reason: a model error or a timeout fails
it, a cancel cancels it, a shutdown (the grace period ran out) puts it back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..config import JobsConfig
from ..errors import ImpastoError, NotFound, NotReady, Overloaded
from ..prediction import Prediction
from ..runner import Runner
from ..server.registry import Models
from ..spec import EndpointSpec
from .live import Live, Notifier
from .records import Job
from .store import SQLJobStore

log = logging.getLogger("impasto.jobs")

PRUNE_EVERY_S = 3600.0
BUSY_PAUSE_S = 0.5  # a model that refused a claimed job is not offered another for this long


class JobKind(Protocol):
    """How one protocol's jobs read their input and write their result."""

    async def run(
        self, runner: Runner, endpoint: EndpointSpec, p: Prediction, job: Job, live: Live
    ) -> Any:
        """Decode and run the job's input; the output the job keeps (JSON)."""

    async def failed(self, job: Job, error: ImpastoError) -> None:
        """Anything the protocol does with a failure (SageMaker writes its failure file)."""


class Hooks(Protocol):
    """Webhooks sent while a job runs and once it ends (never awaited by a run)."""

    def started(self, job: Job) -> None: ...

    def output(self, job: Job) -> None: ...

    def logs(self, job: Job) -> None: ...

    def ended(self, job: Job) -> None: ...


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs this server's share of the queue (see the module docstring)."""

    def __init__(
        self,
        models: Models,
        store: SQLJobStore,
        db: Callable[..., Awaitable[Any]],
        config: JobsConfig,
        kinds: dict[str, JobKind],
        notifier: Notifier,
        hooks: Hooks,
        on_pruned: Callable[[list[str]], Awaitable[None]],
    ) -> None:
        self.models = models
        self.store = store
        self.db = db
        self.config = config
        self.kinds = kinds
        self.notifier = notifier
        self.hooks = hooks
        self.on_pruned = on_pruned
        self.name = worker_name()
        self.live: dict[str, Live] = {}
        self.running: Counter[str] = Counter()
        self._tasks: dict[str, asyncio.Task] = {}
        self._paused: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task] = []
        self.stopping = False

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="impasto-jobs-claim"),
            asyncio.create_task(self._tick_loop(), name="impasto-jobs-tick"),
        ]

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop claiming; running jobs stop (reason ``shutdown``) and go back to the queue."""
        self.stopping = True
        self._loops[0].cancel() if self._loops else None
        for live in list(self.live.values()):
            live.p.abort("shutdown")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        with contextlib.suppress(Exception):
            await self._flush()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    # claiming -------------------------------------------------------------------------------
    def limit(self, runner: Runner) -> int:
        """Jobs of ``runner``'s model this server runs at once."""
        if self.config.concurrency is not None:
            return self.config.concurrency
        batched = any(ep.batch_call for ep in runner.spec.endpoints.values())
        per_slot = runner.config.batching.max_batch_size if batched else 1
        return runner.config.runtime.predict_concurrency * per_slot

    def _room(self) -> list[str]:
        now = time.monotonic()
        names = []
        for runner in self.models:
            if runner.closing or not self.models.available(runner):
                continue
            if self._paused.get(runner.name, 0.0) > now:
                continue
            if self.running[runner.name] < self.limit(runner):
                names.append(runner.name)
        return names

    async def _claim_loop(self) -> None:
        while not self.stopping:
            job = None
            room = self._room()
            if room:
                try:
                    job = await self.db(
                        self.store.claim,
                        room,
                        self.name,
                        lease_s=self.config.lease_s,
                        now=time.time(),
                    )
                except Exception:
                    log.exception(
                        "cannot claim jobs; retrying in %s s", self.config.poll_interval_s
                    )
            if job is not None:
                self._launch(job)
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)

    def _launch(self, job: Job) -> None:
        self.running[job.model] += 1
        task = asyncio.create_task(self._run(job), name=f"impasto-job-{job.id}")
        self._tasks[job.id] = task

        def done(_: asyncio.Task) -> None:
            self._tasks.pop(job.id, None)
            self.live.pop(job.id, None)
            self.running[job.model] -= 1
            self.wake()

        task.add_done_callback(done)

    # running --------------------------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store failed: the lease expires and the job is retried
            log.exception("job %s: cannot record its outcome; it will be retried", job.id)

    async def _attempt(self, job: Job) -> None:
        log.info(
            "job %s: attempt %d of %d started on %s (model %s)",
            job.id,
            job.attempt,
            self.config.max_attempts,
            self.name,
            job.model,
        )
        try:
            runner, endpoint = self.models.resolve(job.model, job.endpoint)
        except NotFound as exc:
            await self._end(job, "failed", error=exc.message)
            return
        timeout = job.options.get("timeout_s") or self.config.timeout_s
        try:
            p = runner.admit(endpoint, request_id=job.id, timeout_s=timeout)
        except (Overloaded, NotReady) as exc:  # busy with requests, or stopping: later
            log.info("job %s: %s; back to the queue", job.id, exc.message)
            self._paused[job.model] = time.monotonic() + BUSY_PAUSE_S
            await self.db(self.store.release, job.id, self.name, job.attempt)
            return
        live = Live(job, p, stream=bool(job.options.get("stream")))
        live.on_start = lambda lv: self.hooks.started(lv.snapshot())
        live.on_logs = lambda lv: self.hooks.logs(lv.snapshot())
        live.on_output = lambda lv: self.hooks.output(lv.snapshot())
        self.live[job.id] = live
        p.subscribe(live.on_event)
        kind = self.kinds[job.protocol]
        error: ImpastoError | None = None
        output: Any = None
        p.bind(asyncio.current_task())
        try:
            # a worker that is stopping releases the job in the store; it ends nothing here
            with p.cancellation(end_on_teardown=False):
                output = await kind.run(runner, endpoint, p, job, live)
        except ImpastoError as exc:
            error = exc
        except Exception as exc:
            log.exception("job %s: unhandled error", job.id)
            error = ImpastoError(f"internal server error ({type(exc).__name__})")
        finally:
            p.bind(None)
        if error is None and not live.stream and not live.lost:
            self.hooks.output(dataclasses.replace(live.snapshot(), output=output))
        await self._settle(job, live, p, output, error, timeout)

    async def _settle(
        self,
        job: Job,
        live: Live,
        p: Prediction,
        output: Any,
        error: ImpastoError | None,
        timeout: float | None,
    ) -> None:
        """End the attempt in the store by its true reason, then the prediction."""
        reason = p.ctx.cancel_reason
        logs = live.logs_text
        if live.lost:
            log.warning("job %s: its lease went to another worker; its result is dropped", job.id)
        elif error is None:
            await self._end(job, "succeeded", output=output, logs=logs, progress=p.progress)
        elif reason == "shutdown":
            ended = await self.db(
                self.store.requeue,
                job.id,
                self.name,
                job.attempt,
                outcome="interrupted",
                error="the server shut down before it finished",
                max_attempts=self.config.max_attempts,
                logs=logs,
                now=time.time(),
            )
            self._changed(ended)
        elif reason == "canceled":
            await self._end(job, "canceled", logs=logs, output=output, progress=p.progress)
        else:
            message = error.message
            if reason == "timeout":
                source = job.options.get("timeout_from", "jobs.timeout_s")
                message = f"the job ran past its timeout of {timeout} s ({source})"
            with contextlib.suppress(Exception):
                await self.kinds[job.protocol].failed(job, error)
            await self._end(job, "failed", error=message, logs=logs, progress=p.progress)
        if error is None:
            p.succeed(output)
        else:
            p.finish(error)

    async def _end(
        self,
        job: Job,
        status: str,
        *,
        output: Any = None,
        error: str | None = None,
        logs: str | None = None,
        progress: tuple[int, int] | None = None,
    ) -> None:
        ended = await self.db(
            self.store.finish,
            job.id,
            self.name,
            job.attempt,
            status=status,
            output=output,
            error=error,
            logs=logs,
            progress=progress,
            now=time.time(),
        )
        if ended is None:
            log.warning("job %s: no longer this worker's; its %s is dropped", job.id, status)
        self._changed(ended)

    def _changed(self, job: Job | None) -> None:
        if job is None:
            return
        log.info("job %s: %s (attempt %d)", job.id, job.status, job.attempt)
        self.notifier.changed(job.id)
        if job.done:
            self.hooks.ended(job)
        else:
            self.wake()

    def cancel_local(self, job_id: str) -> bool:
        """Stop a job this server runs, now (True), else leave it to its own server."""
        live = self.live.get(job_id)
        if live is None:
            return False
        live.p.abort("canceled")
        return True

    # the tick -------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        heartbeat_every = self.config.lease_s / 3
        reap_every = self.config.lease_s / 2
        next_beat = next_reap = time.monotonic()
        next_prune = time.monotonic() + 5.0
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            now = time.monotonic()
            try:
                await self._flush()
                if now >= next_beat:
                    next_beat = now + heartbeat_every
                    await self._heartbeat()
                if now >= next_reap and not self.stopping:
                    next_reap = now + reap_every
                    await self._reap()
                if now >= next_prune and not self.stopping:
                    next_prune = now + PRUNE_EVERY_S
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job bookkeeping failed; retrying")

    async def _flush(self) -> None:
        dirty = [live for live in self.live.values() if live.dirty and not live.lost]
        if not dirty:
            return
        for live in dirty:
            live.dirty = False
        await self.db(self.store.save_progress, self.name, [live.update() for live in dirty])
        for live in dirty:
            self.notifier.changed(live.job.id)

    async def _heartbeat(self) -> None:
        ids = list(self.live)
        states = await self.db(
            self.store.heartbeat, self.name, ids, lease_s=self.config.lease_s, now=time.time()
        )
        for ident, state in states.items():
            live = self.live.get(ident)
            if live is None:
                continue
            if state == "cancel":
                live.p.abort("canceled")
            elif state == "lost":
                live.lost = True
                live.p.abort("canceled")

    async def _reap(self) -> None:
        touched = await self.db(
            self.store.reap, max_attempts=self.config.max_attempts, now=time.time()
        )
        for job in touched:
            log.warning(
                "job %s: %s after its server stopped (%s)",
                job.id,
                job.status,
                job.error or "retrying",
            )
            self._changed(job)

    async def prune(self, older_than_s: float | None = None) -> list[str]:
        """Delete finished jobs past retention (and their files); their ids."""
        age = self.config.retention_s if older_than_s is None else older_than_s
        ids = await self.db(self.store.prune, before=time.time() - age)
        if ids:
            await self.on_pruned(ids)
            log.info("pruned %d finished job(s) older than %s s", len(ids), age)
        return ids
