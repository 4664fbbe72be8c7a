"""The request context: what travels with one call from the call path, through the runner,
into the model.

The call path makes one :class:`RequestContext` per prediction. It carries the request id, the
deadline, the client's output preferences and a cancel signal with a true reason
(``timeout``, ``disconnected``, ``shutdown`` or ``canceled``). A model's step loop calls
:meth:`RequestContext.check` (or reads ``cancelled``) and reports progress with
:meth:`RequestContext.progress`; those events go to the prediction that owns the context,
which hands them to its subscribers on the event loop. Nothing in the model calls back into
HTTP, and no subscriber runs on the model's thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Canceled, ImpastoError, PredictTimeout, ShuttingDown

REASONS = ("timeout", "disconnected", "shutdown", "canceled")


@dataclass(frozen=True)
class OutputPrefs:
    """What the client asked of the response: media format and quality, its Accept header,
    and how many step previews it wants over the run (0: the package's own setting)."""

    accept: str | None = None
    format: str | None = None
    quality: int | None = None
    previews: int = 0


@dataclass(frozen=True)
class Event:
    """One thing that happened to a prediction: ``start``, ``progress``, ``preview``, ``log``,
    ``output`` or ``completed``; ``at`` is wall-clock time (seconds since the epoch)."""

    kind: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)


EventSink = Callable[[Event], None]


def cancel_error(
    reason: str | None, request_id: str, timeout_s: float | None = None, stage: str = ""
) -> ImpastoError:
    """The error a prediction canceled for ``reason`` ends with, the same on every route;
    ``stage`` says where a timeout caught it (``while waiting in the queue``...)."""
    if reason == "timeout":
        limit = f" of {timeout_s} s" if timeout_s is not None else ""
        where = f" {stage}" if stage else ""
        return PredictTimeout(
            f"the request ran past its deadline{limit}{where} (runtime.predict_timeout_s)"
        )
    if reason == "shutdown":
        return ShuttingDown(
            "the server is shutting down; retry on another replica",
            headers={"Retry-After": "1"},
        )
    if reason == "disconnected":
        return Canceled("the client went away")
    return Canceled(f"request {request_id} was canceled")


class RequestContext:
    """Per-request state shared by the call path, the runner and the model (thread-safe)."""

    __slots__ = (
        "_reason",
        "_sinks",
        "created",
        "deadline",
        "output",
        "request",
        "request_id",
        "stage",
        "timeout_s",
        "timings",
    )

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
        self.output = output or _NO_PREFS
        self.created = time.monotonic()
        self.timings: dict[str, float] = {}
        self.timeout_s: float | None = None  # the limit behind ``deadline``, for messages
        self.stage = ""  # where the request waits now, for a timeout's message
        # the HTTP request this call came in by (a starlette Request), for model methods
        # that ask for it; None in-process and for jobs
        self.request: Any = None
        self._reason: str | None = None  # set once, by the first cancel
        self._sinks: list[EventSink] = [sink] if sink else []

    # cancellation -------------------------------------------------------------------------
    def cancel(self, reason: str = "canceled") -> bool:
        """Ask the work to stop at its next check; the first reason wins. True if this call
        was the one that canceled it."""
        if self._reason is not None:
            return False
        self._reason = reason
        return True

    @property
    def cancelled(self) -> bool:
        return self._reason is not None or self.expired

    @property
    def cancel_reason(self) -> str | None:
        if self._reason is None and self.expired:
            return "timeout"
        return self._reason

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def error(self) -> ImpastoError:
        """The error this request ends with now that it is canceled (by its true reason)."""
        return cancel_error(self.cancel_reason, self.request_id, self.timeout_s, self.stage)

    def check(self) -> None:
        """Raise if the request was canceled or ran past its deadline; call it between steps."""
        if self.cancelled:
            raise self.error()

    # events -------------------------------------------------------------------------------
    def subscribe(self, sink: EventSink) -> None:
        """Receive this request's events (called on the emitting thread; keep it cheap)."""
        self._sinks.append(sink)

    def emit(self, kind: str, **data: Any) -> None:
        if not self._sinks:
            return
        event = Event(kind, data)
        for sink in list(self._sinks):
            sink(event)

    def progress(self, step: int, total: int, *, preview: Any = None, **extra: Any) -> None:
        """Report a finished step (1-based) of ``total``; ``preview`` may be a small image."""
        elapsed = time.monotonic() - self.created
        eta = elapsed / step * (total - step) if step > 0 else None
        self.emit(
            "progress",
            step=step,
            total=total,
            elapsed=round(elapsed, 3),
            eta=None if eta is None else round(eta, 3),
            **extra,
        )
        if preview is not None:
            self.emit("preview", step=step, image=preview)

    def log(self, message: str) -> None:
        """Add a line to the prediction's logs (what ``print`` and logging also feed)."""
        self.emit("log", message=message)


_NO_PREFS = OutputPrefs()
