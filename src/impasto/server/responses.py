"""Turn an endpoint's output into an HTTP response: JSON, raw media bytes, multipart or a stream.

The adapter only picks the envelope; media encoding itself is :mod:`impasto.media`, and it
runs in a worker thread so the event loop keeps serving while an image is encoded.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..config import MediaConfig
from ..context import OutputPrefs
from ..media import encode, encode_multipart, find_media, format_for_accept, to_jsonable


def wants(accept: str | None, media_type: str) -> bool:
    """True when the Accept header lists ``media_type`` explicitly."""
    if not accept:
        return False
    return any(part.split(";")[0].strip().lower() == media_type for part in accept.split(","))


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)


class ClosingStream(StreamingResponse):
    """A streaming response that closes ``source`` (default: its body) however it ends:
    finished, failed, or the client gone mid-write. A generator endpoint's slot is freed then,
    not whenever the garbage collector finalizes an abandoned generator."""

    def __init__(self, content: Any, *, source: Any = None, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.source = content if source is None else source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.source, "aclose", None)
            if close is not None:
                await close()


def _media_kind(value: Any) -> str:
    from ..media import Audio, File, Video

    if isinstance(value, Audio | File):
        return "file"  # kept as sent: only an Accept naming its own content type gets raw bytes
    return "video" if isinstance(value, Video) else "image"


def _encode_response(result: Any, prefs: OutputPrefs, media: MediaConfig) -> Response:
    """Runs in a worker thread: pick raw bytes, multipart or JSON and encode once."""
    found = find_media(result)
    if len(found) == 1:
        value = found[0]
        kind = _media_kind(value)
        default = prefs.format or (media.video_format if kind == "video" else media.image_format)
        fmt = format_for_accept(prefs.accept, kind, default)  # image/* and video/*: the default
        if fmt is not None or _is_file_accept(prefs.accept, value):
            enc = encode(value, format=fmt or prefs.format, quality=prefs.quality, config=media)
            return Response(enc.data, media_type=enc.content_type)
    if len(found) > 1 and wants(prefs.accept, "multipart/mixed"):
        parts = [encode(v, format=prefs.format, quality=prefs.quality, config=media) for v in found]
        body, ctype = encode_multipart(parts, boundary=uuid.uuid4().hex)
        return Response(body, media_type=ctype)
    started = time.perf_counter()
    body = to_jsonable(result, format=prefs.format, quality=prefs.quality, config=media)
    if isinstance(body, dict) and isinstance(body.get("timings"), dict):
        body["timings"]["encode_s"] = time.perf_counter() - started  # results that report timings
    return Response(dumps(body), media_type="application/json")


def _is_file_accept(accept: str | None, value: Any) -> bool:
    """An ``Audio`` or ``File`` result whose own content type the client asked for."""
    from ..media import Audio, File

    ctype = getattr(value, "content_type", None)
    return isinstance(value, Audio | File) and bool(ctype) and wants(accept, ctype.split(";")[0])


_PLAIN = (str, int, float, bool, type(None))


def _small_plain(value: Any, budget: int = 256) -> bool:
    """True for a small dict/list of plain JSON values (no media, nothing to encode)."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif not isinstance(item, _PLAIN):
            return False
    return True


async def render(
    result: Any, prefs: OutputPrefs, media: MediaConfig, timings: dict[str, float] | None = None
) -> Response:
    """The response for ``result``; ``timings`` (seconds) go out as a ``Server-Timing`` header."""
    if isinstance(result, Response):
        return result
    started = time.perf_counter()
    if isinstance(result, str | int | float | bool | type(None)):
        response: Response = FastJSONResponse(result)
    elif _small_plain(result):  # nothing to encode: no thread hop, no media walk
        response = Response(dumps(result), media_type="application/json")
    else:
        response = await anyio.to_thread.run_sync(_encode_response, result, prefs, media)
    if timings is not None:
        spans = {**timings, "encode": time.perf_counter() - started}
        response.headers["Server-Timing"] = ", ".join(
            f"{name.removesuffix('_s')};dur={seconds * 1000:.1f}" for name, seconds in spans.items()
        )
    return response


def _chunk_bytes(chunk: Any, media: MediaConfig) -> bytes:
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode()
    return dumps(to_jsonable(chunk, config=media)) + b"\n"


def stream_response(chunks: AsyncIterator[Any], prefs: OutputPrefs, media: MediaConfig) -> Any:
    """A generator endpoint's output: raw chunks, or SSE frames when the client asks."""
    if wants(prefs.accept, "text/event-stream"):

        async def frames() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                data = chunk if isinstance(chunk, str) else _chunk_bytes(chunk, media).decode()
                data = data.rstrip("\n")
                yield b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n"))
                yield b"\n"

        return ClosingStream(frames(), source=chunks, media_type="text/event-stream")

    async def raw() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield _chunk_bytes(chunk, media)

    return ClosingStream(raw(), source=chunks, media_type="application/octet-stream")


async def gather_stream(chunks: AsyncIterator[Any], media: MediaConfig) -> Response:
    """Drain a stream into one JSON response (for clients that asked for application/json)."""
    items = [chunk async for chunk in chunks]
    if all(isinstance(c, str | bytes) for c in items):
        text = "".join(c.decode() if isinstance(c, bytes) else c for c in items)
        return FastJSONResponse(text)
    return FastJSONResponse(to_jsonable(items, config=media))


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: ".encode() + dumps(data) + b"\n\n"
