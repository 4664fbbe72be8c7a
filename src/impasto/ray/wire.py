"""The messages a model replica streams back to the ingress for one prediction.

::

    ("start", replica)          it got the model (a slot or a place in a batch)
    ("event", kind, data)       the model's progress, preview and log events
    ("chunk", value)            one chunk of a streaming endpoint
    ("result", value)           the output
    ("done", replica)           it succeeded (after its result or its last chunk)
    ("error", ImpastoError)     it failed, was refused (429/503) or canceled

A prediction nobody watches (no event stream, no job) and whose endpoint does not stream
takes one round trip instead (``call_once``): ``(replica, ("result", value))``, or
``("error", ...)``. Plain tuples of picklable values: Ray moves them through its object store; the error keeps
its class, field, headers and pydantic details, so the ingress answers exactly as a single
server would.
"""

from __future__ import annotations

from typing import Any

from ..context import Event
from ..errors import ImpastoError

START, EVENT, CHUNK, RESULT, DONE, ERROR = "start", "event", "chunk", "result", "done", "error"
CHUNKS = "chunks"  # a one-round-trip answer's gathered stream (ModelReplica.call_once)
RELAYED = frozenset({"progress", "preview", "log"})


def error(exc: ImpastoError) -> tuple:
    return (ERROR, exc)


def from_event(event: Event, p: Any, replica: str) -> tuple | None:
    """The message for one of a prediction's events (None: nothing to send)."""
    kind = event.kind
    if kind in RELAYED:
        return (EVENT, kind, event.data)
    if kind == "start":
        return (START, replica)
    if kind == "output":
        if "chunk" in event.data:
            return (CHUNK, event.data["chunk"])
        return (RESULT, event.data.get("output"))
    if kind == "completed":
        if p.error is not None:
            return error(p.error)
        return (DONE, replica)
    return None
