"""The one call path every prediction takes, whatever protocol it came in by.

::

    resolve (model, endpoint) ─> admit ─> adapter.read ─> decode + validate ─> run ─> write
      404                        429/503   (body, prefs)   400/413/422          │      result
                                 at once                   input pool           │      stream
                                                                                 │      events
                                           every error ─────────────────────────┴───> error

A protocol adapter supplies its routes and four small things: how it reads a request into an
:class:`Inbound` (payload, output preferences, whether it wants progress events or a gathered
stream), and how it writes a result, a stream of chunks, a stream of events and an error in
its own shape. Admission, decoding, slots, batching, deadlines, cancellation, disconnect
handling, progress events and the prediction's lifecycle live here and in the runner, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from ..context import Event, OutputPrefs
from ..errors import ImpastoError
from ..prediction import Prediction
from ..runner import Runner
from ..spec import EndpointSpec
from ..streams import uncancel
from .registry import Models
from .requests import parse_json, read_body

log = logging.getLogger("impasto.server")

WATCH_AFTER_S = 0.02  # fast predictions finish before a disconnect watcher would matter
_NO_PREFS = OutputPrefs()


@dataclass(frozen=True)
class Inbound:
    """What an adapter read from one request."""

    payload: Any
    prefs: OutputPrefs = _NO_PREFS
    events: bool = False  # stream the prediction's events (progress, previews, the result)
    gather: bool = False  # a streaming endpoint's chunks gathered into one result
    size: int | None = None  # body bytes: large bodies validate in the input pool


class Gathered(list):
    """A streaming endpoint's chunks, gathered for a client that asked for one response."""


@dataclass(frozen=True)
class Target:
    """Where a request goes, handed to :meth:`Adapter.read` with helpers for the body."""

    request: Request
    runner: Runner
    endpoint: EndpointSpec
    prediction: Prediction

    async def body(self) -> bytes:
        """The raw body, refused (413) past ``runtime.max_body_bytes``."""
        return await read_body(self.request, self.runner.config.runtime.max_body_bytes)

    async def json(self, body: bytes) -> Any:
        """``body`` as JSON with bounded nesting, parsed off the loop when it is large."""
        depth = self.runner.config.runtime.max_json_depth
        if len(body) > 64 * 1024:
            return await self.runner.in_input_pool(lambda: parse_json(body, depth))
        return parse_json(body, depth)


class Adapter(Protocol):
    """A protocol's reading and writing; everything between is the call path's."""

    async def read(self, request: Request, target: Target) -> Inbound: ...

    async def write_result(self, request: Request, p: Prediction, result: Any) -> Response: ...

    def write_stream(
        self, request: Request, p: Prediction, chunks: AsyncIterator[Any]
    ) -> Response: ...

    def write_events(
        self, request: Request, p: Prediction, events: AsyncIterator[Event]
    ) -> Response: ...

    def write_error(self, request: Request, error: ImpastoError) -> Response: ...


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


class CallPath:
    """Runs one request through resolve, admit, read, decode, run and write."""

    def __init__(self, models: Models) -> None:
        self.models = models

    async def handle(
        self,
        request: Request,
        adapter: Adapter,
        model: str | None = None,
        endpoint: str | None = None,
    ) -> Response:
        try:
            runner, ep = self.models.resolve(model, endpoint)
        except ImpastoError as exc:
            return adapter.write_error(request, exc)
        try:
            p = runner.admit(ep, request_id=request_id(request))
        except ImpastoError as exc:
            if runner.metrics is not None:
                runner.metrics.refused(runner.name, ep.name, exc.type)
            return adapter.write_error(request, exc)
        p.bind(asyncio.current_task())
        try:
            try:
                inbound = await adapter.read(request, Target(request, runner, ep, p))
                p.ctx.output = inbound.prefs
                value = await runner.decode(p, inbound.payload, size=inbound.size)
                if inbound.events and not ep.streams:
                    p.bind(None)
                    return adapter.write_events(request, p, self.events(runner, p, value))
                result = await self._run(request, runner, p, value, ep.streams and inbound.gather)
            except asyncio.CancelledError:
                if not p.aborted:  # the server itself is canceling this task
                    p.ctx.cancel("disconnected")
                    p.finish(p.ctx.error())
                    raise
                uncancel()
                raise p.ctx.error() from None
            p.bind(None)
            if ep.streams and not inbound.gather:
                return adapter.write_stream(request, p, result)
            p.ctx.timings["total"] = time.monotonic() - p.ctx.created  # until the output
            response = await adapter.write_result(request, p, result)
            p.succeed(result)
            return response
        except ImpastoError as exc:
            p.finish(exc)
            return adapter.write_error(request, exc)
        except Exception as exc:
            log.exception("request %s: unhandled error", p.id)
            error = ImpastoError(f"internal server error ({type(exc).__name__})")
            p.finish(error)
            return adapter.write_error(request, error)
        finally:
            p.bind(None)

    async def _run(
        self, request: Request, runner: Runner, p: Prediction, value: Any, gather: bool
    ) -> Any:
        """Run the prediction while watching for the client to go away (which aborts it)."""
        watcher: list[asyncio.Task] = []

        def start_watching() -> None:
            watcher.append(asyncio.create_task(_watch_disconnect(request, p)))

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
        try:
            result = await runner.run(p, value)
            if gather:  # drained while the client waits: leaving cancels it too
                async with contextlib.aclosing(result):
                    return Gathered([chunk async for chunk in result])
            return result
        finally:
            timer.cancel()
            for task in watcher:
                task.cancel()

    async def events(self, runner: Runner, p: Prediction, value: Any) -> AsyncIterator[Event]:
        """Run ``p`` in its own task and yield its events until ``completed`` (the ``output``
        event carries the result). Closing the iterator early (the client left) aborts it."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        unsubscribe = p.subscribe(queue.put_nowait)
        task = asyncio.create_task(execute(runner, p, value))
        try:
            while True:
                event = await queue.get()
                yield event
                if event.kind == "completed":
                    return
        finally:
            unsubscribe()
            if not task.done():
                p.abort("disconnected")
                with contextlib.suppress(BaseException):
                    await task


async def execute(
    runner: Runner, p: Prediction, value: Any, *, on_result: Callable[[Any], Any] | None = None
) -> Any:
    """Run a decoded prediction to its end in the current task (for owners that write no
    response: an event stream, a job). Never raises an ImpastoError: it ends ``p`` with it."""
    p.bind(asyncio.current_task())
    try:
        try:
            result = await runner.run(p, value)
        except asyncio.CancelledError:
            if not p.aborted:
                p.ctx.cancel("disconnected")
                p.finish(p.ctx.error())
                raise
            uncancel()
            raise p.ctx.error() from None
        p.bind(None)
        if runner.spec.endpoints[p.endpoint].streams:  # its chunks go out as output events
            async with contextlib.aclosing(result):
                async for _ in result:
                    pass
            return None
        p.succeed(on_result(result) if on_result is not None else result)
        return result
    except ImpastoError as exc:
        p.finish(exc)
    except Exception as exc:
        log.exception("request %s: unhandled error", p.id)
        p.finish(ImpastoError(f"internal server error ({type(exc).__name__})"))
    finally:
        p.bind(None)
    return None


async def _watch_disconnect(request: Request, p: Prediction) -> None:
    """Abort ``p`` with reason ``disconnected`` when the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            log.info("request %s: client disconnected; canceling", p.id)
            p.abort("disconnected")
            return
