"""Calling the user's methods: awaited on the loop if async, else in a model thread, with
the prediction's log capture, and their exceptions turned into the errors clients see.

A thread cannot be stopped, so its future is awaited through a shield: a canceled waiter
leaves the thread to finish (it keeps its model slot until then) and its outcome is
retrieved, never reported as lost.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.exceptions import HTTPException

from . import logs
from .context import RequestContext
from .errors import ModelDefinitionError, ModelError, ModelHTTPError
from .spec import CallSpec

log = logging.getLogger("impasto.runner")

STREAM_POSTPROCESS = (
    "If the predict function returns a generator (streaming), you cannot use postprocessing. "
    "Include all processing in the predict method."
)
RESPONSE_POSTPROCESS = (
    "If the predict function returns a response object, you cannot use postprocessing."
)


class ModelCalls:
    """How one runner calls into its model (``model()`` gives the loaded object)."""

    def __init__(
        self,
        model: Callable[[], Any],
        executor: ThreadPoolExecutor,
        *,
        name: str,
        redact: Callable[[str], str],
    ) -> None:
        self._model = model
        self._executor = executor
        self.name = name
        self.redact = redact

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future:
        """``fn`` in a model thread."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def thread(self, fn: Callable[[], Any]) -> Any:
        return await self.submit(fn)

    async def invoke(self, call: CallSpec, value: Any, ctx: Any) -> Any:
        """Run one user method: awaited if async, else in a model thread (``ctx`` is one
        context, or a list of them for a batch call). A generator method returns its
        generator: creating it runs no user code."""
        contexts = tuple(ctx) if isinstance(ctx, list) else (ctx,)
        bound = call.bind(self._model(), value, ctx)
        if call.is_async and not call.is_generator:
            with logs.running(contexts):
                return await bound()
        if call.is_generator:
            return bound()
        result = await awaited(self.submit(logs.call_in(contexts, bound)))
        return await result if inspect.isawaitable(result) else result

    def definition_error(self, message: str, ctx: RequestContext) -> ModelDefinitionError:
        log.error("request %s: %s: ModelDefinitionError: %s", ctx.request_id, self.name, message)
        return ModelDefinitionError(message)

    def model_error(self, exc: BaseException, ctx: Any) -> ModelError:
        """A model's own exception as a 500, with the traceback in the log (never the body);
        an ``HTTPException`` (starlette's or FastAPI's) the model raised is its own answer."""
        if isinstance(exc, HTTPException):
            log.warning(
                "request %s: model raised HTTPException %s: %s",
                ctx.request_id,
                exc.status_code,
                self.redact(str(exc.detail)),
            )
            return ModelHTTPError(exc.status_code, exc.detail, headers=exc.headers)
        message = self.redact(f"{type(exc).__name__}: {exc}")
        log.error(
            "request %s: model raised %s\n%s",
            ctx.request_id,
            message,
            self.redact("".join(traceback.format_exception(exc))),
        )
        return ModelError(message)


def is_stream(value: Any) -> bool:
    """Whether a model's output streams: a generator or an async generator."""
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


async def awaited(future: asyncio.Future) -> Any:
    """Await thread work without canceling it when the waiter is canceled."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_retrieve)
        raise


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
