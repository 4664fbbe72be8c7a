"""A streaming endpoint's output as an async iterator that owns the model slot.

The runner primes the user's generator (sync generators step in a model thread, async ones
on the loop) and hands back an iterator that yields its chunks, bounds the gap between them
(``runtime.streaming_read_timeout``) and the whole stream (the deadline), and ends the
prediction when the stream ends: exhausted (``succeeded``), failed (``failed``, the error
reaches the writer so SSE can send an ``error`` event), or closed early by the writer (the
client left: ``canceled``). The slot is freed then, or when a thread still inside ``next()``
returns, never earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import ImpastoError, PredictTimeout
from .prediction import Prediction, uncancel

_END = object()


async def drain(
    gen: Any,
    p: Prediction,
    *,
    submit: Callable[[Callable[[], Any]], asyncio.Future],
    release: Callable[[], None],
    gap: float,
    model_error: Callable[[BaseException, Any], ImpastoError],
) -> AsyncIterator[Any]:
    """Prime ``gen`` (its first chunk is read now, so an early error is a status) and
    return the iterator of its chunks; see the module docstring for who ends what."""
    stream = _Stream(gen, p, submit, release, gap, model_error)
    first = await stream.first()
    return stream.iterate(first)


class _Stream:
    def __init__(
        self,
        gen: Any,
        p: Prediction,
        submit: Callable[[Callable[[], Any]], asyncio.Future],
        release: Callable[[], None],
        gap: float,
        model_error: Callable[[BaseException, Any], ImpastoError],
    ) -> None:
        from . import logs

        self.gen = gen
        self.p = p
        self.submit = submit
        self.release = release
        self.gap = gap
        self.model_error = model_error
        self.busy: asyncio.Future | None = None  # a sync generator's next() in a thread
        self.is_async = inspect.isasyncgen(gen)
        if not self.is_async:
            self.step = logs.call_in((p.ctx,), functools.partial(next, iter(gen), _END))
        self.closed = False

    async def next_chunk(self) -> Any:
        ctx = self.p.ctx
        remaining = ctx.remaining()
        timeout = self.gap if remaining is None else min(self.gap, remaining)
        if self.is_async:
            from . import logs

            with logs.running((ctx,)):
                return await asyncio.wait_for(anext(self.gen, _END), timeout)
        self.busy = self.submit(self.step)
        return await asyncio.wait_for(asyncio.shield(self.busy), timeout)

    async def first(self) -> Any:
        try:
            return await self.next_chunk()
        except BaseException as exc:
            await self.close()
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc

    def _error(self, exc: BaseException) -> BaseException:
        """What an exception out of the generator (or its wait) means for the client."""
        if isinstance(exc, asyncio.TimeoutError) and _deadline_hit(exc):
            if self.p.ctx.expired:
                self.p.ctx.cancel("timeout")
                return self.p.ctx.error()
            return PredictTimeout(
                f"the stream stalled: no chunk within {self.gap} s (runtime.streaming_read_timeout)"
            )
        if isinstance(exc, Exception) and not isinstance(exc, ImpastoError):
            return self.model_error(exc, self.p.ctx)  # the model's own TimeoutError included
        return exc

    async def _next_bound(self) -> Any:
        """The next chunk, with this task bound so that an abort interrupts the wait."""
        self.p.bind(asyncio.current_task())
        try:
            return await self.next_chunk()
        finally:
            self.p.bind(None)

    async def iterate(self, chunk: Any) -> AsyncIterator[Any]:
        p = self.p
        error: BaseException | None = None
        try:
            while chunk is not _END:
                p.chunk(chunk)
                yield chunk
                if p.ctx.cancelled:
                    raise p.ctx.error()
                chunk = await self._next_bound()
        except GeneratorExit:  # the writer closed the stream early: the client is gone
            p.ctx.cancel("disconnected")
            error = p.ctx.error()
            raise
        except asyncio.CancelledError:
            if not p.aborted:  # the server canceled the writer: the client is gone
                p.ctx.cancel("disconnected")
                error = p.ctx.error()
                raise
            uncancel()
            error = p.ctx.error()
            raise error from None
        except BaseException as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            await self.close()
            if error is None:
                p.succeed(None)
            else:
                p.finish(error)

    async def close(self) -> None:
        """Close the generator and free the slot (once a running next() has returned)."""
        if self.closed:
            return
        self.closed = True
        busy = self.busy
        if busy is not None and not busy.done():
            busy.add_done_callback(lambda f: self._end(f))
            return
        if self.is_async:
            with contextlib.suppress(Exception):
                await self.gen.aclose()
        self._end(busy)

    def _end(self, busy: asyncio.Future | None) -> None:
        if busy is not None and not busy.cancelled():
            busy.exception()  # retrieved: an abandoned step's error is not reported as lost
        close = getattr(self.gen, "close", None)  # a sync generator (an async one is closed)
        if close is not None and not self.is_async:
            with contextlib.suppress(Exception):
                close()
        self.release()


def _deadline_hit(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, asyncio.CancelledError)
