"""A job running on this server, and the signal that tells watchers it changed.

A :class:`Live` follows its prediction's events (start, progress, log lines) and the
outputs a streaming endpoint yields; the worker saves what changed every
``jobs.progress_interval_s`` and tells the job's watchers (SSE streams) through the
:class:`Notifier`. Watchers of jobs running on other servers read the store every
``jobs.poll_interval_s`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from ..context import Event
from ..prediction import Prediction
from .records import Job


class Live:
    """One running attempt of a job on this server."""

    def __init__(self, job: Job, p: Prediction, stream: bool) -> None:
        self.job = job
        self.p = p
        self.stream = stream
        self.prefix = list(job.logs)  # earlier attempts' lines stay in the job's logs
        self.chunks: list[Any] = []
        self.started_at: float | None = None
        self.dirty = False
        self.lost = False  # its lease went to another worker: write nothing more
        self.files = 0  # result files stored so far (their names)
        self.on_start: Callable[[Live], None] | None = None
        self.on_logs: Callable[[Live], None] | None = None
        self.on_output: Callable[[Live], None] | None = None

    def on_event(self, event: Event) -> None:
        """The prediction's events (on the event loop)."""
        if event.kind == "start":
            self.started_at = event.at
            self.dirty = True
            if self.on_start is not None:
                self.on_start(self)
        elif event.kind in ("progress", "log"):
            self.dirty = True
            if event.kind == "log" and self.on_logs is not None:
                self.on_logs(self)

    def add_chunk(self, chunk: Any) -> None:
        """One output of a streaming endpoint, as the job keeps it."""
        self.chunks.append(chunk)
        self.dirty = True
        if self.on_output is not None:
            self.on_output(self)

    def next_file(self) -> int:
        n = self.files
        self.files += 1
        return n

    @property
    def logs_text(self) -> str:
        return "\n".join([*self.prefix, *self.p.logs])

    def update(self) -> dict[str, Any]:
        """What :meth:`SQLJobStore.save_progress` writes for it now."""
        progress = self.p.progress
        item: dict[str, Any] = {
            "id": self.job.id,
            "logs": self.logs_text,
            "step": progress[0] if progress else None,
            "total": progress[1] if progress else None,
            "started_at": self.started_at,
        }
        if self.stream:
            item["output"] = list(self.chunks)
        return item

    def snapshot(self) -> Job:
        """The job as it stands now (for webhooks sent while it runs)."""
        progress = self.p.progress
        return dataclasses.replace(
            self.job,
            status="processing",
            logs=tuple([*self.prefix, *self.p.logs]),
            progress=progress,
            output=list(self.chunks) if self.stream else None,
            started_at=self.started_at or self.job.started_at,
        )


class Notifier:
    """Per-job change signals for the watchers on this server."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def changed(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait(self, job_id: str, timeout: float) -> None:
        """Until ``job_id`` changes here, or ``timeout`` seconds (it may run elsewhere)."""
        event = self._events.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
