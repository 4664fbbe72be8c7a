"""Model slots: a FIFO counting semaphore with a fast path.

``asyncio.Semaphore.acquire`` scans its waiters on every call; a free slot here costs one
comparison. A released slot is handed straight to the oldest waiter, so nobody overtakes
the queue, and a waiter canceled just as it was handed a slot passes it on.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """``size`` slots; :meth:`acquire` waits for one in arrival order."""

    __slots__ = ("_waiters", "free", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was canceled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the oldest waiter directly
                return
        self.free += 1
