"""Turn an HTTP request into an endpoint payload: JSON or multipart, with size limits.

The helpers every protocol adapter reads bodies with: :func:`read_body` (bounded, with or
without ``Content-Length``), :func:`parse_json` (bounded nesting; large bodies parsed off the
event loop by the caller) and, for impasto's own routes, :func:`read_payload`: JSON is parsed
whatever the ``Content-Type`` says (many clients send none); a ``multipart/form-data`` body
becomes the same mapping, file parts as :class:`~impasto.media.UploadedFile` and a part
named ``json`` (or any JSON-typed part) merged in, so both validate against one schema.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..config import MediaConfig
from ..context import OutputPrefs
from ..errors import Canceled, MalformedInput, PayloadTooLarge
from ..media import UploadedFile

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def media_type(request: Request) -> str:
    return (header(request, b"content-type") or "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes: at once when ``Content-Length``
    says so, else as soon as the chunks received pass it (a chunked upload)."""
    declared = header(request, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the body is {declared} bytes; the limit is {limit} (runtime.max_body_bytes)",
            field="body",
        )
    chunks, size = [], 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Canceled("the client went away while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the body exceeds {limit} bytes (runtime.max_body_bytes)", field="body"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # let request.form() re-read what was already received
    return body


def parse_json(body: bytes, max_depth: int = 64) -> Any:
    """The JSON value of ``body`` (an empty body is ``{}``); 400 when it is not JSON or nests
    deeper than ``max_depth`` arrays and objects (``runtime.max_json_depth``)."""
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" not in str(exc) and "recursion" not in str(exc):
            raise MalformedInput(f"invalid JSON payload: {exc}", field="body") from None
        # nested past orjson's own bound, far deeper than any limit
    else:
        # Depth can only exceed the limit when there are more brackets than the limit.
        if body.count(b"[") + body.count(b"{") <= max_depth or _depth_ok(value, max_depth):
            return value
    raise MalformedInput(
        f"the JSON body nests deeper than {max_depth} levels (runtime.max_json_depth)",
        field="body",
    )


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


async def parse_form(request: Request, media: MediaConfig, max_body: int) -> dict[str, Any]:
    """A multipart/urlencoded body as a payload mapping (file parts kept as bytes).

    Text fields are bounded only by the body limit, as in JSON: a media field sent as text
    (base64, a data: URI) gets its size checked on decode, which names the field.
    """
    try:
        form = await request.form(max_part_size=max_body)
    except Exception as exc:  # malformed multipart, too many parts, oversized field
        raise MalformedInput(f"invalid form body: {exc}", field="body") from None
    payload: dict[str, Any] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                if len(data) > media.max_part_bytes:
                    raise PayloadTooLarge(
                        f"{key}: the part is {len(data)} bytes; the limit is "
                        f"{media.max_part_bytes} (media.max_part_bytes)",
                        field=key,
                    )
                ctype = (value.content_type or "").split(";")[0].strip().lower()
                if ctype == "application/json" or (key == "json" and not value.filename):
                    _merge(payload, key, parse_json(data))
                    continue
                item: Any = UploadedFile(data, value.content_type, value.filename)
            else:
                item = _form_text(value)
                if key == "json":  # one JSON part holding the other fields
                    _merge(
                        payload, key, parse_json(item.encode()) if isinstance(item, str) else item
                    )
                    continue
            if key in payload:  # repeated keys become lists
                prev = payload[key]
                payload[key] = [*prev, item] if isinstance(prev, list) else [prev, item]
            else:
                payload[key] = item
    finally:
        await form.close()
    return payload


def _merge(payload: dict[str, Any], key: str, data: Any) -> None:
    if not isinstance(data, dict):
        raise MalformedInput(f"{key}: the JSON part must be an object", field=key)
    payload.update(data)


def _form_text(value: str) -> Any:
    """Form values arrive as text; JSON-quoted strings, objects and lists are decoded."""
    text = value.strip()
    if text[:1] in ('"', "{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


async def read_payload(
    request: Request,
    *,
    max_body: int,
    media: MediaConfig,
    model: type[BaseModel] | None = None,
    max_depth: int = 64,
    offload: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
) -> tuple[Any, int]:
    """The payload of a request and its size in bytes; ``model`` (the endpoint's input
    schema) shapes form values, and ``offload`` runs the JSON parse of a large body off the
    event loop."""
    body = await read_body(request, max_body)
    kind = media_type(request)
    if kind in FORM_TYPES and not (
        kind == "application/x-www-form-urlencoded" and body.lstrip()[:1] in (b"{", b"[")
    ):  # (`curl -d '{...}'` labels JSON as a form)
        return as_lists(await parse_form(request, media, max_body), model), len(body)
    if offload is not None and len(body) > OFFLOAD_JSON_BYTES:
        return await offload(lambda: parse_json(body, max_depth)), len(body)
    return parse_json(body, max_depth), len(body)


OFFLOAD_JSON_BYTES = 64 * 1024  # larger JSON bodies are parsed in the input pool


def as_lists(payload: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """A form repeats a key for each item of a list, so one item arrives as a single value:
    wrap it for the fields that ``model`` declares as lists (``images: list[Image]``)."""
    if model is None:
        return payload
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in payload and not isinstance(payload[key], list) and _is_list(info.annotation):
            payload[key] = [payload[key]]
    return payload


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return (origin or annotation) in (list, tuple, set, frozenset, Sequence)


def output_prefs(
    request: Request, payload: Any, fields: Collection[str] | None = None
) -> OutputPrefs:
    """Format and quality from the query string or the payload, and the Accept header.

    The query string is the client talking to impasto: a bad ``quality`` there is a 400. In
    the payload, ``output_format`` and ``quality`` count where the endpoint's input schema
    has them (``fields``; None: any payload) and only when usable, since a model's own field
    of that name may mean something else (``quality: "draft"``).
    """
    fmt: Any = None
    quality: Any = None
    if request.scope.get("query_string"):
        query = request.query_params
        fmt = query.get("output_format")
        quality = query.get("quality")
        if quality is not None:
            quality = _quality(quality)
            if quality is None:
                raise MalformedInput("quality must be an integer from 1 to 100", field="quality")
    return prefs_from(payload, fields, accept=header(request, b"accept"), fmt=fmt, quality=quality)


def prefs_from(
    payload: Any,
    fields: Collection[str] | None = None,
    *,
    accept: str | None = None,
    fmt: Any = None,
    quality: Any = None,
) -> OutputPrefs:
    """Output preferences from a payload's ``output_format``/``quality`` (where the schema
    has them) over explicit ones; what every route and ``impasto predict`` share."""
    if isinstance(payload, dict) and ("output_format" in payload or "quality" in payload):
        mine = {k: payload.get(k) for k in _PREFS if fields is None or k in fields}
        given = mine.get("output_format")
        fmt = fmt or (given if isinstance(given, str) else None)
        quality = quality or _quality(mine.get("quality"))
    if accept is None and fmt is None and quality is None:
        return _NO_PREFS
    return OutputPrefs(accept=accept, format=str(fmt).lower() if fmt else None, quality=quality)


_NO_PREFS = OutputPrefs()


def header(request: Request, name: bytes) -> str | None:
    """One request header (``name`` in lower case), read straight from the ASGI scope."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


_PREFS = ("output_format", "quality")


def _quality(value: Any) -> int | None:
    """An integer quality from 1 to 100 (form values arrive as text), else None."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 1 <= number <= 100 else None
