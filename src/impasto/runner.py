"""The one owner of a loaded model: load state, concurrency, queueing, batching, timeouts.

Every route ends in :meth:`Runner.call` with (endpoint name, validated input, request
context) and gets back a value, or an async iterator for a streaming endpoint. Routes never
touch the model object; they only shape requests and responses around this call.

Request flow::

    validate (thread) -> preprocess -> [queue -> slot -> predict | batch] -> postprocess

``preprocess``/``postprocess`` run outside the slot so they overlap with other requests'
predictions; ``runtime.predict_concurrency`` slots bound the predictions running at once and
``runtime.max_queue`` bounds the requests waiting for one (429 beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from .batching import BatchQueue
from .config import PackageConfig
from .context import RequestContext
from .errors import (
    Canceled,
    ImpastoError,
    InputError,
    ModelError,
    NotFound,
    NotReady,
    Overloaded,
    PredictTimeout,
    pydantic_errors,
)
from .spec import CallSpec, EndpointSpec, ModelSpec

log = logging.getLogger("impasto.runner")

STATES = ("pending", "loading", "ready", "failed")


class Runner:
    """Loads one model and runs every request against it under the configured limits."""

    def __init__(
        self,
        spec: ModelSpec,
        factory: Callable[[], Any],
        config: PackageConfig,
        *,
        metrics: Any = None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.spec = spec
        self.config = config
        self.metrics = metrics
        self.redact = redact
        self._factory = factory
        self.model: Any = None
        self.state = "pending"
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        rt = config.runtime
        self._slots = asyncio.Semaphore(rt.predict_concurrency)
        self._waiting = 0
        self._executor = ThreadPoolExecutor(
            max_workers=rt.predict_concurrency + 8, thread_name_prefix="impasto-model"
        )
        self._batchers: dict[str, BatchQueue] = {}
        self._load_task: asyncio.Task | None = None

    # loading ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        """Begin loading in the background (idempotent); requests get 503 until it finishes."""
        if self._load_task is None:
            self._load_task = asyncio.create_task(self.load(), name="impasto-load")
        return self._load_task

    async def load(self) -> bool:
        """Instantiate the model and run its ``load()`` once; True when it is ready."""
        if self.state != "pending":
            await self._done.wait()
            return self.state == "ready"
        self.state = "loading"
        started = time.monotonic()
        timeout = self.config.runtime.load_timeout_s
        try:
            self.model = await self._thread(self._factory)
            if self.spec.has_load:
                work = (
                    self.model.load() if self.spec.load_is_async else self._thread(self.model.load)
                )
                await asyncio.wait_for(work, timeout) if timeout else await work
        except BaseException as exc:
            self.state = "failed"
            if isinstance(exc, asyncio.TimeoutError) and _deadline_hit(exc):
                self.load_error = (
                    f"load() did not finish within {timeout} s (runtime.load_timeout_s)"
                )
            else:
                self.load_error = self.redact(f"{type(exc).__name__}: {exc}")
            log.error(
                "model failed to load: %s\n%s",
                self.load_error,
                self.redact(traceback.format_exc()),
            )
            self._done.set()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return False
        self.load_seconds = time.monotonic() - started
        self.state = "ready"
        log.info("model loaded in %.2f s", self.load_seconds)
        self._ready.set()
        self._done.set()
        return True

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def wait_loaded(self) -> bool:
        await self._done.wait()
        return self.ready

    async def _ensure_ready(self, ctx: RequestContext) -> None:
        if self.state == "ready":
            return
        if self.state == "failed":
            raise NotReady(f"the model failed to load ({self.load_error}); see the server log")
        if self.config.runtime.wait_for_load:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._done.wait(), ctx.remaining())
            if self.state == "ready":
                return
            if self.state == "loading" and ctx.expired:
                raise PredictTimeout(self._timeout_message("while the model was loading"))
        raise NotReady(
            "the model is still loading; retry when GET /health/ready answers 200",
            headers={"Retry-After": "1"},
        )

    # endpoints ----------------------------------------------------------------------------
    def endpoint(self, name: str | None) -> EndpointSpec:
        """The endpoint called ``name`` (None: the default one behind ``/predict``)."""
        if name is None:
            return self.spec.default_endpoint
        try:
            return self.spec.endpoints[name]
        except KeyError:
            known = ", ".join(self.spec.endpoints)
            raise NotFound(f"no endpoint named {name!r}; this model serves: {known}") from None

    async def validate(self, endpoint: EndpointSpec, payload: Any) -> Any:
        """Check ``payload`` against the endpoint's input schema (media decode runs here too,
        in a worker thread so the event loop stays free)."""
        model = endpoint.input_model
        if model is None:
            return payload
        if not isinstance(payload, dict):
            raise InputError(
                f"expected a JSON object with the fields of {model.__name__}, "
                f"got {type(payload).__name__}",
                field="body",
            )
        context = {"media": self.config.media}

        def check() -> Any:
            try:
                return model.model_validate(payload, context=context)
            except ValidationError as exc:
                raise pydantic_errors(exc) from None

        return await self._thread(check)

    # calling ------------------------------------------------------------------------------
    async def call(self, name: str | None, value: Any, ctx: RequestContext) -> Any:
        """Run one validated input through the endpoint; returns the output, or an async
        iterator of chunks when the endpoint streams."""
        endpoint = self.endpoint(name)
        await self._ensure_ready(ctx)
        if self.metrics is not None:
            self.metrics.subscribe(ctx, endpoint.name)
        started = time.monotonic()
        status = "ok"
        try:
            if endpoint.preprocess:
                value = await self._in_time(self._invoke(endpoint.preprocess, value, ctx), ctx)
            if endpoint.streams:
                return await self._stream(endpoint, value, ctx)
            # A batchable method only takes lists, so it always goes through the queue (a batch
            # of one when batching is off); predict + predict_batch can skip it.
            must_batch = endpoint.call is endpoint.batch_call
            if endpoint.batch_call and (self.config.batching.enabled or must_batch):
                value = await self._batched(endpoint, value, ctx)
            else:
                value = await self._slot(
                    ctx, lambda: self._invoke(endpoint.call, value, ctx), endpoint.call.is_async
                )
            if endpoint.postprocess:
                value = await self._in_time(self._invoke(endpoint.postprocess, value, ctx), ctx)
            return value
        except ImpastoError as exc:
            status = exc.type
            raise
        except asyncio.CancelledError:
            status = "canceled"
            ctx.cancel("disconnected")
            raise
        except Exception as exc:
            status = "model_error"
            raise self._model_error(exc, ctx) from exc
        finally:
            ctx.timings["total"] = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.observe(endpoint.name, status, time.monotonic() - started)

    async def _in_time(self, work: Any, ctx: RequestContext) -> Any:
        """Await ``work`` (a pre/postprocess call, outside the slot) within the deadline."""
        try:
            return await asyncio.wait_for(work, ctx.remaining())
        except asyncio.TimeoutError as exc:
            if not _deadline_hit(exc):  # the model's own TimeoutError: a model error
                raise
            ctx.cancel("timeout")
            raise PredictTimeout(self._timeout_message()) from None

    def _model_error(self, exc: BaseException, ctx: RequestContext) -> ModelError:
        message = self.redact(f"{type(exc).__name__}: {exc}")
        log.error(
            "request %s: model raised %s\n%s",
            ctx.request_id,
            message,
            self.redact("".join(traceback.format_exception(exc))),
        )
        return ModelError(message)

    async def _slot(self, ctx: RequestContext, work: Callable[[], Any], is_async: bool) -> Any:
        """Wait for a prediction slot (bounded queue, deadline) and run ``work`` in it."""
        await self._admit(ctx)
        ctx.timings["queue_s"] = time.monotonic() - ctx.created
        if is_async and ctx.deadline is None:
            # Coroutine work with no deadline: cancellation reaches it directly, so the slot
            # can be released as soon as it ends (no task, no shield).
            try:
                return await work()
            except asyncio.CancelledError:
                ctx.cancel("disconnected")
                raise
            finally:
                self._slots.release()
        task = asyncio.ensure_future(work())
        task.add_done_callback(lambda _t: self._slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(task), ctx.remaining())
        except asyncio.TimeoutError as exc:
            if not _deadline_hit(exc):  # the model's own TimeoutError: a model error
                raise
            ctx.cancel("timeout")
            self._abandon(task, is_async)
            raise PredictTimeout(self._timeout_message()) from None
        except asyncio.CancelledError:
            ctx.cancel("disconnected")
            self._abandon(task, is_async)
            raise

    def _abandon(self, task: asyncio.Task, is_async: bool) -> None:
        # Coroutine work stops at its next await. Thread work cannot be stopped: it sees
        # ctx.cancelled, and its task (which holds the slot) is left to end when the thread
        # returns, so the concurrency bound always holds.
        if is_async:
            task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _admit(self, ctx: RequestContext) -> None:
        if self._slots.locked() and self._waiting >= self.config.runtime.max_queue:
            raise Overloaded(
                f"too many requests: {self._waiting} are already waiting "
                f"(runtime.max_queue={self.config.runtime.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        self._set_waiting(+1)
        try:
            await asyncio.wait_for(self._slots.acquire(), ctx.remaining())
        except asyncio.TimeoutError:
            ctx.cancel("timeout")
            raise PredictTimeout(self._timeout_message("while waiting in the queue")) from None
        finally:
            self._set_waiting(-1)

    def _set_waiting(self, delta: int) -> None:
        self._waiting += delta
        if self.metrics is not None:
            self.metrics.queue.set(self._waiting)

    def _timeout_message(self, where: str = "") -> str:
        limit = self.config.runtime.predict_timeout_s
        tail = f" {where}" if where else ""
        return f"the request ran past its deadline of {limit} s{tail} (runtime.predict_timeout_s)"

    async def _batched(self, endpoint: EndpointSpec, value: Any, ctx: RequestContext) -> Any:
        batcher = self._batchers.get(endpoint.name)
        if batcher is None:
            cfg = self.config.batching
            call = endpoint.batch_call
            assert call is not None

            async def run(values: list[Any], ctxs: list[RequestContext]) -> list[Any]:
                if self.metrics is not None:
                    self.metrics.batch_size.labels(endpoint.name).observe(len(values))
                ctx0 = ctxs if call.context_param == "contexts" else ctxs[0]
                return await self._invoke(call, values, ctx0)

            batcher = BatchQueue(
                run,
                max_batch_size=cfg.max_batch_size if cfg.enabled else 1,
                max_wait_ms=cfg.max_wait_ms,
                max_batch_pixels=cfg.max_batch_pixels,
                key=endpoint.batch_key,
                cost=endpoint.batch_cost,
                slots=self._slots,
            )
            self._batchers[endpoint.name] = batcher
        if batcher.pending >= self.config.runtime.max_queue + self.config.batching.max_batch_size:
            raise Overloaded(
                f"too many requests queued for {endpoint.name} (runtime.max_queue); retry shortly",
                headers={"Retry-After": "1"},
            )
        try:
            return await asyncio.wait_for(batcher.submit(value, ctx), ctx.remaining())
        except asyncio.TimeoutError as exc:
            if not _deadline_hit(exc):
                raise
            ctx.cancel("timeout")
            raise PredictTimeout(self._timeout_message()) from None

    async def _invoke(self, call: CallSpec, value: Any, ctx: Any) -> Any:
        """Run one user method: awaited if async, in a worker thread if not."""
        bound = call.bind(self.model, value, ctx)
        if call.is_async and not call.is_generator:
            return await bound()
        if call.is_generator:
            return bound()  # creating a generator object runs no user code
        result = await self._thread(bound)
        return await result if inspect.isawaitable(result) else result

    async def _thread(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    # streaming ----------------------------------------------------------------------------
    async def _stream(self, endpoint: EndpointSpec, value: Any, ctx: RequestContext) -> Any:
        """Acquire a slot, run the generator to its first chunk (an error or timeout before it
        is a status, not a broken stream) and hand back an async generator holding the slot
        until it ends or is closed."""
        await self._admit(ctx)
        try:
            gen = await self._invoke(endpoint.call, value, ctx)
        except BaseException:
            self._slots.release()
            raise
        chunks = self._drain(gen, ctx)
        await anext(chunks)  # _PRIMED: started, so aclose() (or GC) always frees the slot
        return chunks

    async def _drain(self, gen: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        gap = self.config.runtime.streaming_read_timeout
        loop = asyncio.get_running_loop()
        busy: asyncio.Future | None = None  # a sync generator's next() running in a thread
        step = None if inspect.isasyncgen(gen) else functools.partial(next, iter(gen), _END)

        async def next_chunk() -> Any:
            nonlocal busy
            if step is None:
                return await asyncio.wait_for(anext(gen, _END), _min(gap, ctx.remaining()))
            busy = loop.run_in_executor(self._executor, step)
            return await asyncio.wait_for(asyncio.shield(busy), _min(gap, ctx.remaining()))

        try:
            chunk = await next_chunk()
            yield _PRIMED
            while chunk is not _END:
                yield chunk
                chunk = await next_chunk()
        except asyncio.TimeoutError as exc:
            if not _deadline_hit(exc):
                raise self._model_error(exc, ctx) from exc
            ctx.cancel("timeout")
            raise PredictTimeout("the stream stalled past its deadline") from None
        except (ImpastoError, asyncio.CancelledError, GeneratorExit):
            ctx.cancel("disconnected")
            raise
        except Exception as exc:
            raise self._model_error(exc, ctx) from exc
        finally:
            if busy is not None and not busy.done():
                # the thread is still inside next(): it keeps the slot until it returns
                busy.add_done_callback(lambda f: self._end_stream(gen, f))
            else:
                if step is None:
                    with contextlib.suppress(Exception):
                        await gen.aclose()
                self._end_stream(gen, busy)

    def _end_stream(self, gen: Any, busy: asyncio.Future | None) -> None:
        if busy is not None and not busy.cancelled():
            busy.exception()  # retrieved: an abandoned step's error is not reported as lost
        close = getattr(gen, "close", None)  # a sync generator (an async one is closed above)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        self._slots.release()

    # lifecycle ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "waiting": self._waiting,
            "running": self.config.runtime.predict_concurrency - self._slots._value,
            "batch_pending": {name: b.pending for name, b in self._batchers.items()},
        }

    async def aclose(self) -> None:
        for batcher in self._batchers.values():
            await batcher.aclose()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


_END = object()
_PRIMED = object()


def _deadline_hit(exc: BaseException) -> bool:
    """Whether a TimeoutError is wait_for's own (raised from the cancellation it made) rather
    than one the model raised. (``asyncio.TimeoutError`` is the builtin only from 3.11.)"""
    return isinstance(exc.__cause__, asyncio.CancelledError)


def _min(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


__all__ = ["STATES", "Canceled", "Runner"]
