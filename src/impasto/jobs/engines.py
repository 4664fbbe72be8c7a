"""The two job store backends, and opening one by URL.

- **SQLite** (the default): one file, WAL, ``synchronous=FULL``; every write transaction
  begins ``IMMEDIATE`` so writers queue up (``busy_timeout``) instead of failing.
- **PostgreSQL**: several servers on one queue, claims with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.exc import OperationalError

from ..errors import ConfigError
from . import schema
from .store import SQLJobStore


class SQLiteJobStore(SQLJobStore):
    """The default store: one file, WAL, writers serialized with ``BEGIN IMMEDIATE``."""

    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("impasto_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        super().__init__(engine)


class PostgresJobStore(SQLJobStore):
    """Several servers on one queue: claims with ``FOR UPDATE SKIP LOCKED``."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__(create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8))

    def open(self) -> None:
        with self._tx() as conn:  # servers starting together create the tables once
            conn.execute(text("SELECT pg_advisory_xact_lock(72316501)"))
            schema.metadata.create_all(conn)


def open_store(url: str) -> SQLJobStore:
    """The store at ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``), tables
    created; a store that cannot be reached is a ConfigError naming it."""
    if url.startswith("sqlite"):
        store: SQLJobStore = SQLiteJobStore(url)
    elif url.startswith("postgresql"):
        store = PostgresJobStore(url)
    else:
        raise ConfigError(
            f"jobs.url: {_safe(url)} is not a SQLite or PostgreSQL URL; use sqlite:///path.db "
            "or postgresql+psycopg://user:password@host/db",
            field="jobs.url",
        )
    try:
        store.open()
    except (OperationalError, OSError) as exc:
        store.close()
        raise ConfigError(
            f"jobs.url: cannot open the job store at {_safe(url)}: "
            f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}",
            field="jobs.url",
        ) from None
    return store


def _safe(url: str) -> str:
    """A database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
