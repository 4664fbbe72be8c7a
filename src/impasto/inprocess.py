"""One prediction in-process, through the same steps as every HTTP route.

What ``impasto predict``, the playground and tests use: admit, decode, run, end, with the
prediction's events available to a subscriber and an abort (deadline, cancel) surfacing as
the error of its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .calls import is_stream
from .context import OutputPrefs
from .errors import ImpastoError

if TYPE_CHECKING:
    from .runner import Runner


async def predict(
    runner: Runner,
    payload: Any,
    endpoint: str | None = None,
    *,
    request_id: str | None = None,
    output: OutputPrefs | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> Any:
    """Returns the output (an async iterator for a streaming endpoint); raises the
    ImpastoError the prediction ended with."""
    p = runner.admit(runner.endpoint(endpoint), request_id=request_id, output=output)
    if on_event is not None:
        p.subscribe(on_event)
    p.bind(asyncio.current_task())
    try:
        with p.cancellation():
            result = await runner.run(p, await runner.decode(p, payload))
    except ImpastoError as exc:
        p.finish(exc)
        raise
    finally:
        p.bind(None)
    if not is_stream(result):
        p.succeed(result)
    return result
