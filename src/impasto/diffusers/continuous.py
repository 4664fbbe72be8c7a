"""Step-level continuous batching for UNet diffusion pipelines (SD 1.x/2.x, SDXL).

Static batching runs a batch from its first denoising step to its last; a request arriving
meanwhile waits for all of it. Here one step loop owns the UNet and, at every step, runs a
single batched forward over every active request, whatever its step count, scheduler,
guidance scale or task. A new request joins at the next step after its prompt encoding; a
finished one leaves at once and is decoded together with the others finishing at that step;
a canceled or timed-out one leaves at its next step.

How a request runs (see :mod:`.stepper`): diffusers' own pipeline ``__call__`` in a thread
of its own, on a copy of the task pipeline with its own scheduler, whose UNet and VAE are
proxies handing their calls to the loop. The loop waits until every active request has
either asked for its next UNet forward or left (the scheduler steps in between take
microseconds to milliseconds), runs the forwards batched by shape and adapter set, and
hands each request its rows back. Outputs therefore equal the same request run alone.

Active-set limits: ``max_batch_size`` images and ``max_batch_pixels`` pixels. Beyond them
requests wait in arrival order (a request too large for the limits alone still runs, by
itself). The model lock is held by the loop for each step and by a request while it encodes
its prompt, so the pipeline is never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..batching import BatchQueue
from ..config import DiffusersConfig
from ..context import RequestContext
from ..errors import ImpastoError, NotFound, NotReady
from .calls import batch_cost, batch_key, pipeline_kwargs
from .model import DiffusersModel, invoke_pipeline
from .pipelines import PipelineSet
from .progress import StepHook
from .schemas import ImageResult
from .stepper import (
    BUSY,
    DONE,
    RUNNING,
    WAITING,
    Call,
    Member,
    request_pipeline,
    run_decode_group,
    run_unet_group,
)

log = logging.getLogger("impasto.diffusers.continuous")

DRIVEN_PIPELINES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
    }
)
"""Pipeline classes whose ``__call__`` the engine is known to reproduce exactly."""


def config_reason(cfg: DiffusersConfig, class_name: str | None) -> str | None:
    """Why the configured pipeline cannot run under the engine, known before loading it
    (``class_name``: None when not known yet), or None."""
    if cfg.cpu_offload:
        return "cpu_offload moves modules in and out around each pipeline call"
    if class_name is not None and class_name not in DRIVEN_PIPELINES:
        return f"it drives {', '.join(sorted(DRIVEN_PIPELINES))}, not {class_name}"
    return None


def unsupported_reason(cfg: DiffusersConfig, pset: PipelineSet) -> str | None:
    """Why the loaded pipelines cannot run under the engine, or None when they can."""
    reason = config_reason(cfg, None)
    if reason is not None:
        return reason
    for task, pipe in pset.pipes.items():
        if task == "img2vid":
            continue
        name = type(pipe).__name__
        if name not in DRIVEN_PIPELINES:
            return f"it drives {', '.join(sorted(DRIVEN_PIPELINES))}, not {name}"
        if type(pipe.unet).__name__ != "UNet2DConditionModel":
            return f"{name} has a {type(pipe.unet).__name__}, not a UNet2DConditionModel"
        if type(pipe.vae).__name__ != "AutoencoderKL":
            return f"{name} has a {type(pipe.vae).__name__} VAE, not an AutoencoderKL"
    return None


@dataclass(frozen=True)
class Waiter:
    """One request in :func:`static_queue` (the queue reads only a prediction's ``ctx``)."""

    ctx: RequestContext


def static_queue(model: DiffusersModel, task: str) -> BatchQueue:
    """Static batching for one task of a model whose endpoints are per-request (continuous
    mode) but whose loaded pipeline the engine cannot drive; submit :class:`Waiter` items."""

    async def run(values: list[Any], waiters: list[Waiter]) -> list[Any]:
        ctxs = [w.ctx for w in waiters]
        return await asyncio.to_thread(model.generate_images, task, values, ctxs)

    cfg = model.batching
    return BatchQueue(
        run,
        max_batch_size=cfg.max_batch_size if cfg.enabled else 1,
        max_wait_ms=cfg.max_wait_ms,
        max_batch_pixels=cfg.max_batch_pixels,
        key=partial(batch_key, task),
        cost=partial(batch_cost, model.cfg),
    )


@dataclass(frozen=True)
class EngineEvent:
    """What the engine did: ``admit`` (a place in the active set), ``join`` (first UNet
    call), ``step`` (one batched UNet step), ``decode`` or ``leave``."""

    kind: str
    step: int  # the loop's step counter when it happened
    request_ids: tuple[str, ...]
    detail: str = ""  # for ``leave``: done, canceled or error


@dataclass(eq=False)
class _Ticket:
    """A request waiting for room in the active set."""

    ctx: RequestContext
    cost: tuple[int, int]
    grant: Callable[[], None]
    granted: bool = False
    created: float = field(default_factory=time.monotonic)


class ContinuousEngine:
    """The step loop for one :class:`DiffusersModel` (it owns the model's UNet and VAE).

    ``await engine.submit(task, input, ctx)`` from the event loop, or ``engine.run(...)``
    from a thread; both return the same :class:`ImageResult` the static path builds.
    """

    def __init__(
        self,
        model: DiffusersModel,
        *,
        max_batch_size: int = 8,
        max_batch_pixels: int = 8 * 512 * 512,
        history: int = 512,
    ) -> None:
        self.model = model
        self.pset = model._loaded()
        self.max_batch_size = max_batch_size
        self.max_batch_pixels = max_batch_pixels
        self.step = 0  # UNet steps run so far
        self.rows = 0  # UNet batch rows run so far (for the mean batch size)
        self.history: deque[EngineEvent] = deque(maxlen=history)
        self.observers: list[Callable[[EngineEvent], None]] = []
        self._lock = model._lock  # the pipeline lock the static path takes too
        self._cond = threading.Condition()
        self._members: list[Member] = []
        self._queue: deque[_Ticket] = deque()
        self._load = [0, 0]  # images, pixels of admitted requests
        self._closed = False
        self._pool = ThreadPoolExecutor(max_batch_size + 2, thread_name_prefix="impasto-request")
        self._thread = threading.Thread(target=self._loop, name="impasto-steps", daemon=True)
        self._thread.start()

    # -- public seam ----------------------------------------------------------------------
    async def submit(self, task: str, input: Any, ctx: RequestContext) -> ImageResult:
        """Serve one image request; waits for room in the active set without a thread."""
        loop = asyncio.get_running_loop()
        ticket = self._ticket(input, ctx)
        future = loop.create_future()
        ticket.grant = partial(loop.call_soon_threadsafe, _resolve, future)
        self._enqueue(ticket)
        try:
            while not future.done():
                if ctx.cancelled:
                    self._withdraw(ticket)
                    ctx.check()
                await asyncio.wait([future], timeout=_poll(ctx))
            ctx.stage = ""
            self._check_open()
            # in the caller's context: the model's log lines stay tagged with its request
            serve = partial(contextvars.copy_context().run, self._serve, ticket, task, input)
            work = loop.run_in_executor(self._pool, serve)
        except BaseException:
            self._withdraw(ticket)
            raise
        try:
            # shielded: once started, the thread runs to its end and frees its place itself
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # the prediction's owner marked the true reason before canceling this task; a
            # bare cancel (no owner) still stops the thread at its next step
            ctx.cancel("canceled")
            work.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    def run(self, task: str, input: Any, ctx: RequestContext) -> ImageResult:
        """Serve one image request from a thread (blocks until it is done)."""
        ticket = self._ticket(input, ctx)
        granted = threading.Event()
        ticket.grant = granted.set
        self._enqueue(ticket)
        try:
            while not granted.wait(_poll(ctx)):
                if ctx.cancelled:
                    self._withdraw(ticket)
                    ctx.check()
            ctx.stage = ""
            self._check_open()
        except BaseException:
            self._withdraw(ticket)
            raise
        return self._serve(ticket, task, input)

    def stats(self) -> dict[str, Any]:
        """Active and queued requests, UNet steps and rows run so far, the mean UNet batch."""
        with self._cond:
            return {
                "active": len(self._members),
                "queued": len(self._queue),
                "steps": self.step,
                "rows": self.rows,
                "mean_rows": self.rows / self.step if self.step else 0.0,
            }

    def close(self) -> None:
        """Stop the loop; calls still waiting for it fail with NotReady."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- admission ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise NotReady("the continuous batching engine is stopped")

    def _ticket(self, input: Any, ctx: RequestContext) -> _Ticket:
        self._check_open()
        width, height = self.model._size(self.pset, input)  # 422 for too many pixels, first
        images = int(getattr(input, "num_images", 1))
        ctx.stage = "while waiting in the queue"  # for a timeout's message
        return _Ticket(ctx, (images, images * width * height), lambda: None)

    def _enqueue(self, ticket: _Ticket) -> None:
        with self._cond:
            self._queue.append(ticket)
            self._grant()

    def _withdraw(self, ticket: _Ticket) -> None:
        """A waiting request gave up: leave the queue, or give back a place just granted."""
        with self._cond:
            if ticket in self._queue:
                self._queue.remove(ticket)
            elif ticket.granted:
                ticket.granted = False
                self._release(ticket.cost)
            self._grant()

    def _grant(self) -> None:
        """Admit queued requests in arrival order while the active set has room."""
        while self._queue:
            head = self._queue[0]
            images, pixels = head.cost
            empty = self._load == [0, 0]
            fits = (
                self._load[0] + images <= self.max_batch_size
                and self._load[1] + pixels <= self.max_batch_pixels
            )
            if not (empty or fits):
                return
            self._queue.popleft()
            self._load[0] += images
            self._load[1] += pixels
            head.granted = True
            try:
                head.grant()
            except RuntimeError:  # its event loop is gone; nobody waits for this one
                self._release(head.cost)
                head.granted = False
            else:
                self._emit("admit", (head.ctx.request_id,))

    def _release(self, cost: tuple[int, int]) -> None:
        self._load[0] -= cost[0]
        self._load[1] -= cost[1]

    # -- one request (its own thread) -----------------------------------------------------
    def _serve(self, ticket: _Ticket, task: str, input: Any) -> ImageResult:
        ctx = ticket.ctx
        ctx.timings["queue_s"] = ctx.timings.get("queue_s", 0.0) + (
            time.monotonic() - ticket.created
        )
        loras = tuple((lo.ref, lo.scale) for lo in getattr(input, "loras", ()))
        member = Member(ctx, ticket.cost, loras, self._submit, self._lock)
        with self._cond:
            ticket.granted = False  # from here on the member gives the place back
            self._members.append(member)
        outcome = "error"
        try:
            call = partial(self._pipeline, member)
            (result,) = self.model._run_images(task, [input], [ctx], call=call)
            outcome = "done"
            return result
        except ImpastoError:
            outcome = "canceled" if ctx.cancelled else "error"
            raise
        finally:
            member.leave_prep()
            with self._cond:
                self._members.remove(member)
                self._release(member.cost)
                self._grant()
                self._cond.notify_all()
            self._emit("leave", (member.request_id,), outcome)

    def _pipeline(
        self,
        member: Member,
        task: str,
        scheduler: str | None,
        kwargs: dict[str, Any],
        hook: StepHook,
        loras: list[tuple[str, float]],
    ) -> tuple[Any, Any, float]:
        """``DiffusersModel._call`` for one member: its own pipeline copy and scheduler."""
        hook.raise_if_all_cancelled()
        base = self.pset.pipes.get(task)
        if base is None:
            raise NotFound(f"task {task!r} is not served by this model")
        shared = self.pset.scheduler(scheduler or self.pset.default_scheduler)  # validates
        pipe = request_pipeline(base, type(shared).from_config(shared.config), member)
        call = pipeline_kwargs(pipe, kwargs, hook)
        member.enter_prep()
        assert self.model.loras is not None
        member.prep.enter_context(self.model.loras.applied(loras))
        started = time.perf_counter()
        out = invoke_pipeline(pipe, call)
        return out, pipe, time.perf_counter() - started

    def _submit(self, call: Call) -> Any:
        """A member's UNet forward or decode: wait for the loop to run it, return its rows."""
        member = call.member
        member.leave_prep()  # first call: the prompt is encoded, the lock goes to the loop
        with self._cond:
            if self._closed:
                raise NotReady("the continuous batching engine is stopped")
            joined = member.steps == 0 and call.kind == "unet"
            member.call = call
            member.phase = WAITING
            self._cond.notify_all()
        if joined:
            self._emit("join", (member.request_id,))
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    # -- the loop -------------------------------------------------------------------------
    def _ready(self) -> bool:
        """A step can run: someone is waiting and nobody is between two calls."""
        phases = [m.phase for m in self._members]
        return WAITING in phases and BUSY not in phases

    def _loop(self) -> None:
        import torch

        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._ready())
                if self._closed:
                    break
            with self._lock, torch.inference_mode():
                with self._cond:  # taken after the lock: a request done preparing joins now
                    calls = [m.call for m in self._members if m.phase == WAITING]
                    for call in calls:
                        assert call is not None
                        call.member.phase = RUNNING
                try:
                    self._execute([c for c in calls if c is not None])
                except BaseException as exc:  # a bug here must not leave requests hanging
                    log.exception("continuous batching step failed")
                    for call in calls:
                        if call is not None and call.result is None and call.error is None:
                            call.error = exc
            with self._cond:
                for call in calls:
                    assert call is not None
                    ok = call.kind == "decode" and call.error is None
                    call.member.phase = DONE if ok else BUSY
                    call.member.call = None
                for call in calls:
                    assert call is not None
                    call.done.set()
        self._fail_waiting()

    def _execute(self, calls: list[Call]) -> None:
        """Decode this step's finishers, then run the UNet forwards, grouped by key."""
        live = []
        for call in calls:
            if call.member.ctx.cancelled:
                call.error = _cancel_error(call.member.ctx)
            else:
                live.append(call)
        decodes = [c for c in live if c.kind == "decode"]
        forwards = [c for c in live if c.kind == "unet"]
        for group in _groups(decodes):
            self._run(group, partial(run_decode_group, self.pset.base.vae))
            self._emit("decode", tuple(c.member.request_id for c in group))
        if not forwards:
            return
        self.step += 1
        for group in _groups(forwards):
            loras = list(group[0].member.loras)
            assert self.model.loras is not None
            with self.model.loras.applied(loras):
                self._run(group, partial(run_unet_group, self.pset.base.unet))
            self.rows += sum(c.rows for c in group)
        for call in forwards:
            call.member.steps += 1
        self._emit("step", tuple(c.member.request_id for c in forwards))

    @staticmethod
    def _run(group: list[Call], fn: Callable[[list[Call]], None]) -> None:
        try:
            fn(group)
        except BaseException as exc:  # every request in the group learns what happened
            for call in group:
                call.error = exc

    def _fail_waiting(self) -> None:
        with self._cond:
            for member in self._members:
                if member.call is not None and not member.call.done.is_set():
                    member.call.error = NotReady("the continuous batching engine is stopped")
                    member.call.done.set()
            for ticket in self._queue:
                with contextlib.suppress(RuntimeError):
                    ticket.grant()  # the waiter sees the engine closed
            self._queue.clear()

    def _emit(self, kind: str, ids: tuple[str, ...], detail: str = "") -> None:
        event = EngineEvent(kind, self.step, ids, detail)
        self.history.append(event)
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                log.exception("continuous batching observer failed on %s", kind)


def _groups(calls: Sequence[Call]) -> list[list[Call]]:
    groups: dict[Hashable, list[Call]] = {}
    for call in calls:
        groups.setdefault(call.key, []).append(call)
    return list(groups.values())


def _cancel_error(ctx: RequestContext) -> BaseException:
    try:
        ctx.check()
    except ImpastoError as exc:
        return exc
    return NotReady("canceled")  # unreachable: ctx.cancelled was true


def _poll(ctx: RequestContext) -> float:
    """How long a queued request sleeps between looks at its own cancellation."""
    remaining = ctx.remaining()
    return 0.05 if remaining is None else max(0.0, min(0.05, remaining))


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
