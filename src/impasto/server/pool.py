"""Which models are loaded: all at start by default; lazy ones on their first request; at
most ``max_loaded`` at once, the least recently used idle one evicted to make room.

A GPU holds more models than fit at once this way, as multi-model endpoints do. The pool
only starts and stops runners (:meth:`Runner.start`, :meth:`Runner.unload`); admission
never waits on it. A request for a model that is not loaded is admitted at once (or
refused at once: 429 when its queue is full) and waits, under its deadline, for the load.
Loads and evictions are decided one at a time, so ``max_loaded`` always holds; a model with
predictions in flight is never evicted: the load waits until one of the loaded models is
idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from ..errors import ConfigError
from ..runner import Runner

log = logging.getLogger("impasto.server")


class LoadPool:
    """Starts and evicts the runners of one server."""

    def __init__(
        self, runners: Iterable[Runner], *, lazy: Iterable[str] = (), max_loaded: int | None = None
    ) -> None:
        self.runners = list(runners)
        self.lazy = frozenset(lazy)
        self.max_loaded = max_loaded
        unknown = self.lazy - {r.name for r in self.runners}
        if unknown:
            raise ConfigError(f"lazy models not served: {', '.join(sorted(unknown))}")
        eager = [r for r in self.runners if r.name not in self.lazy]
        if max_loaded is not None and len(eager) > max_loaded:
            raise ConfigError(
                f"max_loaded is {max_loaded} but {len(eager)} models load at start "
                f"({', '.join(r.name for r in eager)}); mark some `lazy: true`",
                field="max_loaded",
            )
        self._resident: set[Runner] = set()  # started and not unloaded since
        self._lock = asyncio.Lock()
        self._wanted: dict[str, asyncio.Task] = {}  # loads asked for, waiting for room

    def on_demand(self, runner: Runner) -> bool:
        """Whether ``runner`` loads when a request asks for it (lazy, or evictable)."""
        return runner.name in self.lazy or self.max_loaded is not None

    def start(self, on_loaded: Callable[[Runner], None] | None = None) -> list[asyncio.Task]:
        """Start loading every eager model; lazy ones wait for a request."""
        tasks = []
        for runner in self.runners:
            if runner.name in self.lazy:
                runner.on_demand = self.demand
                continue
            task = self._start(runner)
            if self.on_demand(runner):  # evictable: reloads on demand once its first load ends
                task.add_done_callback(lambda _t, r=runner: setattr(r, "on_demand", self.demand))
            if on_loaded is not None:
                task.add_done_callback(lambda _t, r=runner: on_loaded(r))
            tasks.append(task)
        return tasks

    def _start(self, runner: Runner) -> asyncio.Task:
        self._resident.add(runner)
        task = runner.start()
        task.add_done_callback(lambda _t: None if runner.ready else self._resident.discard(runner))
        return task

    @property
    def waiting(self) -> list[str]:
        """Models asked for that wait for room (another model to go idle and be evicted)."""
        return [name for name, task in self._wanted.items() if not task.done()]

    def demand(self, runner: Runner) -> None:
        """Load ``runner`` for a request that was just admitted (called by its admission)."""
        if runner.name not in self._wanted and not runner.closing:
            task = asyncio.get_running_loop().create_task(self._bring_in(runner))
            self._wanted[runner.name] = task

    async def _bring_in(self, runner: Runner) -> None:
        try:
            async with self._lock:  # evictions happen under it: none is half done here
                if runner.state not in ("pending", "unloaded"):
                    return
                if self.max_loaded is not None:
                    await self._make_room(runner)
                log.info("model %s: loading on demand", runner.name)
                self._start(runner)
        except Exception:
            log.exception("model %s: loading on demand failed", runner.name)
        finally:
            self._wanted.pop(runner.name, None)

    async def _make_room(self, runner: Runner) -> None:
        """Unload least recently used idle models until one more fits (waiting, while every
        loaded model has predictions in flight, for one to finish them)."""
        assert self.max_loaded is not None
        while len(self._resident - {runner}) >= self.max_loaded:
            idle = [r for r in self._resident if r is not runner and r.ready and r.idle]
            if not idle:
                busy = [r for r in self._resident if r is not runner]
                log.info(
                    "model %s waits for room: %s in use (max_loaded=%d)",
                    runner.name,
                    ", ".join(r.name for r in busy),
                    self.max_loaded,
                )
                await _any_idle(busy)
                continue
            victim = min(idle, key=lambda r: r.last_used)
            log.info("evicting model %s (least recently used) for %s", victim.name, runner.name)
            if await victim.unload():
                self._resident.discard(victim)

    async def aclose(self) -> None:
        for task in list(self._wanted.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _any_idle(runners: list[Runner]) -> None:
    """Return once one of ``runners`` has no prediction in flight (or a load has ended)."""
    waits = [asyncio.ensure_future(r.wait_idle() if r.ready else r.wait_loaded()) for r in runners]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
