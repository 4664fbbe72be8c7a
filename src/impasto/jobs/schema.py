"""The job store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

``seq`` orders the queue (first in, first out) and pages the list; ``id`` is what clients
see. Times are seconds since the epoch (floats), JSON values are text: both dialects read
them alike.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

_SEQ = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: the rowid

jobs = Table(
    "impasto_jobs",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(128), nullable=False, unique=True),
    Column("protocol", String(16), nullable=False),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(255)),
    Column("status", String(16), nullable=False),
    Column("input", Text),  # JSON
    Column("options", Text, nullable=False),  # JSON
    Column("output", Text),  # JSON
    Column("error", Text),
    Column("logs", Text, nullable=False, default=""),
    Column("progress_step", Integer),
    Column("progress_total", Integer),
    Column("attempt_log", Text, nullable=False, default="[]"),  # JSON list of attempts
    Column("worker", String(255)),
    Column("lease_until", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("completed_at", Float),
    Column("expires_at", Float),
)
Index("ix_impasto_jobs_queue", jobs.c.status, jobs.c.model, jobs.c.seq)
Index("ix_impasto_jobs_completed", jobs.c.completed_at)

# Terminal webhooks waiting to be delivered (or given up on): written in the same
# transaction that ends the job, so a restart resumes their delivery.
deliveries = Table(
    "impasto_webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),  # the webhook-id receivers dedupe on
    Column("job_id", String(128), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # cog | sns: the body's shape
    Column("event", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
)
Index("ix_impasto_deliveries_due", deliveries.c.status, deliveries.c.next_at)

# Small values every server of one store shares (the key that signs result URLs).
meta = Table(
    "impasto_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
