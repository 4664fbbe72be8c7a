"""Durable asynchronous jobs: Cog's prediction API and SageMaker's async invocations over
a job store (SQLite or PostgreSQL), results in a folder or any fsspec URL, signed webhooks.

See docs/jobs.md for the guarantees. Needs the ``jobs`` extra (``pip install
'impasto[jobs]'``): SQLAlchemy, psycopg and fsspec.
"""

from __future__ import annotations

from .records import EVENTS, TERMINAL, Attempt, Job, NewJob

__all__ = ["EVENTS", "TERMINAL", "Attempt", "Job", "NewJob"]
