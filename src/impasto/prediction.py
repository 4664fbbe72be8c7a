"""The Prediction: one call's life, from admission to its end, as an explicit state machine.

::

    queued ──start()──> processing ──succeed()──> succeeded
       │                    │
       └──── finish(exc) ───┴──> failed | canceled

Whoever owns a prediction (a connection through the call path, next a job store) drives it:
the runner admits it (``queued``), starts it when it gets the model (``processing``), and the
owner ends it exactly once. Every transition is a small method that emits an :class:`Event`
(``start``, ``output``, ``completed``); the model adds ``progress``, ``preview`` and ``log``
through its :class:`RequestContext`. Subscribers (SSE, metrics, a job store, webhooks) are
always called on the event loop, never on the model's thread: an event emitted by a worker
thread is handed over with ``call_soon_threadsafe``, so a slow or broken subscriber can
neither stall nor break a denoising step, and events arrive in the order they were emitted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .context import Event, EventSink, RequestContext
from .errors import Canceled, ImpastoError, ShuttingDown

log = logging.getLogger("impasto.prediction")

Status = Literal["queued", "processing", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
# Runner-wide listeners (metrics) see the model's events (progress, preview, log) of every
# prediction; transitions reach them through the runner's end-of-prediction hook instead.
Listener = Callable[["Prediction", Event], None]


class Prediction:
    """One prediction's state, events and logs (its transitions run on the event loop)."""

    __slots__ = (
        "_listeners",
        "_log_bytes",
        "_loop",
        "_loop_thread",
        "_max_log_bytes",
        "_on_end",
        "_subscribers",
        "_task",
        "_timer",
        "aborted",
        "completed_at",
        "created_at",
        "ctx",
        "endpoint",
        "error",
        "input",
        "logs",
        "logs_dropped",
        "model",
        "output",
        "progress",
        "started_at",
        "status",
    )

    def __init__(
        self,
        ctx: RequestContext,
        *,
        model: str,
        endpoint: str,
        listeners: Sequence[Listener] = (),
        on_end: Callable[[Prediction], None] | None = None,
        max_log_bytes: int = 64 * 1024,
    ) -> None:
        self.ctx = ctx
        self.model = model
        self.endpoint = endpoint
        self.status: Status = "queued"
        self.input: Any = None
        self.output: Any = None
        self.error: ImpastoError | None = None
        self.progress: tuple[int, int] | None = None
        self.logs: deque[str] = deque()
        self.logs_dropped = 0
        self.created_at = time.time()
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self._subscribers: list[EventSink] = []
        self._listeners = listeners
        self._on_end = on_end
        self._max_log_bytes = max_log_bytes
        self._log_bytes = 0
        self._task: asyncio.Future | None = None
        self.aborted = False  # an abort canceled the bound task
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        ctx.subscribe(self._from_context)

    @property
    def id(self) -> str:
        return self.ctx.request_id

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def outcome(self) -> str:
        """``ok``, or the type of the error it ended with (``invalid_input``, ``timeout``...)."""
        if self.error is not None:
            return self.error.type
        return "ok" if self.status == "succeeded" else self.status

    # subscribers ----------------------------------------------------------------------------
    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Receive this prediction's events on the event loop; returns the unsubscribe."""
        self._subscribers.append(sink)
        return lambda: self._subscribers.remove(sink) if sink in self._subscribers else None

    @property
    def watched(self) -> bool:
        """Someone subscribed to its events (an event stream, a job): a remote run must
        relay them."""
        return bool(self._subscribers)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        """A transition's event, to this prediction's subscribers."""
        if self._subscribers:
            self._send(Event(kind, data))

    def _send(self, event: Event) -> None:
        for sink in tuple(self._subscribers):
            try:
                sink(event)
            except Exception:
                log.exception("request %s: a %s subscriber failed", self.id, event.kind)

    def _from_context(self, event: Event) -> None:
        """The model's progress, preview and log events, from whatever thread emits them."""
        if threading.get_ident() == self._loop_thread:
            self._deliver(event)
        else:
            try:
                self._loop.call_soon_threadsafe(self._deliver, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _deliver(self, event: Event) -> None:
        if self.done:
            return  # late events from an abandoned thread change nothing
        if event.kind == "progress":
            self.progress = (event.data.get("step", 0), event.data.get("total", 0))
        elif event.kind == "log":
            self._keep_log(str(event.data.get("message", "")))
        for listener in self._listeners:  # runner-wide (metrics): the model's events only
            try:
                listener(self, event)
            except Exception:
                log.exception("request %s: a %s listener failed", self.id, event.kind)
        self._send(event)

    def _keep_log(self, line: str) -> None:
        self.logs.append(line)
        self._log_bytes += len(line)
        while self._log_bytes > self._max_log_bytes and len(self.logs) > 1:
            self._log_bytes -= len(self.logs.popleft())
            self.logs_dropped += 1

    # transitions ----------------------------------------------------------------------------
    def start(self) -> None:
        """``queued -> processing``: it holds the model (a slot, or a place in a batch)."""
        if self.status != "queued":
            return
        self.status = "processing"
        self.started_at = time.time()
        self.ctx.timings["queue_s"] = time.monotonic() - self.ctx.created
        self._publish("start", {"started_at": self.started_at})

    def succeed(self, output: Any = None) -> None:
        """``processing -> succeeded`` with its output (None for a stream, whose chunks went
        out as ``output`` events)."""
        if self.done:
            return
        self.output = output
        if output is not None:
            self._publish("output", {"output": output})
        self._end("succeeded")

    def chunk(self, value: Any) -> None:
        """One chunk of a streaming endpoint's output, as it goes out."""
        self._publish("output", {"chunk": value})

    def finish(self, exc: BaseException) -> None:
        """End with an error: ``canceled`` when it was canceled (by the client, an explicit
        cancel or a shutdown), ``failed`` otherwise (timeouts included)."""
        if self.done:
            return
        self.error = exc if isinstance(exc, ImpastoError) else ImpastoError(str(exc))
        canceled = isinstance(exc, Canceled | ShuttingDown) and self.ctx.cancel_reason in (
            "canceled",
            "disconnected",
            "shutdown",
        )
        self._end("canceled" if canceled else "failed")

    def _end(self, status: Status) -> None:
        self.status = status
        self.completed_at = time.time()
        self.ctx.timings["total"] = time.monotonic() - self.ctx.created
        self.bind(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._subscribers:
            data: dict[str, Any] = {"status": status, "outcome": self.outcome}
            if self.error is not None:
                data["error"] = self.error.to_dict()["error"]
            self._publish("completed", data)
        if self._on_end is not None:
            self._on_end(self)

    # cancellation ---------------------------------------------------------------------------
    def bind(self, task: asyncio.Future | None) -> None:
        """The task (or future) that is working on this prediction now: an abort cancels it."""
        self._task = task

    def set_deadline(self, seconds: float | None) -> None:
        """Abort with reason ``timeout`` ``seconds`` after admission (None: no deadline)."""
        if seconds is None:
            return
        self.ctx.deadline = self.ctx.created + seconds
        self._timer = self._loop.call_at(
            self._loop.time() + max(0.0, self.ctx.deadline - time.monotonic()),
            self.abort,
            "timeout",
        )

    def cancellation(self, *, end_on_teardown: bool = True) -> _Cancellation:
        """Wraps the awaits of the task working on it. An abort (a deadline, a cancel, the
        shutdown) comes out as the prediction's own error (``Canceled``, ``PredictTimeout``,
        ...), which the task then handles like any other. A cancellation nobody asked for
        (the server tearing the task down when the client left) marks it ``disconnected``
        and keeps propagating; it also ends the prediction unless ``end_on_teardown`` is
        False (an owner that settles it itself, like a job worker that is stopping)."""
        return _Cancellation(self, end_on_teardown)

    def abort(self, reason: str) -> bool:
        """Cancel it for ``reason`` (``timeout``, ``disconnected``, ``shutdown``, ``canceled``):
        the model sees ``ctx.cancelled`` at its next step and the waiting task is canceled.
        The first reason wins; True if this call canceled it. Safe from any thread."""
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.abort, reason)
            return True
        if self.done or not self.ctx.cancel(reason):
            return False
        task = self._task
        if task is not None and not task.done():
            self.aborted = True
            task.cancel()
        return True


class _Cancellation:
    """:meth:`Prediction.cancellation` as a plain class: it is entered once per request on
    the hot path, where a generator-based context manager costs ten times as much."""

    __slots__ = ("end_on_teardown", "p")

    def __init__(self, p: Prediction, end_on_teardown: bool) -> None:
        self.p = p
        self.end_on_teardown = end_on_teardown

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> bool:
        if kind is None or not issubclass(kind, asyncio.CancelledError):
            return False
        p = self.p
        if not p.aborted:
            p.ctx.cancel("disconnected")
            if self.end_on_teardown:
                p.finish(p.ctx.error())
            return False  # the CancelledError keeps propagating
        uncancel()
        raise p.ctx.error() from None


def uncancel() -> None:
    """Forget a cancellation this task handled itself (3.11+), so later awaits and
    structured-concurrency scopes in it are not affected by it."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()
