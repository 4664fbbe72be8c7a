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
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from ..calls import is_stream
from ..context import Event, OutputPrefs
from ..errors import ImpastoError, MalformedInput
from ..prediction import Prediction
from ..runner import Runner
from ..spec import EndpointSpec
from .registry import Models
from .requests import parse_json, read_body

log = logging.getLogger("impasto.server")

WATCH_AFTER_S = 0.02  # fast predictions finish before a disconnect watcher would matter
_NO_PREFS = OutputPrefs()


class Inbound:
    """What an adapter read from one request: the payload; the client's output preferences;
    ``events`` to stream the prediction's events (progress, previews, log lines, the result)
    instead of waiting for it, and ``chunk_events`` to have a streaming endpoint's chunks
    come that way too (as ``output`` events) rather than through ``write_stream``;
    ``gather`` to collect the chunks into one result should the output stream; ``size``, the
    body's bytes (large bodies validate in the input pool); ``items``, several inputs
    instead of one payload (KServe
    ``instances``, a tensor batch, several images to edit): each becomes its own prediction,
    run side by side (and batched together where the endpoint batches), and the adapter
    writes their results as one :class:`Many`."""

    __slots__ = ("chunk_events", "events", "gather", "items", "payload", "prefs", "size")

    def __init__(
        self,
        payload: Any,
        prefs: OutputPrefs = _NO_PREFS,
        *,
        events: bool = False,
        gather: bool = False,
        size: int | None = None,
        items: list[Any] | None = None,
        chunk_events: bool = False,
    ) -> None:
        self.payload = payload
        self.prefs = prefs
        self.events = events
        self.gather = gather
        self.size = size
        self.items = items
        self.chunk_events = chunk_events


class Gathered(list):
    """A streaming endpoint's chunks, gathered for a client that asked for one response."""


class Many(list):
    """The results of a request's several inputs (:attr:`Inbound.items`), in their order."""


class Target:
    """Where a request goes, handed to :meth:`Adapter.read` with helpers for the body."""

    __slots__ = ("endpoint", "prediction", "request", "runner")

    def __init__(
        self, request: Request, runner: Runner, endpoint: EndpointSpec, prediction: Prediction
    ) -> None:
        self.request = request
        self.runner = runner
        self.endpoint = endpoint
        self.prediction = prediction

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

    def __init__(self, models: Models, settings: Any = None) -> None:
        self.models = models
        self.settings = settings  # the server's settings, for adapters that need them
        self.jobs: Any = None  # the job store's service (impasto.jobs), when it runs
        self._watch = _DisconnectWatch()

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
        p.ctx.request = request  # for model methods that take the request
        try:
            with p.cancellation():
                inbound = await adapter.read(request, Target(request, runner, ep, p))
                p.ctx.output = inbound.prefs
                if inbound.items is not None:
                    return await self._many(request, adapter, runner, p, inbound)
                value = await runner.decode(p, inbound.payload, size=inbound.size)
                if inbound.events and (not ep.streams or inbound.chunk_events):
                    p.bind(None)
                    events = self.events(runner, p, value)
                    return closing(adapter.write_events(request, p, events), events)
                result = await self._run(request, runner, p, value, inbound.gather)
            p.bind(None)
            if is_stream(result):  # a streaming endpoint, or a generator the model returned
                return closing(adapter.write_stream(request, p, result), result)
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

    async def _many(
        self, request: Request, adapter: Adapter, runner: Runner, p: Prediction, inbound: Inbound
    ) -> Response:
        """Several inputs of one request, each its own prediction (``p`` is the first): all
        admitted before any is decoded, run side by side, written together. The first
        error ends the request: the others are canceled and the error is written."""
        items = inbound.items or []
        limit = runner.config.runtime.max_request_items
        if not items or len(items) > limit or inbound.events:
            why = "no inputs" if not items else f"{len(items)} inputs"
            if inbound.events and items:
                raise MalformedInput("a streamed response takes one input", field="body")
            raise MalformedInput(
                f"the request holds {why}; send 1 to {limit} (runtime.max_request_items)",
                field="body",
            )
        endpoint = runner.spec.endpoints[p.endpoint]
        preds = [p]
        try:
            for i in range(1, len(items)):
                q = runner.admit(endpoint, request_id=f"{p.id}-{i}", output=inbound.prefs)
                preds.append(q)
        except ImpastoError as exc:
            for q in preds[1:]:
                q.finish(exc)
            raise
        p.bind(None)  # each prediction is bound to its own task from here
        tasks = [
            asyncio.create_task(self._one(runner, q, item, endpoint.streams))
            for q, item in zip(preds, items, strict=True)
        ]
        self._watch.add(p, request)  # the client leaving aborts p, and so all of them
        try:
            results = Many(await asyncio.gather(*tasks))
        except asyncio.CancelledError:  # the server is canceling this request's task
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        except ImpastoError as exc:  # one failed: the others are canceled, the error written
            reason = "disconnected" if p.ctx.cancel_reason == "disconnected" else "canceled"
            for q in preds:
                q.abort(reason)
            await asyncio.gather(*tasks, return_exceptions=True)
            for q in preds:
                q.finish(exc)
            raise
        finally:
            self._watch.discard(p)
        p.ctx.timings["total"] = time.monotonic() - p.ctx.created
        response = await adapter.write_result(request, p, results)
        for q, result in zip(preds, results, strict=True):
            q.succeed(result)
        return response

    async def _one(self, runner: Runner, q: Prediction, item: Any, gather: bool) -> Any:
        """One input of several: decoded and run in this task; ``q`` ends here if it fails."""
        q.bind(asyncio.current_task())
        try:
            with q.cancellation():
                value = await runner.decode(q, item)
                result = await runner.run(q, value)
                if gather:
                    async with contextlib.aclosing(result):
                        return Gathered([chunk async for chunk in result])
                return result
        except ImpastoError as exc:
            q.finish(exc)
            raise
        except Exception as exc:
            log.exception("request %s: unhandled error", q.id)
            error = ImpastoError(f"internal server error ({type(exc).__name__})")
            q.finish(error)
            raise error from exc
        finally:
            q.bind(None)

    async def _run(
        self, request: Request, runner: Runner, p: Prediction, value: Any, gather: bool
    ) -> Any:
        """Run the prediction while watching for the client to go away (which aborts it)."""
        self._watch.add(p, request)
        try:
            result = await runner.run(p, value)
            if gather and is_stream(
                result
            ):  # drained while the client waits: leaving cancels it too
                async with contextlib.aclosing(result):
                    return Gathered([chunk async for chunk in result])
            return result
        finally:
            self._watch.discard(p)

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
        with p.cancellation():
            result = await runner.run(p, value)
        p.bind(None)
        if is_stream(result):  # its chunks go out as output events
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


class _ClosesAfter:
    """A response that, however its sending ends (done, failed, the client gone), closes the
    iterator it streams: the prediction ends and the model slot frees then, not whenever the
    garbage collector finalizes an abandoned generator."""

    def __init__(self, response: Response, source: Any) -> None:
        self.response = response
        self.source = source

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            await self.source.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.response, name)


def closing(response: Response, source: Any) -> Response:
    return _ClosesAfter(response, source)  # type: ignore[return-value]


class _DisconnectWatch:
    """Watches running requests for their client going away, from one timer for all.

    A request still running ``WATCH_AFTER_S`` after it started gets a task reading its
    ``http.disconnect``; faster ones finish before anyone could notice, and cost two dict
    operations instead of a timer and a task each."""

    def __init__(self) -> None:
        self._pending: dict[Prediction, tuple[Request, float]] = {}
        self._watching: dict[Prediction, asyncio.Task] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, p: Prediction, request: Request) -> None:
        loop = asyncio.get_running_loop()
        self._pending[p] = (request, loop.time())
        if self._timer is None:
            self._timer = loop.call_later(WATCH_AFTER_S, self._tick)

    def discard(self, p: Prediction) -> None:
        if self._pending.pop(p, None) is None:
            task = self._watching.pop(p, None)
            if task is not None:
                task.cancel()

    def _tick(self) -> None:
        self._timer = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - WATCH_AFTER_S
        for p, (request, since) in list(self._pending.items()):
            if since <= cutoff:
                del self._pending[p]
                self._watching[p] = loop.create_task(_watch_disconnect(request, p))
        if self._pending:
            self._timer = loop.call_later(WATCH_AFTER_S / 2, self._tick)


async def _watch_disconnect(request: Request, p: Prediction) -> None:
    """Abort ``p`` with reason ``disconnected`` when the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            log.info("request %s: client disconnected; canceling", p.id)
            p.abort("disconnected")
            return
