"""A job as plain frozen data: what the store keeps and every layer above reads.

::

    queued ──claim──> processing ──> succeeded | failed | canceled
      │   <──lease expired / shutdown (attempts left)──┘
      └──cancel / request TTL──> canceled | failed

A job is a prediction owned by the job store instead of a connection. ``attempts`` records
each run (which worker, when, how it ended), so a job retried after its server died says so.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
STATUSES = ("queued", "processing", "succeeded", "failed", "canceled")
# Cog's words for the job's status (``starting``: accepted, not running yet)
COG_STATUS = {
    "queued": "starting",
    "processing": "processing",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}
FROM_COG = {cog: ours for ours, cog in COG_STATUS.items()}
# Webhook events, as Cog's ``webhook_events_filter`` names them
EVENTS = ("start", "output", "logs", "completed")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


def new_id() -> str:
    """A job id as Cog recommends them: a UUID in 26 lowercase base32 characters."""
    return base64.b32encode(uuid.uuid4().bytes).decode().lower().rstrip("=")


def valid_id(ident: str) -> bool:
    """Ids clients may choose: 1-128 letters, digits and ``._:-``, starting alphanumeric."""
    return bool(_ID.match(ident))


@dataclass(frozen=True)
class Attempt:
    """One run of a job: on which worker, from when to when, and how it ended
    (``succeeded``, ``failed``, ``canceled``, ``lost``: its server stopped under it,
    ``interrupted``: its server shut down before it finished)."""

    n: int
    worker: str
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "worker": self.worker,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome,
            "error": self.error,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Attempt:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True)
class NewJob:
    """What a client submitted, validated: the store gives it a place in the queue.

    ``options`` holds what the protocol needs later: ``webhook``, ``webhook_events``,
    ``webhook_kind`` (``cog`` or ``sns``), ``base_url`` (for result URLs in webhooks),
    ``stream`` (the endpoint streams), ``timeout_s``, and the SageMaker headers and
    locations of an async invocation."""

    id: str
    protocol: str  # "cog" | "sagemaker": how the input is read and the result written
    model: str
    endpoint: str | None
    input: Any
    options: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None  # a queued job not started by then fails (its TTL)


@dataclass(frozen=True)
class Job:
    """A job as the store last saw it."""

    id: str
    seq: int
    protocol: str
    model: str
    endpoint: str | None
    status: str
    input: Any
    options: dict[str, Any]
    created_at: float
    output: Any = None
    error: str | None = None
    logs: tuple[str, ...] = ()
    progress: tuple[int, int] | None = None
    attempts: tuple[Attempt, ...] = ()
    worker: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def cog_status(self) -> str:
        return COG_STATUS[self.status]

    @property
    def attempt(self) -> int:
        """The number of the current (or last) run; 0 before the first."""
        return len(self.attempts)

    @property
    def webhook_events(self) -> tuple[str, ...]:
        events = self.options.get("webhook_events")
        return tuple(events) if events is not None else EVENTS


@dataclass(frozen=True)
class Delivery:
    """A terminal webhook to deliver: its body is rendered from the job when it is sent."""

    id: str
    job_id: str
    url: str
    kind: str  # cog | sns
    event: str
    attempts: int
