"""The ingress side of a model: a runner whose ``run`` step happens on a model replica.

The ingress serves the same ASGI app as ``impasto serve`` (every protocol, the playground,
metrics, jobs) with a :class:`RemoteRunner` in place of each model's runner: resolve, admit,
read and write happen in the ingress as usual, and ``run`` sends the raw payload to a model
replica through its Ray Serve ``DeploymentHandle``. The replica admits, decodes and runs it
with its own runner (the one queue: Ray's ``max_ongoing_requests`` is that runner's
capacity) and streams back the prediction's start, events, result or chunks, and errors,
which are replayed on the ingress's prediction. Nothing else of the call path is copied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ImpastoError, NotReady, Overloaded
from ..metrics import Metrics
from ..package import Package
from ..prediction import Prediction
from ..runner import Runner
from . import wire

REPLICA_STATE_KEY = "impasto_replica"  # scope["state"][...]: the replica that ran the request


class RemoteRunner(Runner):
    """A model served by a Ray Serve deployment: loads nothing here, runs on its replicas."""

    def __init__(self, package: Package, metrics: Metrics | None, handle: Any) -> None:
        super().__init__(
            package.spec,
            lambda: None,  # never built here: replicas load the package themselves
            package.config,
            name=package.name,
            kind=package.kind,
            metrics=metrics,
            redact=package.redactor,
        )
        self.handle = handle
        self._stream_handle = handle.options(stream=True)

    # the model is the deployment's: ready once Ray Serve has deployed it ------------------
    def start(self) -> asyncio.Task:
        return asyncio.ensure_future(self.load())

    async def load(self) -> bool:
        loading = self.loading
        if loading.state != "ready":
            loading.state = "ready"
            loading.done.set()
        return True

    def capacity(self, endpoint: Any) -> int:
        """No queue here: each replica's runner bounds its own, and Ray's router refuses
        (429) what no replica has room for (``max_queued_requests``)."""
        return 1 << 31

    async def decode(self, p: Prediction, payload: Any, *, size: int | None = None) -> Any:
        """The raw payload travels: the replica validates and decodes it (once)."""
        p.input = payload
        return payload

    async def unload(self) -> bool:
        return False

    async def healthy(self) -> bool | None:
        return None

    # run: on a replica -------------------------------------------------------------------
    async def run(self, p: Prediction, value: Any) -> Any:
        """Send ``p`` to a replica and replay its messages here; the output, or an async
        iterator of chunks for a streaming endpoint (``p`` ends with the stream)."""
        timeout = p.ctx.remaining()
        args = (p.endpoint, value, p.id, p.ctx.output, timeout)
        if not p.watched and not self.spec.endpoints[p.endpoint].streams:
            return await self._once(p, args)
        try:  # Ray's router refuses here when every replica and its own queue are full
            gen = self._stream_handle.call.remote(*args)
        except Exception as exc:
            raise ray_error(exc) from exc
        try:
            while True:
                message = await _next(gen)
                kind = message[0]
                if kind == wire.START:
                    self._on_start(p, message[1])
                elif kind == wire.EVENT:
                    p.ctx.emit(message[1], **message[2])
                elif kind == wire.RESULT:
                    await _finish(gen)
                    return message[1]
                elif kind == wire.CHUNK:
                    return self._chunks(p, gen, message[1])
                elif kind == wire.DONE:
                    return None
                elif kind == wire.ERROR:
                    raise message[1]
        except BaseException:
            cancel(gen)
            raise

    async def _once(self, p: Prediction, args: tuple) -> Any:
        """One round trip: nobody waits for this prediction's events or chunks."""
        try:
            response = self.handle.call_once.remote(*args)
        except Exception as exc:
            raise ray_error(exc) from exc
        try:
            replica, message = await response
        except asyncio.CancelledError:
            cancel(response)
            raise
        except ImpastoError:
            raise
        except Exception as exc:
            raise ray_error(exc) from exc
        self._on_start(p, replica)
        if message[0] == wire.ERROR:
            raise message[1]
        if message[0] == wire.CHUNKS:
            return _replay(p, message[1])
        return message[1]

    def _on_start(self, p: Prediction, replica: str) -> None:
        self._started(p)
        request = p.ctx.request
        if request is not None:
            request.scope.setdefault("state", {})[REPLICA_STATE_KEY] = replica

    async def _chunks(self, p: Prediction, gen: Any, first: Any) -> AsyncIterator[Any]:
        """The stream's chunks as they come; ``p`` ends with it (closed early: canceled)."""
        error: BaseException | None = None
        chunk = first
        try:
            while True:
                p.chunk(chunk)
                yield chunk
                while True:
                    message = await _next(gen)
                    if message[0] == wire.CHUNK:
                        chunk = message[1]
                        break
                    if message[0] == wire.EVENT:
                        p.ctx.emit(message[1], **message[2])
                    elif message[0] == wire.ERROR:
                        raise message[1]
                    elif message[0] == wire.DONE:
                        return
        except GeneratorExit:
            p.ctx.cancel("disconnected")
            error = p.ctx.error()
            raise
        except asyncio.CancelledError:
            p.ctx.cancel("disconnected")
            error = p.ctx.error()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if error is not None:
                cancel(gen)
                p.finish(error)
            else:
                p.succeed(None)


async def _next(gen: Any) -> tuple:
    """The next message of a replica's answer, Ray's own errors as impasto's."""
    try:
        return await gen.__anext__()
    except StopAsyncIteration:
        raise NotReady("the model replica ended the prediction without an answer") from None
    except (ImpastoError, asyncio.CancelledError):
        raise
    except Exception as exc:
        raise ray_error(exc) from exc


async def _replay(p: Prediction, chunks: list[Any]) -> AsyncIterator[Any]:
    """A gathered stream's chunks; ``p`` ends with them (closed early: the client left)."""
    try:
        for chunk in chunks:
            p.chunk(chunk)
            yield chunk
    except BaseException:
        p.ctx.cancel("disconnected")
        p.finish(p.ctx.error())
        raise
    p.succeed(None)


def cancel(gen: Any) -> None:
    """Stop a replica's answer (best effort: Ray cancels the replica's generator, which
    aborts the prediction there). Ray raises the call's own error again if it had one."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        gen.cancel()


async def _finish(gen: Any) -> None:
    """Read the ``done`` after a result, so the replica's generator ends normally."""
    with contextlib.suppress(StopAsyncIteration, Exception):
        await gen.__anext__()


def ray_error(exc: BaseException) -> ImpastoError:
    """What one of Ray Serve's errors means for the client: the router's queue is full
    (429), a replica died or is unreachable (503, retry: Ray starts another)."""
    name = type(exc).__name__
    if name == "BackPressureError":
        return Overloaded(
            "too many requests: every replica's queue is full (ray.max_queued_requests); "
            "retry shortly",
            headers={"Retry-After": "1"},
        )
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ImpastoError):
        return cause
    return NotReady(
        f"the model replica is unavailable ({name}); retry",
        headers={"Retry-After": "1"},
    )
