"""The job store: jobs, their attempts and their pending webhooks, in SQLite or PostgreSQL.

One SQLAlchemy Core implementation serves both; they differ only in how a writer gets the
database to itself:

- **SQLite** (the default, ``$IMPASTO_HOME/jobs.db``): WAL journal, ``synchronous=FULL``
  (a committed job survives a crash and a power cut), and every write transaction starts
  with ``BEGIN IMMEDIATE``, so writers queue up (``busy_timeout``) instead of failing.
- **PostgreSQL** (``postgresql+psycopg://...``): several servers share one queue; a worker
  claims the oldest queued job with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two workers
  never take the same job and neither waits for the other.

A claim gives the worker a lease (``lease_until``) that its heartbeats extend; every write
a worker makes about a running job names the worker and the attempt, so one whose lease
expired (and whose job was retried elsewhere) changes nothing. Calls are synchronous: the
service runs them in its own threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..errors import Overloaded
from . import schema
from .outbox import Outbox
from .records import TERMINAL, Attempt, Job, NewJob
from .schema import deliveries, jobs, meta

log = logging.getLogger("impasto.jobs")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def to_job(row: Any) -> Job:
    m = row._mapping
    step, total = m["progress_step"], m["progress_total"]
    logs = m["logs"] or ""
    return Job(
        id=m["id"],
        seq=m["seq"],
        protocol=m["protocol"],
        model=m["model"],
        endpoint=m["endpoint"],
        status=m["status"],
        input=_loads(m["input"]),
        options=_loads(m["options"]) or {},
        created_at=m["created_at"],
        output=_loads(m["output"]),
        error=m["error"],
        logs=tuple(logs.split("\n")) if logs else (),
        progress=None if step is None else (step, total or 0),
        attempts=tuple(Attempt.of(a) for a in _loads(m["attempt_log"]) or []),
        worker=m["worker"],
        lease_until=m["lease_until"],
        cancel_requested=bool(m["cancel_requested"]),
        started_at=m["started_at"],
        completed_at=m["completed_at"],
        expires_at=m["expires_at"],
    )


class SQLJobStore(Outbox):
    """Jobs in any SQLAlchemy database; see the module docstring."""

    dialect = "sql"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the tables when they are missing."""
        with self._tx() as conn:
            schema.metadata.create_all(conn)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction."""
        with self.engine.connect() as conn:
            conn.execution_options(impasto_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # submitting -----------------------------------------------------------------------------
    def submit(self, new: NewJob, *, max_queued: int, now: float) -> tuple[Job, bool]:
        """Commit ``new`` (True), or return the job that already has its id (False): a
        client retrying a submission never makes a second job. 429 past ``max_queued``."""
        try:
            with self._tx() as conn:
                found = conn.execute(select(jobs).where(jobs.c.id == new.id)).first()
                if found is not None:
                    return to_job(found), False
                queued = conn.execute(
                    select(func.count()).select_from(jobs).where(jobs.c.status == "queued")
                ).scalar_one()
                if queued >= max_queued:
                    raise Overloaded(
                        f"the job queue is full: {queued} jobs are waiting "
                        f"(jobs.max_queued={max_queued}); retry later",
                        headers={"Retry-After": "5"},
                    )
                conn.execute(
                    jobs.insert().values(
                        id=new.id,
                        protocol=new.protocol,
                        model=new.model,
                        endpoint=new.endpoint,
                        status="queued",
                        input=_dumps(new.input),
                        options=_dumps(new.options),
                        logs="",
                        attempt_log="[]",
                        cancel_requested=False,
                        created_at=now,
                        expires_at=new.expires_at,
                    )
                )
        except IntegrityError:  # the same id, submitted at the same moment elsewhere
            job = self.get(new.id)
            if job is None:
                raise
            return job, False
        job = self.get(new.id)
        assert job is not None
        return job, True

    # reading --------------------------------------------------------------------------------
    def get(self, ident: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == ident)).first()
        return None if row is None else to_job(row)

    def page(
        self,
        *,
        statuses: Sequence[str] = (),
        models: Sequence[str] = (),
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first. ``after``: only jobs older than that ``seq`` (the next page);
        ``before``: only newer ones (the previous page), still returned newest first."""
        query = select(jobs)
        if statuses:
            query = query.where(jobs.c.status.in_(list(statuses)))
        if models:
            query = query.where(jobs.c.model.in_(list(models)))
        if before is not None:
            query = query.where(jobs.c.seq > before).order_by(jobs.c.seq.asc())
        else:
            if after is not None:
                query = query.where(jobs.c.seq < after)
            query = query.order_by(jobs.c.seq.desc())
        with self._read() as conn:
            rows = [to_job(r) for r in conn.execute(query.limit(limit))]
        return rows[::-1] if before is not None else rows

    def count(self, status: str) -> int:
        with self._read() as conn:
            query = select(func.count()).select_from(jobs).where(jobs.c.status == status)
            return int(conn.execute(query).scalar_one())

    # working --------------------------------------------------------------------------------
    def claim(
        self, models: Iterable[str], worker: str, *, lease_s: float, now: float
    ) -> Job | None:
        """Take the oldest queued job of one of ``models`` for ``worker`` (None: no work)."""
        names = list(models)
        if not names:
            return None
        with self._tx() as conn:
            query = (
                select(jobs)
                .where(
                    jobs.c.status == "queued",
                    jobs.c.model.in_(names),
                    or_(jobs.c.expires_at.is_(None), jobs.c.expires_at > now),
                )
                .order_by(jobs.c.seq)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            row = conn.execute(query).first()
            if row is None:
                return None
            job = to_job(row)
            attempt = Attempt(len(job.attempts) + 1, worker, now)
            attempts = [a.to_dict() for a in job.attempts] + [attempt.to_dict()]
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id)
                .values(
                    status="processing",
                    worker=worker,
                    lease_until=now + lease_s,
                    attempt_log=_dumps(attempts),
                    started_at=now,
                    progress_step=None,
                    progress_total=None,
                )
            )
        return self.get(job.id)

    def release(self, ident: str, worker: str, attempt: int) -> None:
        """Give a claimed job back untouched (the model could not take it now)."""
        with self._tx() as conn:
            row = self._owned(conn, ident, worker, attempt)
            if row is None:
                return
            job = to_job(row)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == ident)
                .values(
                    status="queued",
                    worker=None,
                    lease_until=None,
                    started_at=None,
                    attempt_log=_dumps([a.to_dict() for a in job.attempts[:-1]]),
                )
            )

    def _owned(self, conn: Connection, ident: str, worker: str, attempt: int) -> Any:
        """The job's row if ``worker`` still runs its ``attempt`` (locked on PostgreSQL)."""
        row = conn.execute(
            select(jobs)
            .where(jobs.c.id == ident, jobs.c.worker == worker, jobs.c.status == "processing")
            .with_for_update()
        ).first()
        if row is None or len(_loads(row._mapping["attempt_log"]) or []) != attempt:
            return None
        return row

    def heartbeat(
        self, worker: str, ids: Sequence[str], *, lease_s: float, now: float
    ) -> dict[str, str]:
        """Extend ``worker``'s leases on ``ids``; each id's state: ``ok``, ``cancel`` (a
        cancel was asked for elsewhere) or ``lost`` (no longer this worker's)."""
        if not ids:
            return {}
        with self._tx() as conn:
            conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(ids)),
                    jobs.c.worker == worker,
                    jobs.c.status == "processing",
                )
                .values(lease_until=now + lease_s)
            )
            rows = conn.execute(
                select(jobs.c.id, jobs.c.worker, jobs.c.status, jobs.c.cancel_requested).where(
                    jobs.c.id.in_(list(ids))
                )
            ).all()
        states = dict.fromkeys(ids, "lost")
        for ident, owner, status, cancel in rows:
            if owner == worker and status == "processing":
                states[ident] = "cancel" if cancel else "ok"
        return states

    def save_progress(self, worker: str, updates: Sequence[dict[str, Any]]) -> None:
        """Running jobs' logs, progress, streamed outputs and start time, in one transaction
        (each update names its ``id`` and ``attempt``)."""
        if not updates:
            return
        with self._tx() as conn:
            for item in updates:
                values: dict[str, Any] = {
                    "logs": item["logs"],
                    "progress_step": item.get("step"),
                    "progress_total": item.get("total"),
                }
                if "output" in item:
                    values["output"] = _dumps(item["output"])
                if item.get("started_at") is not None:
                    values["started_at"] = item["started_at"]
                conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == item["id"],
                        jobs.c.worker == worker,
                        jobs.c.status == "processing",
                    )
                    .values(**values)
                )

    def finish(
        self,
        ident: str,
        worker: str,
        attempt: int,
        *,
        status: str,
        output: Any = None,
        error: str | None = None,
        logs: str | None = None,
        progress: tuple[int, int] | None = None,
        now: float,
    ) -> Job | None:
        """End ``worker``'s ``attempt`` of a job with ``status`` (terminal); None when it is
        no longer that worker's (its lease expired and it was retried)."""
        assert status in TERMINAL
        with self._tx() as conn:
            row = self._owned(conn, ident, worker, attempt)
            if row is None:
                return None
            job = to_job(row)
            values: dict[str, Any] = {"output": _dumps(output), "error": error}
            if logs is not None:
                values["logs"] = logs
            if progress is not None:
                values.update(progress_step=progress[0], progress_total=progress[1])
            self._end(conn, job, status, now, outcome=status, attempt_error=error, **values)
        return self.get(ident)

    def requeue(
        self,
        ident: str,
        worker: str,
        attempt: int,
        *,
        outcome: str,
        error: str,
        max_attempts: int,
        logs: str | None = None,
        now: float,
    ) -> Job | None:
        """An attempt that did not finish (its server is shutting down): the job waits for
        another run, or fails once it has had ``max_attempts``."""
        with self._tx() as conn:
            row = self._owned(conn, ident, worker, attempt)
            if row is None:
                return None
            job = to_job(row)
            if logs is not None:
                job = _with_logs(job, logs)
            self._retry_or_fail(conn, job, outcome, error, max_attempts, now)
        return self.get(ident)

    def _retry_or_fail(
        self, conn: Connection, job: Job, outcome: str, error: str, max_attempts: int, now: float
    ) -> None:
        n = job.attempt
        note = f"impasto: attempt {n} of {max_attempts} ended ({outcome}): {error}"
        logs = "\n".join([*job.logs, note])
        if n >= max_attempts:
            message = (
                f"the job was not finished after {n} attempt{'s' if n > 1 else ''} "
                f"(jobs.max_attempts={max_attempts}); the last one ended ({outcome}): {error}"
            )
            self._end(
                conn, job, "failed", now, outcome=outcome, attempt_error=error,
                error=message, logs=logs,
            )  # fmt: skip
            return
        attempts = _close_attempt(job, now, outcome, error)
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id)
            .values(
                status="queued",
                worker=None,
                lease_until=None,
                started_at=None,
                attempt_log=_dumps(attempts),
                logs=logs,
                progress_step=None,
                progress_total=None,
                cancel_requested=False,
            )
        )

    def _end(
        self,
        conn: Connection,
        job: Job,
        status: str,
        now: float,
        *,
        outcome: str | None = None,
        attempt_error: str | None = None,
        **values: Any,
    ) -> None:
        """Make ``job`` terminal and queue its terminal webhook, in ``conn``'s transaction."""
        attempts = _close_attempt(job, now, outcome, attempt_error) if job.attempts else []
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id)
            .values(
                status=status,
                completed_at=now,
                worker=None,
                lease_until=None,
                attempt_log=_dumps(attempts),
                **values,
            )
        )
        self._queue_terminal_webhook(conn, job, now)

    def cancel(self, ident: str, *, now: float) -> Job | None:
        """A queued job is canceled at once (it never starts); a running one is marked, and
        its worker stops it (at once when it is this server's, else at its next heartbeat).
        None: no such job."""
        with self._tx() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == ident).with_for_update()).first()
            if row is None:
                return None
            job = to_job(row)
            if job.status == "queued":
                self._end(conn, job, "canceled", now)
            elif job.status == "processing":
                conn.execute(update(jobs).where(jobs.c.id == ident).values(cancel_requested=True))
        return self.get(ident)

    def reap(self, *, max_attempts: int, now: float) -> list[Job]:
        """Jobs whose worker stopped heartbeating (its server died) go back to the queue or
        fail after ``max_attempts``; queued jobs past their TTL fail. Returns them."""
        touched: list[str] = []
        with self._tx() as conn:
            lost = conn.execute(
                select(jobs)
                .where(jobs.c.status == "processing", jobs.c.lease_until < now)
                .with_for_update(skip_locked=True)
            ).all()
            for row in lost:
                job = to_job(row)
                self._retry_or_fail(
                    conn,
                    job,
                    "lost",
                    f"the server running it ({job.worker}) stopped without finishing it "
                    "(its lease expired)",
                    max_attempts,
                    now,
                )
                touched.append(job.id)
            stale = conn.execute(
                select(jobs)
                .where(jobs.c.status == "queued", jobs.c.expires_at < now)
                .with_for_update(skip_locked=True)
            ).all()
            for row in stale:
                job = to_job(row)
                self._end(
                    conn,
                    job,
                    "failed",
                    now,
                    error="the job waited in the queue past its time to live "
                    "(X-Amzn-SageMaker-RequestTTLSeconds) and was not run",
                )
                touched.append(job.id)
        return [j for j in (self.get(i) for i in touched) if j is not None]

    def prune(self, *, before: float) -> list[str]:
        """Delete finished jobs (and their webhook records) completed before ``before``."""
        with self._tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.status.in_(list(TERMINAL)), jobs.c.completed_at < before
                    )
                )
            ]
            for chunk in _chunks(ids, 500):
                conn.execute(delete(deliveries).where(deliveries.c.job_id.in_(chunk)))
                conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
        return ids

    # shared values --------------------------------------------------------------------------
    def secret(self, key: str) -> str:
        """A random value every server of this store shares, made on first use."""
        with self._tx() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
            if row is not None:
                return str(row[0])
            value = secrets.token_urlsafe(32)
            conn.execute(meta.insert().values(key=key, value=value))
            return value


def _with_logs(job: Job, logs: str) -> Job:
    from dataclasses import replace

    return replace(job, logs=tuple(logs.split("\n")) if logs else ())


def _close_attempt(
    job: Job, now: float, outcome: str | None, error: str | None
) -> list[dict[str, Any]]:
    attempts = [a.to_dict() for a in job.attempts]
    if attempts and attempts[-1]["ended_at"] is None:
        attempts[-1].update(ended_at=now, outcome=outcome, error=error)
    return attempts


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def open_store(url: str) -> SQLJobStore:
    """The store at ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``), tables
    created; a store that cannot be reached is a ConfigError naming it."""
    from .engines import open_store as _open

    return _open(url)
