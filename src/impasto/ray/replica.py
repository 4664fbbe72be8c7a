"""The model deployment: one replica loads one package once and runs the same runner.

A replica is an actor Ray Serve starts from the package's folder (never a pickled model):
it loads the package, builds a :class:`~impasto.runner.Runner` (slots, batching, streams,
deadlines: everything ``impasto serve`` does) and waits for the model to load before Ray
routes to it. The ingress sends each prediction's raw payload to :meth:`ModelReplica.call`,
which admits, decodes and runs it here, so this replica's runner is the one queue a request
waits in, and answers with a stream of small messages (see :mod:`impasto.ray.wire`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..calls import is_stream
from ..context import Event, OutputPrefs
from ..errors import ImpastoError, NotReady
from ..metrics import Metrics
from ..package import load_package
from ..server.callpath import execute
from ..serving import runner_for
from . import wire
from .secrets import Sealed, with_secrets

log = logging.getLogger("impasto.ray")


def replica_id() -> str:
    """This Ray Serve replica's id (the process id outside Ray, for tests of the class)."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:
        import os

        return f"pid-{os.getpid()}"


class ModelReplica:
    """Loads the package at ``path`` and runs predictions for the ingress."""

    async def __init__(self, path: str, secrets: Sealed | None = None) -> None:
        # secrets resolved where `impasto deploy ray` ran, never in the runtime env
        self.package = package = with_secrets(load_package(path), secrets)
        self.id = replica_id()
        self.metrics = Metrics()
        self.runner = runner_for(package, self.metrics)
        if not await self.runner.load():  # Ray routes to a replica once __init__ returns
            raise NotReady(f"{package.name} failed to load: {self.runner.load_error}")
        log.info("replica %s of %s is ready", self.id, package.name)

    async def check_health(self) -> None:
        """Ray replaces a replica whose health check raises."""
        if self.runner.state != "ready":
            raise NotReady(f"{self.runner.name} is {self.runner.state}")
        if await self.runner.healthy() is False:
            raise NotReady(f"{self.runner.name}: is_healthy() returned False")

    def stats(self) -> dict[str, Any]:
        """The runner's queue and slots (for ``impasto deploy ray --status`` and tests)."""
        return {"replica": self.id, **self.runner.stats()}

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    async def call_once(
        self,
        endpoint: str,
        payload: Any,
        request_id: str | None,
        prefs: OutputPrefs | None,
        timeout_s: float | None,
    ) -> tuple:
        """One prediction nobody watches, in one round trip: ``(replica, message)`` with
        the ``result`` (a stream's chunks gathered: ``chunks``) or the ``error``."""
        runner = self.runner
        try:
            p = runner.admit(
                runner.endpoint(endpoint), request_id=request_id, output=prefs, timeout_s=timeout_s
            )
        except ImpastoError as exc:
            return self.id, wire.error(exc)
        p.bind(asyncio.current_task())
        try:
            with p.cancellation():
                result = await runner.run(p, await runner.decode(p, payload))
                if is_stream(result):  # a generator returned by a plain endpoint
                    async with contextlib.aclosing(result):
                        return self.id, (wire.CHUNKS, [chunk async for chunk in result])
        except ImpastoError as exc:
            p.finish(exc)
            return self.id, wire.error(exc)
        finally:
            p.bind(None)
        p.succeed(result)
        return self.id, (wire.RESULT, result)

    async def call(
        self,
        endpoint: str,
        payload: Any,
        request_id: str | None,
        prefs: OutputPrefs | None,
        timeout_s: float | None,
    ) -> AsyncIterator[tuple]:
        """Admit, decode and run one prediction; yields its messages (``wire``): ``start``,
        the model's events, the result or each chunk, and an ``error`` however it failed.
        Ray cancelling this generator (the client left, the ingress gave up) aborts it."""
        runner = self.runner
        try:
            p = runner.admit(
                runner.endpoint(endpoint), request_id=request_id, output=prefs, timeout_s=timeout_s
            )
        except ImpastoError as exc:
            yield wire.error(exc)
            return
        queue: asyncio.Queue[Event] = asyncio.Queue()
        unsubscribe = p.subscribe(queue.put_nowait)
        task = asyncio.create_task(self._run(p, payload))
        try:
            while True:
                event = await queue.get()
                message = wire.from_event(event, p, self.id)
                if message is not None:
                    yield message
                if event.kind == "completed":
                    return
        finally:
            unsubscribe()
            if not task.done():
                p.abort("disconnected")
                with contextlib.suppress(BaseException):
                    await task

    async def _run(self, p: Any, payload: Any) -> None:
        """Decode and run ``p`` to its end in this task (it ends ``p`` however it goes)."""
        p.bind(asyncio.current_task())
        try:
            value = await self.runner.decode(p, payload)
        except ImpastoError as exc:
            p.finish(exc)
            return
        except asyncio.CancelledError:
            p.finish(p.ctx.error())
            return
        finally:
            p.bind(None)
        await execute(self.runner, p, value)

    async def __del__(self) -> None:
        await self.runner.drain(self.package.config.runtime.shutdown_grace_s)
        await self.runner.aclose()
