"""The request context: what travels with one call from a route, through the runner, into the model.

A route builds one :class:`RequestContext` per request. The runner sets its deadline and
cancels it on timeout; the server cancels it when the client disconnects; a model's step
loop calls :meth:`RequestContext.check` (or reads ``cancelled``) and reports progress with
:meth:`RequestContext.progress`. Subscribers (SSE, a job store, webhooks) read the events;
nothing in the model calls back into HTTP.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Canceled, PredictTimeout


@dataclass(frozen=True)
class OutputPrefs:
    """What the client asked of the response: media format and quality, and its Accept header."""

    accept: str | None = None
    format: str | None = None
    quality: int | None = None


@dataclass(frozen=True)
class Event:
    """One thing that happened during a request: ``progress``, ``log``, ``preview`` or ``done``."""

    kind: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


EventSink = Callable[[Event], None]


class RequestContext:
    """Per-request state shared by the route, the runner and the model (thread-safe)."""

    def __init__(
        self,
        request_id: str | None = None,
        *,
        deadline: float | None = None,
        output: OutputPrefs | None = None,
        sink: EventSink | None = None,
    ) -> None:
        self.request_id = request_id or uuid.uuid4().hex
        self.deadline = deadline  # time.monotonic() value, or None
        self.output = output or OutputPrefs()
        self.created = time.monotonic()
        self.timings: dict[str, float] = {}
        self._cancel = threading.Event()
        self._reason: str | None = None
        self._sinks: list[EventSink] = [sink] if sink else []

    # cancellation -------------------------------------------------------------------------
    def cancel(self, reason: str = "canceled") -> None:
        """Ask the work to stop at its next check (idempotent; the first reason wins)."""
        if not self._cancel.is_set():
            self._reason = reason
            self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() or self.expired

    @property
    def cancel_reason(self) -> str | None:
        if self.expired and not self._cancel.is_set():
            return "timeout"
        return self._reason

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the request was canceled or ran past its deadline; call it between steps."""
        if not self.cancelled:
            return
        if self.cancel_reason == "timeout":
            raise PredictTimeout(f"request {self.request_id} ran past its deadline")
        raise Canceled(f"request {self.request_id} was canceled ({self.cancel_reason})")

    # events -------------------------------------------------------------------------------
    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def emit(self, kind: str, **data: Any) -> None:
        event = Event(kind, data)
        for sink in list(self._sinks):
            sink(event)

    def progress(self, step: int, total: int, *, preview: Any = None, **extra: Any) -> None:
        """Report a finished step (1-based) of ``total``; ``preview`` may be a small image."""
        elapsed = time.monotonic() - self.created
        eta = elapsed / step * (total - step) if step > 0 else None
        self.emit("progress", step=step, total=total, elapsed=elapsed, eta=eta, **extra)
        if preview is not None:
            self.emit("preview", step=step, image=preview)
