"""The one owner of a loaded model: load state, admission, decoding, slots, batching, streams.

Every call, whatever protocol it came in by, goes through the same four runner steps::

    admit(endpoint)          -> Prediction, or 429 / 503 at once (before any body is read)
    decode(prediction, body) -> the validated input (media decoded in the input pool)
    run(prediction, value)   -> the output, or an async iterator for a streaming endpoint
    (the owner ends it)      -> prediction.succeed(output) / prediction.finish(error)

``preprocess``/``postprocess`` run outside the slot so they overlap with other requests'
predictions; ``runtime.predict_concurrency`` slots bound the predictions running at once and
the admission limit bounds the predictions in flight: ``runtime.max_queue`` waiting beyond
what the slots (times ``batching.max_batch_size`` for a batched endpoint, or one that
batches itself) can hold. A deadline, a disconnect, a shutdown or an explicit cancel all go
through :meth:`Prediction.abort`, so the reason a prediction ended is always the true one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal

from pydantic import ValidationError
from starlette.responses import Response

from . import logs
from .batching import BatchQueue
from .calls import (
    RESPONSE_POSTPROCESS,
    STREAM_POSTPROCESS,
    ModelCalls,
    awaited,
    is_stream,
)
from .config import PackageConfig
from .context import OutputPrefs, RequestContext
from .errors import (
    ImpastoError,
    InputError,
    NotFound,
    NotReady,
    Overloaded,
    PredictTimeout,
    ShuttingDown,
    pydantic_errors,
)
from .loading import Loader
from .media.budget import DecodeBudget
from .prediction import Prediction
from .slots import Slots
from .spec import CallSpec, EndpointSpec, ModelSpec
from .streams import drain

log = logging.getLogger("impasto.runner")

INLINE_VALIDATION_BYTES = 64 * 1024  # smaller bodies without media validate on the loop


class Runner:
    """Loads one model and runs every prediction against it under the configured limits."""

    def __init__(
        self,
        spec: ModelSpec,
        factory: Callable[[], Any],
        config: PackageConfig,
        *,
        name: str = "model",
        kind: str = "impasto",
        metrics: Any = None,
        redact: Callable[[str], str] = lambda text: text,
        scope: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        before_load: Callable[[Any], Any] | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.name = name
        self.kind = kind  # the dialect shared routes answer in: truss, sagemaker, impasto...
        self.metrics = metrics
        self.redact = redact
        self.closing = False
        # Set by a registry that loads this model on demand (lazy loading, eviction): called
        # at admission while the model is not loaded; the request then waits for the load.
        self.on_demand: Callable[[Runner], None] | None = None
        self.last_used = 0.0  # monotonic time of the last admission (least recently used)
        rt = config.runtime
        self._slots = Slots(rt.predict_concurrency)
        # Endpoints that batch themselves (continuous batching) run one prediction per call,
        # up to a batch's worth per slot, in places of their own.
        per_batch = rt.predict_concurrency * config.batching.max_batch_size
        self._shared = Slots(per_batch)
        self._busy = 0  # slots in use, abandoned threads included
        self._queued = 0  # admitted predictions that do not hold the model yet
        self._live: set[Prediction] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(
            max_workers=rt.predict_concurrency + 8, thread_name_prefix="impasto-model"
        )
        self.calls = ModelCalls(
            lambda: self.loading.model, self._executor, name=name, redact=redact
        )
        self._inputs = ThreadPoolExecutor(
            max_workers=rt.input_workers, thread_name_prefix="impasto-input"
        )
        self._batchers: dict[str, BatchQueue] = {}
        self._capacity: dict[str, int] = {}
        # Media are decoded only by the predictions that will run next: what the slots can
        # run plus one per input worker. The rest wait holding their raw bodies only.
        batched = any(ep.batch_call or ep.batches_itself for ep in spec.endpoints.values())
        per_slot = config.batching.max_batch_size if batched else 1
        self._decoding = Slots(rt.predict_concurrency * per_slot + rt.input_workers)
        self._decoders: set[Prediction] = set()
        self.loading = Loader(
            spec,
            factory,
            name=name,
            thread=self.calls.thread,
            timeout=rt.load_timeout_s,
            redact=redact,
            scope=scope,
            before_load=before_load,
        )
        self._listeners = [metrics.listener(name)] if metrics is not None else []
        if metrics is not None:
            metrics.track(name, lambda: self._queued, lambda: len(self._live))
            metrics.track_engine(name, self._engine_stats)

    def _engine_stats(self) -> dict[str, float]:
        """The model's own scheduler figures (``engine_stats()``), if it has one running."""
        stats = getattr(self.loading.model, "engine_stats", None)
        return stats() if callable(stats) else {}

    # loading (the state machine is the Loader's) -----------------------------------------
    def start(self) -> asyncio.Task:
        """Begin loading in the background (idempotent); admission answers 503 until then."""
        return self.loading.start()

    async def load(self) -> bool:
        """Build the model and run its ``load()`` once; True when it is ready."""
        return await self.loading.load()

    @property
    def model(self) -> Any:
        return self.loading.model

    @property
    def state(self) -> str:
        """pending -> loading -> ready | failed; ready -> unloading -> unloaded -> loading..."""
        return self.loading.state

    @property
    def ready(self) -> bool:
        return self.loading.ready

    @property
    def load_error(self) -> str | None:
        return self.loading.error

    @property
    def load_seconds(self) -> float | None:
        return self.loading.seconds

    @property
    def load_started_at(self) -> float | None:
        return self.loading.started_at

    @property
    def load_completed_at(self) -> float | None:
        return self.loading.completed_at

    async def healthy(self) -> bool | None:
        """The model's own ``is_healthy()`` (see :meth:`Loader.healthy`)."""
        return await self.loading.healthy()

    async def wait_loaded(self) -> bool:
        await self.loading.done.wait()
        return self.ready

    def _load_failed(self) -> NotReady:
        return NotReady(f"the model failed to load ({self.load_error}); see the server log")

    async def _wait_loaded(self, p: Prediction) -> None:
        """Hold a prediction until the model is loaded (``runtime.wait_for_load``, or a
        model loaded on demand)."""
        p.ctx.stage = "while the model was loading"
        limit = self.config.runtime.load_wait_s
        while self.state != "ready":  # an unload in between makes a new event to wait on
            if self.state == "failed":
                raise self._load_failed()
            try:  # the deadline aborts this wait: 504
                await asyncio.wait_for(self.loading.done.wait(), limit)
            except asyncio.TimeoutError:
                raise NotReady(
                    f"the model is still loading after {limit} s (runtime.load_wait_s); retry "
                    "when it is ready",
                    headers={"Retry-After": "1"},
                ) from None

    # endpoints ----------------------------------------------------------------------------
    def endpoint(self, name: str | None) -> EndpointSpec:
        """The endpoint called ``name`` (None: the default one behind ``/predict``)."""
        if name is None:
            return self.spec.default_endpoint
        try:
            return self.spec.endpoints[name]
        except KeyError:
            known = ", ".join(self.spec.endpoints) or "none (it serves a websocket)"
            raise NotFound(f"no endpoint named {name!r}; this model serves: {known}") from None

    # admission ----------------------------------------------------------------------------
    def capacity(self, endpoint: EndpointSpec) -> int:
        """Predictions of this model that may be in flight before 429: what the slots can run
        (a batch per slot for a batched endpoint) plus ``runtime.max_queue`` waiting."""
        limit = self._capacity.get(endpoint.name)
        if limit is None:
            batched = self._batches(endpoint) or endpoint.batches_itself
            per_slot = self.config.batching.max_batch_size if batched else 1
            rt = self.config.runtime
            limit = self._capacity[endpoint.name] = rt.max_queue + rt.predict_concurrency * per_slot
        return limit

    def admit(
        self,
        endpoint: EndpointSpec,
        *,
        request_id: str | None = None,
        output: OutputPrefs | None = None,
        timeout_s: float | Literal["runtime"] | None = "runtime",
    ) -> Prediction:
        """A place in this model's queue, or an error at once: 503 while loading (unless
        ``runtime.wait_for_load``), after a failed load or while shutting down, 429 when full.
        Nothing about the request has been read yet, so refusing costs nothing. The deadline
        is ``runtime.predict_timeout_s`` unless ``timeout_s`` says otherwise (a job's own)."""
        if self.closing:
            raise ShuttingDown(
                "the server is shutting down; retry on another replica",
                headers={"Retry-After": "1"},
            )
        if self.state != "ready":
            if self.state == "failed":
                raise self._load_failed()
            if self.on_demand is not None:
                if self.state in ("pending", "unloaded", "unloading"):
                    self.on_demand(self)  # loads it (after evicting another, if need be)
            elif not self.config.runtime.wait_for_load:
                raise NotReady(
                    "the model is still loading; retry when GET /health/ready answers 200",
                    headers={"Retry-After": "1"},
                )
        limit = self.capacity(endpoint)
        if len(self._live) >= limit:
            raise Overloaded(
                f"too many requests: {len(self._live)} are in flight for {self.name} "
                f"(runtime.max_queue={self.config.runtime.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        rt = self.config.runtime
        ctx = RequestContext(request_id, output=output)
        ctx.timeout_s = rt.predict_timeout_s if timeout_s == "runtime" else timeout_s
        p = Prediction(
            ctx,
            model=self.name,
            endpoint=endpoint.name,
            listeners=self._listeners,
            on_end=self._ended,
            max_log_bytes=rt.max_log_bytes,
        )
        p.set_deadline(ctx.timeout_s)
        self.last_used = ctx.created
        self._live.add(p)
        self._idle.clear()
        self._set_queued(+1)
        return p

    def _ended(self, p: Prediction) -> None:
        if p.started_at is None:
            self._set_queued(-1)
        if p in self._decoders:
            self._decoders.discard(p)
            self._decoding.release()
        self._live.discard(p)
        if not self._live:
            self._idle.set()
        if self.metrics is not None:
            seconds = p.ctx.timings.get("total", 0.0)
            self.metrics.observe(self.name, p.endpoint, p.outcome, seconds, p.ctx.cancel_reason)

    def _set_queued(self, delta: int) -> None:
        self._queued += delta

    def _started(self, p: Prediction) -> None:
        if p.started_at is None and not p.done:
            self._set_queued(-1)
            p.start()

    # decoding -----------------------------------------------------------------------------
    async def decode(self, p: Prediction, payload: Any, *, size: int | None = None) -> Any:
        """Validate ``payload`` against the endpoint's input schema; small plain bodies on the
        loop, the rest in the input pool (so slow inputs never hold a model thread).

        Media are decoded (and URLs fetched) under the request's decode budget, and only by
        the predictions that will run next: a decode permit (what the slots can run, plus one
        per input worker) is taken first and held until the prediction ends, so requests
        waiting further back hold their raw bodies, never decoded pixels."""
        endpoint = self.spec.endpoints[p.endpoint]
        if endpoint.input_model is None:
            p.input = payload
            return payload
        check = self._checker(endpoint, payload)
        if endpoint.has_media:
            p.ctx.stage = "while waiting in the queue"
            await self._decoding.acquire()  # held until the prediction ends
            self._decoders.add(p)
            value = await self.in_input_pool(check)
        elif (size or 0) > INLINE_VALIDATION_BYTES:
            value = await self.in_input_pool(check)
        else:
            value = check()
        p.input = value
        return value

    async def validate(
        self, endpoint: EndpointSpec, payload: Any, *, size: int | None = None
    ) -> Any:
        """Check ``payload`` against ``endpoint``'s input schema without admitting or running
        anything: a job's input is refused (422) when it is submitted, not when it runs.
        Media are decoded in the input pool and dropped; the job decodes them again."""
        if endpoint.input_model is None:
            return payload
        check = self._checker(endpoint, payload)
        if endpoint.has_media or (size or 0) > INLINE_VALIDATION_BYTES:
            return await self.in_input_pool(check)
        return check()

    def _checker(self, endpoint: EndpointSpec, payload: Any) -> Callable[[], Any]:
        """The validation of ``payload`` (raises InputError naming the field), to run where
        the caller decides."""
        model = endpoint.input_model
        assert model is not None
        if not isinstance(payload, dict):
            error = InputError(
                f"expected a JSON object with the fields of {model.__name__}, "
                f"got {type(payload).__name__}",
                field="body",
            )
            try:  # pydantic's own words too, for adapters that report them
                model.model_validate(payload)
            except ValidationError as exc:
                error.details = pydantic_errors(exc).details
            raise error
        media = self.config.media
        context = {"media": media, "budget": DecodeBudget(media) if endpoint.has_media else None}

        def check() -> Any:
            try:
                return model.model_validate(payload, context=context)
            except ValidationError as exc:
                raise pydantic_errors(exc, model=model) from None

        return check

    async def in_input_pool(self, fn: Callable[[], Any]) -> Any:
        """Run input work (parsing, fetching, decoding) in the bounded input pool."""
        return await asyncio.get_running_loop().run_in_executor(self._inputs, fn)

    # running ------------------------------------------------------------------------------
    async def run(self, p: Prediction, value: Any) -> Any:
        """Run one validated input; the output, or an async iterator of chunks for a
        streaming endpoint (the prediction ends with the stream). Errors are ImpastoErrors;
        an abort raises CancelledError, which the owner turns into ``ctx.error()``."""
        endpoint = self.spec.endpoints[p.endpoint]
        if self.state != "ready":
            await self._wait_loaded(p)
        p.ctx.stage = ""
        try:
            if endpoint.preprocess:
                value = await self.calls.invoke(endpoint.preprocess, value, p.ctx)
            if endpoint.streams:
                if endpoint.postprocess:
                    raise self.calls.definition_error(STREAM_POSTPROCESS, p.ctx)
                return await self._stream(endpoint, value, p)
            if not endpoint.slotted:  # beside the predictions, as pre/postprocess run
                self._started(p)
                value = await self.calls.invoke(endpoint.call, value, p.ctx)
            elif self._batches(endpoint):
                value = await self._batcher(endpoint).submit(value, p)
            else:
                slots = self._shared if endpoint.batches_itself else self._slots
                value = await self._in_slot(endpoint.call, value, p, slots)
            if is_stream(value):  # a generator returned (not yielded) streams too
                if endpoint.postprocess:
                    raise self.calls.definition_error(STREAM_POSTPROCESS, p.ctx)
                return await self._drain(value, p, slotted=endpoint.slotted)
            if endpoint.postprocess:
                if isinstance(value, Response):
                    raise self.calls.definition_error(RESPONSE_POSTPROCESS, p.ctx)
                value = await self.calls.invoke(endpoint.postprocess, value, p.ctx)
                if is_stream(value):
                    return await self._drain(value, p, slotted=False)
            return value
        except (ImpastoError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self.calls.model_error(exc, p.ctx) from exc

    def _batches(self, endpoint: EndpointSpec) -> bool:
        # A batchable method only takes lists, so it always goes through the queue (a batch
        # of one when batching is off); predict + predict_batch can skip it.
        if endpoint.batch_call is None:
            return False
        return self.config.batching.enabled or endpoint.call is endpoint.batch_call

    async def acquire(self, p: Prediction, slots: Slots | None = None) -> None:
        """Wait for a model slot (the deadline or a cancel aborts the wait)."""
        p.ctx.stage = "while waiting in the queue"
        await (slots or self._slots).acquire()
        self._busy += 1
        p.ctx.stage = ""

    def release(self, _: Any = None, slots: Slots | None = None) -> None:
        self._busy -= 1
        (slots or self._slots).release()

    async def _in_slot(self, call: CallSpec, value: Any, p: Prediction, slots: Slots) -> Any:
        await self.acquire(p, slots)
        self._started(p)
        release = partial(self.release, slots=slots)
        if call.is_async:  # an abort cancels the coroutine itself: the slot frees at once
            token = logs.enter((p.ctx,))
            try:
                return await call.bind(self.model, value, p.ctx)()
            finally:
                logs.leave(token)
                release()
        work = self.calls.submit(logs.call_in((p.ctx,), call.bind(self.model, value, p.ctx)))
        # A thread cannot be stopped: it keeps its slot until it returns, whatever the
        # caller does, so predict_concurrency always bounds what runs.
        work.add_done_callback(release)
        result = await awaited(work)
        return await result if inspect.isawaitable(result) else result

    def _batcher(self, endpoint: EndpointSpec) -> BatchQueue:
        batcher = self._batchers.get(endpoint.name)
        if batcher is not None:
            return batcher
        cfg = self.config.batching
        call = endpoint.batch_call
        assert call is not None

        async def run(values: list[Any], batch: list[Prediction]) -> list[Any]:
            for p in batch:
                self._started(p)
            if self.metrics is not None:
                self.metrics.observe_batch(self.name, endpoint.name, len(values))
            contexts = [p.ctx for p in batch]
            return await self.calls.invoke(
                call, values, contexts if call.context_param == "contexts" else contexts[0]
            )

        batcher = BatchQueue(
            run,
            max_batch_size=cfg.max_batch_size if cfg.enabled else 1,
            max_wait_ms=cfg.max_wait_ms,
            max_batch_pixels=cfg.max_batch_pixels,
            key=endpoint.batch_key,
            cost=endpoint.batch_cost,
            acquire=self._slots.acquire,
            release=self._slots.release,
            on_busy=self._batch_busy,
        )
        self._batchers[endpoint.name] = batcher
        return batcher

    def _batch_busy(self, delta: int) -> None:
        self._busy += delta

    # streaming ----------------------------------------------------------------------------
    async def _stream(self, endpoint: EndpointSpec, value: Any, p: Prediction) -> Any:
        """Take a slot, run the generator to its first chunk (an error or timeout before it
        is a status, not a broken stream) and hand back an async iterator that holds the slot
        until it ends or is closed; the prediction ends with it."""
        if endpoint.slotted:
            await self.acquire(p)
        self._started(p)
        try:
            gen = await self.calls.invoke(endpoint.call, value, p.ctx)
        except BaseException:
            if endpoint.slotted:
                self.release()
            raise
        return await self._drain(gen, p, slotted=endpoint.slotted, acquired=True)

    async def _drain(
        self, gen: Any, p: Prediction, *, slotted: bool, acquired: bool = False
    ) -> AsyncIterator[Any]:
        """The chunks of a generator the model made, as an async iterator that owns a slot
        (taken now unless ``acquired``; none when not ``slotted``) until the stream ends."""
        if slotted and not acquired:
            await self.acquire(p)
        return await drain(  # owns the slot from here, and frees it however the stream ends
            gen,
            p,
            submit=self.calls.submit,
            release=self.release if slotted else _no_release,
            gap=self.config.runtime.streaming_read_timeout,
            model_error=self.calls.model_error,
        )

    # in-process ---------------------------------------------------------------------------
    async def predict(
        self,
        payload: Any,
        endpoint: str | None = None,
        *,
        request_id: str | None = None,
        output: OutputPrefs | None = None,
        on_event: Callable[[Any], None] | None = None,
    ) -> Any:
        """One prediction in-process through the same steps as every route (see
        :func:`impasto.inprocess.predict`)."""
        from .inprocess import predict

        return await predict(
            self, payload, endpoint, request_id=request_id, output=output, on_event=on_event
        )

    # lifecycle ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "in_flight": len(self._live),
            "waiting": self._queued,
            "decoded": len(self._decoders),
            "running": self._busy,
            "batch_pending": {name: b.pending for name, b in self._batchers.items()},
        }

    @property
    def idle(self) -> bool:
        """No prediction in flight: nothing pins the loaded model."""
        return not self._live

    async def wait_idle(self) -> None:
        """Until no prediction is in flight."""
        await self._idle.wait()

    async def unload(self) -> bool:
        """Drop the loaded model so that its memory can go to another (least recently used
        eviction); it loads again on its next request. Only an idle model is unloaded (False
        otherwise): in-flight predictions pin it. A request admitted meanwhile waits for the
        reload. The model's own ``unload()``, if it has one, runs first."""
        if self.state != "ready" or self._live or self.closing:
            return False
        self.loading.begin_unload()  # requests admitted from now on wait for the reload
        for slots in (self._slots, self._shared):
            for _ in range(slots.size):  # a thread abandoned by its prediction keeps its slot
                await slots.acquire()
            for _ in range(slots.size):
                slots.release()
        await self.loading.unload()
        return True

    def stop_admitting(self) -> None:
        """From now on ``admit`` answers 503 ``shutting_down``; in-flight work goes on."""
        self.closing = True

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for in-flight predictions, then abort the rest with
        reason ``shutdown`` (their clients get 503 ``shutting_down``). Returns how many were
        aborted."""
        self.stop_admitting()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        left = [p for p in self._live if not p.done]
        for p in left:
            p.abort("shutdown")
        return len(left)

    async def aclose(self) -> None:
        self.closing = True
        for p in list(self._live):
            p.abort("shutdown")
        for batcher in self._batchers.values():
            await batcher.aclose()
        self.loading.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._inputs.shutdown(wait=False, cancel_futures=True)


def _no_release() -> None:
    """A stream that holds no model slot has none to free."""


__all__ = ["PredictTimeout", "Runner", "is_stream"]
