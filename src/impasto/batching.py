"""A small batch queue: merge concurrent items that share a key into one model call.

Two knobs bound a batch, ``max_batch_size`` items and ``max_batch_pixels``, and one bounds
the wait, ``max_wait_ms``. The model's batch call must return exactly one output per input;
a mismatch fails every caller in that batch with a clear error rather than mixing results.

Each item is a :class:`~impasto.prediction.Prediction`: a batch forms only once a model slot
is free, an item canceled while it waits (deadline, disconnect, cancel) is dropped before
the batch runs and never reaches the model, and ``run`` starts the predictions it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelError
from .prediction import Prediction


@dataclass
class _Item:
    value: Any
    prediction: Prediction
    key: Hashable
    items: int
    pixels: int
    future: asyncio.Future = field(repr=False)


BatchFn = Callable[[list[Any], list[Prediction]], Awaitable[list[Any]]]


class BatchQueue:
    """Collects items per batch key and hands full (or timed-out) batches to ``run``."""

    def __init__(
        self,
        run: BatchFn,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_batch_pixels: int,
        key: Callable[[Any], Hashable] | None = None,
        cost: Callable[[Any], tuple[int, int]] | None = None,
        acquire: Callable[[], Awaitable[Any]] | None = None,
        release: Callable[[], None] | None = None,
        on_busy: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_batch_pixels = max_batch_pixels
        self._key = key or (lambda _value: None)
        self._cost = cost or (lambda _value: (1, 0))
        self._pending: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        # A batch forms only once a model slot is free, so items queue up while it is busy.
        if acquire is None or release is None:
            slots = asyncio.Semaphore(1)
            acquire, release = slots.acquire, slots.release
        self._acquire, self._release = acquire, release
        self._on_busy = on_busy or (lambda _delta: None)
        self._running: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, value: Any, prediction: Prediction) -> Any:
        """Queue one input and wait for its own output."""
        items, pixels = self._cost(value)
        item = _Item(
            value,
            prediction,
            self._key(value),
            max(1, items),
            max(0, pixels),
            asyncio.get_running_loop().create_future(),
        )
        self._pending.append(item)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="impasto-batcher")
        try:
            return await asyncio.shield(item.future)
        except asyncio.CancelledError:
            # nobody awaits this future any more; retrieve its outcome so none is reported lost
            item.future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if item in self._pending:
                self._pending.remove(item)
            raise

    async def aclose(self) -> None:
        for task in [self._task, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _take(self) -> list[_Item]:
        """The oldest item plus the following ones with its key, within both budgets."""
        first = self._pending[0]
        batch, items, pixels = [], 0, 0
        for item in list(self._pending):
            if item.key != first.key:
                continue
            if batch and (
                items + item.items > self.max_batch_size
                or pixels + item.pixels > self.max_batch_pixels
            ):
                break
            batch.append(item)
            items += item.items
            pixels += item.pixels
        for item in batch:
            self._pending.remove(item)
        return batch

    def _full(self) -> bool:
        first = self._pending[0]
        same = [i for i in self._pending if i.key == first.key]
        return (
            sum(i.items for i in same) >= self.max_batch_size
            or sum(i.pixels for i in same) >= self.max_batch_pixels
        )

    async def _loop(self) -> None:
        while self._pending:
            await self._acquire()
            self._on_busy(+1)
            handed_off = False
            try:
                batch = await self._fill()
                live = []
                for item in batch:
                    ctx = item.prediction.ctx
                    if ctx.cancelled:  # canceled while queued: it never reaches the model
                        if not item.future.done():
                            item.future.set_exception(ctx.error())
                    else:
                        live.append(item)
                if live:
                    task = asyncio.create_task(self._dispatch(live))
                    self._running.add(task)
                    task.add_done_callback(self._finished)
                    handed_off = True
            finally:
                if not handed_off:
                    self._free()

    def _free(self) -> None:
        self._on_busy(-1)
        self._release()

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._free()

    async def _fill(self) -> list[_Item]:
        """Wait up to ``max_wait`` (from now) for the oldest item's batch to fill, then take it."""
        if not self._pending:
            return []
        loop = asyncio.get_running_loop()
        oldest = self._pending[0]
        deadline = loop.time() + self.max_wait
        while not self._full():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # builtin only from 3.11
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            if not self._pending or self._pending[0] is not oldest:
                break
        return self._take() if self._pending else []

    async def _dispatch(self, batch: list[_Item]) -> None:
        try:
            outputs = await self._run([i.value for i in batch], [i.prediction for i in batch])
            if not isinstance(outputs, list | tuple) or len(outputs) != len(batch):
                got = len(outputs) if isinstance(outputs, list | tuple) else type(outputs).__name__
                raise ModelError(
                    f"the batch call returned {got} outputs for {len(batch)} inputs; "
                    "it must return a list with one output per input"
                )
        except BaseException as exc:  # every caller learns what happened to its item
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for item, out in zip(batch, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(out)
