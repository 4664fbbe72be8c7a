"""A model's load state machine: build it, run its ``load()`` once, drop it on eviction.

::

    pending ──load()──> loading ──> ready ──unload()──> unloading ──> unloaded ──load()──> ...
                           └──────> failed

The runner owns one :class:`Loader` and asks it whether requests can run; the loader knows
nothing of requests. While a model is loaded, its package's scope (environment variables,
import folders) is in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ImpastoError
from .spec import ModelSpec

log = logging.getLogger("impasto.runner")


class Loader:
    """One model object's life: built and loaded once, unloaded and loaded again on demand."""

    def __init__(
        self,
        spec: ModelSpec,
        factory: Callable[[], Any],
        *,
        name: str,
        thread: Callable[[Callable[[], Any]], Awaitable[Any]],
        timeout: float | None = None,
        redact: Callable[[str], str] = lambda text: text,
        scope: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        before_load: Callable[[Any], Any] | None = None,
    ) -> None:
        self.spec = spec
        self.name = name
        self._factory = factory
        self._thread = thread  # runs sync user code in a model thread
        self._timeout = timeout
        self._redact = redact
        self._before_load = before_load  # run on the built model before load()
        self._scope = scope or contextlib.nullcontext
        self._served = contextlib.ExitStack()  # the package's scope while the model is loaded
        self.model: Any = None
        self.state = "pending"
        self.error: str | None = None
        self.seconds: float | None = None
        self.started_at: float | None = None  # wall-clock times of the last load
        self.completed_at: float | None = None
        self.done = asyncio.Event()  # set when the current load attempt has ended
        self._task: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start(self) -> asyncio.Task:
        """Begin loading in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self.load(), name=f"impasto-load-{self.name}")
        return self._task

    async def load(self) -> bool:
        """Build the model and run its ``load()`` once; True when it is ready."""
        if self.state not in ("pending", "unloaded"):
            await self.done.wait()
            return self.ready
        self.state = "loading"
        self.started_at, self.completed_at = time.time(), None
        started = time.monotonic()
        try:
            self._served.enter_context(self._scope())
            self.model = await self._thread(self._factory)
            if self._before_load is not None:
                prepared = await self._thread(lambda: self._before_load(self.model))
                if inspect.isawaitable(prepared):
                    await prepared
            if self.spec.has_load:
                work = (
                    self.model.load() if self.spec.load_is_async else self._thread(self.model.load)
                )
                await asyncio.wait_for(work, self._timeout) if self._timeout else await work
        except BaseException as exc:
            self._failed(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return False
        self.seconds = time.monotonic() - started
        self.completed_at = time.time()
        self.state = "ready"
        log.info("model %s loaded in %.2f s", self.name, self.seconds)
        self.done.set()
        return True

    def _failed(self, exc: BaseException) -> None:
        self.state = "failed"
        self.completed_at = time.time()
        if isinstance(exc, asyncio.TimeoutError) and _deadline_hit(exc):
            self.error = f"load() did not finish within {self._timeout} s (runtime.load_timeout_s)"
        else:
            text = exc.message if isinstance(exc, ImpastoError) else f"{type(exc).__name__}: {exc}"
            self.error = self._redact(text)
        if isinstance(exc, ImpastoError):  # impasto's own, clear error: one line
            log.error("model %s failed to load: %s", self.name, self.error)
        elif not isinstance(exc, asyncio.CancelledError):
            log.error(
                "model %s failed to load: %s\n%s",
                self.name,
                self.error,
                self._redact(traceback.format_exc()),
            )
        self.done.set()

    async def healthy(self) -> bool | None:
        """The model's own ``is_healthy()`` once it is loaded (sync methods in a model thread;
        raising counts as False and is logged), or None: no such method, not loaded, or the
        method itself returned None."""
        if not self.ready or "is_healthy" not in self.spec.hooks:
            return None
        try:
            if self.spec.hooks["is_healthy"]:
                result = await self.model.is_healthy()
            else:
                result = await self._thread(self.model.is_healthy)
        except Exception:
            log.exception("model %s: is_healthy() raised; counted as unhealthy", self.name)
            return False
        if result is not None and not result:
            log.warning("model %s: health check failed", self.name)
        return None if result is None else bool(result)

    def begin_unload(self) -> None:
        """``ready -> unloading``: requests admitted from now on wait for the next load."""
        self.state = "unloading"
        self.done = asyncio.Event()

    async def unload(self) -> None:
        """Drop the model (its own ``unload()`` first, if it has one) and give its memory
        back; the next :meth:`load` builds it again."""
        model, self.model = self.model, None
        try:
            if callable(getattr(model, "unload", None)):
                await self._thread(model.unload)
        except Exception:
            log.exception("model %s: unload() raised; dropping it anyway", self.name)
        finally:
            del model
            self._served.close()
            self._served = contextlib.ExitStack()
            self._task = None
            self.seconds = None
            self.state = "unloaded"
            _free_memory()
        log.info("model %s unloaded", self.name)

    def close(self) -> None:
        """Stop a load in progress and leave the package's scope."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._served.close()


def _free_memory() -> None:
    """Give an unloaded model's memory back: Python's, and the GPU cache when torch is in."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _deadline_hit(exc: BaseException) -> bool:
    """Whether a TimeoutError is wait_for's own (raised from the cancellation it made) rather
    than one the model raised. (``asyncio.TimeoutError`` is the builtin only from 3.11.)"""
    return isinstance(exc.__cause__, asyncio.CancelledError)
