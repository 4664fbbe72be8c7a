"""The job store's outbox: terminal webhooks waiting to be delivered, written in the same
transaction that ends their job, so a restart (of this server or another) resumes them.

A mixin of :class:`impasto.jobs.store.SQLJobStore`: it needs the store's ``_tx`` and
``_read`` transactions.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select, update

from .records import Delivery, Job
from .schema import deliveries


class Outbox:
    """Pending deliveries: queued when a job ends, claimed when due, recorded per try."""

    def _tx(self) -> Any: ...  # provided by the store

    def _read(self) -> Any: ...

    def _queue_terminal_webhook(self, conn: Connection, job: Job, now: float) -> None:
        """Queue ``job``'s ``completed`` webhook (if it asked for one) in ``conn``'s
        transaction: the job's end and its notice commit together."""
        url = job.options.get("webhook")
        if not url or "completed" not in job.webhook_events:
            return
        conn.execute(
            deliveries.insert().values(
                id=f"msg_{uuid.uuid4().hex}",
                job_id=job.id,
                url=url,
                kind=job.options.get("webhook_kind", "cog"),
                event="completed",
                status="pending",
                attempts=0,
                next_at=now,
                created_at=now,
            )
        )

    def due_deliveries(self, *, now: float, limit: int, lock_s: float) -> list[Delivery]:
        """Pending deliveries due now, each pushed ``lock_s`` into the future so that no other
        server sends it meanwhile."""
        with self._tx() as conn:
            rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.status == "pending", deliveries.c.next_at <= now)
                .order_by(deliveries.c.next_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            found = []
            for row in rows:
                m = row._mapping
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == m["id"])
                    .values(next_at=now + lock_s)
                )
                found.append(
                    Delivery(m["id"], m["job_id"], m["url"], m["kind"], m["event"], m["attempts"])
                )
        return found

    def delivered(
        self, ident: str, *, ok: bool, error: str | None, retry_at: float | None, now: float
    ) -> None:
        """Record one try: delivered, to retry at ``retry_at``, or given up (neither)."""
        status = "delivered" if ok else ("pending" if retry_at is not None else "failed")
        with self._tx() as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == ident)
                .values(
                    status=status,
                    attempts=deliveries.c.attempts + 1,
                    last_error=error,
                    next_at=retry_at if retry_at is not None else now,
                    delivered_at=now if ok else None,
                )
            )

    def deliveries_of(self, job_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.job_id == job_id)
                .order_by(deliveries.c.created_at)
            ).all()
        return [dict(r._mapping) for r in rows]
