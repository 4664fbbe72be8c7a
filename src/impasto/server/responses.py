"""Turn an endpoint's output into an HTTP response: JSON, raw media bytes, multipart or a stream.

The adapter only picks the envelope; media encoding itself is :mod:`impasto.media`, and it
runs in a worker thread so the event loop keeps serving while an image is encoded.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import anyio.to_thread
import orjson
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..accept import ranges, wants
from ..config import MediaConfig
from ..context import OutputPrefs
from ..errors import ImpastoError, ModelError, NotAcceptable
from ..media import (
    Audio,
    File,
    Video,
    encode,
    encode_multipart,
    find_media,
    format_for_accept,
    to_jsonable,
)

log = logging.getLogger("impasto.server")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (ValueError): JSON has none."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def fast_dumps(value: Any) -> bytes:
    """:func:`dumps` for values already known to hold only finite numbers (orjson; the
    standard library for what orjson does not take, such as integers past 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return dumps(value)


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)


class ClosingStream(StreamingResponse):
    """A streaming response that closes ``source`` (default: its body) however it ends:
    finished, failed, or the client gone mid-write. A generator endpoint's slot is freed then,
    not whenever the garbage collector finalizes an abandoned generator.

    An ImpastoError out of the body (the model failed mid-stream; it is already logged) ends
    the response without its final chunk, so the client sees a broken stream rather than a
    complete one, and the server keeps serving without printing a traceback."""

    def __init__(self, content: Any, *, source: Any = None, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.source = content if source is None else source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ImpastoError as exc:
            log.warning("stream ended early: %s %s", exc.type, exc.message)
        finally:
            close = getattr(self.source, "aclose", None)
            if close is not None:
                await close()


def _media_kind(value: Any) -> str:
    if isinstance(value, Audio | File):
        return "file"  # kept as sent: only an Accept naming its own content type gets raw bytes
    return "video" if isinstance(value, Video) else "image"


def accepts_json(accept: str | None) -> bool:
    """Whether a JSON body satisfies ``accept`` (no header, ``*/*``, a JSON type...)."""
    if not accept:
        return True
    return any(
        r in ("*/*", "application/*", "application/json") or r.endswith("+json")
        for r in ranges(accept)
    )


def _not_acceptable(result: Any, found: list[Any], prefs: OutputPrefs) -> NotAcceptable:
    offers = ["application/json"]
    if len(found) == 1:
        kind = _media_kind(found[0])
        offers += {
            "image": ["image/png", "image/jpeg", "image/webp"],
            "video": ["video/mp4", "image/gif", "image/webp"],
        }.get(kind, [str(getattr(found[0], "content_type", "application/octet-stream"))])
    elif len(found) > 1:
        offers.append(f"multipart/mixed (its {len(found)} media)")
    return NotAcceptable(
        f"Accept: {prefs.accept} cannot be met: this result can be sent as {', '.join(offers)}",
        field="accept",
    )


def encode_result(result: Any, prefs: OutputPrefs, media: MediaConfig) -> Response:
    """Pick raw bytes, multipart or JSON by ``prefs`` and encode once (in a worker thread on
    the server; ``impasto predict`` calls it directly). 406 when Accept rules out them all."""
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
    if not accepts_json(prefs.accept):
        raise _not_acceptable(result, found, prefs)
    started = time.perf_counter()
    body = to_jsonable(result, format=prefs.format, quality=prefs.quality, config=media)
    if isinstance(body, dict) and isinstance(body.get("timings"), dict):
        body["timings"]["encode_s"] = time.perf_counter() - started  # results that report timings
    return Response(dumps(body), media_type="application/json")


def _is_file_accept(accept: str | None, value: Any) -> bool:
    """An ``Audio`` or ``File`` result whose own content type the client asked for."""
    ctype = getattr(value, "content_type", None)
    return isinstance(value, Audio | File) and bool(ctype) and wants(accept, ctype.split(";")[0])


_PLAIN = (str, int, float, bool, type(None))


def _small_plain(value: Any, budget: int = 256) -> bool:
    """True for a small dict/list of plain JSON values with finite numbers (no media,
    nothing to encode, nothing JSON cannot hold)."""
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
        elif isinstance(item, float):
            if item != item or item in _INFINITE:
                return False
        elif not isinstance(item, _PLAIN):
            return False
    return True


_INFINITE = (float("inf"), float("-inf"))


async def render(
    result: Any, prefs: OutputPrefs, media: MediaConfig, timings: dict[str, float] | None = None
) -> Response:
    """The response for ``result``; ``timings`` (seconds) go out as a ``Server-Timing`` header.

    Small plain results are written on the loop; anything with media or of some size is
    encoded in a worker thread. A result that cannot be written as JSON (NaN, an arbitrary
    object) is the model's error, named as such."""
    if isinstance(result, Response):
        return result
    started = time.perf_counter()
    try:
        plain = (isinstance(result, str) and len(result) < 4096) or _small_plain(result)
        if plain and (prefs.accept is None or accepts_json(prefs.accept)):
            # nothing to encode: no thread hop, no media walk
            response: Response = _JSONBytes(fast_dumps(result))
        else:
            response = await anyio.to_thread.run_sync(encode_result, result, prefs, media)
    except (TypeError, ValueError) as exc:
        raise unencodable(result, exc) from None
    if timings:
        spans = [f"{name.removesuffix('_s')};dur={s * 1000:.1f}" for name, s in timings.items()]
        spans.append(f"encode;dur={(time.perf_counter() - started) * 1000:.1f}")
        response.raw_headers.append((b"server-timing", ", ".join(spans).encode()))
    return response


class _JSONBytes(Response):
    """A response of JSON bytes already encoded (skips Response's own rendering)."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


def unencodable(result: Any, exc: BaseException) -> ModelError:
    """The error for a model output that cannot be sent as JSON."""
    return ModelError(
        f"the model returned {type(result).__name__} output that cannot be sent as JSON: {exc}"
    )


def chunk_bytes(chunk: Any, media: MediaConfig) -> bytes:
    """One streamed chunk as bytes: bytes and text as they are, anything else as a JSON line."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode()
    try:
        return dumps(to_jsonable(chunk, config=media)) + b"\n"
    except (TypeError, ValueError) as exc:
        raise unencodable(chunk, exc) from None


async def encoded_chunk(chunk: Any, media: MediaConfig) -> bytes:
    """:func:`chunk_bytes`, off the loop unless the chunk is bytes, text or small and plain."""
    if isinstance(chunk, bytes | bytearray | memoryview | str) or _small_plain(chunk):
        return chunk_bytes(chunk, media)
    return await anyio.to_thread.run_sync(chunk_bytes, chunk, media)


def raw_stream(chunks: Any, media: MediaConfig) -> StreamingResponse:
    """A streaming endpoint's chunks as raw bytes (text as is, anything else a JSON line)."""

    async def raw() -> Any:
        async for chunk in chunks:
            yield await encoded_chunk(chunk, media)

    return StreamingResponse(raw(), media_type="application/octet-stream")


def sse_data(data: bytes) -> bytes:
    """One SSE message carrying ``data`` (split into ``data:`` lines)."""
    text = data.decode().rstrip("\n")
    return b"".join(b"data: " + line.encode() + b"\n" for line in text.split("\n")) + b"\n"


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: ".encode() + dumps(data) + b"\n\n"


def gathered(chunks: list[Any], media: MediaConfig) -> Any:
    """A stream drained into one JSON value: the text of str/bytes chunks, else the list."""
    if all(isinstance(c, str | bytes) for c in chunks):
        return "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    return to_jsonable(chunks, config=media)
