"""What goes over the wire on Truss's routes: bodies, results, errors and ``/schema``, byte
for byte as a Truss server writes them.

- Bodies are JSON whatever the ``Content-Type`` says (none included), except
  ``application/octet-stream``: msgpack with numpy arrays (msgpack-numpy) and Truss's
  extension maps for datetimes, ``Decimal`` and ``UUID``; the answer is msgpack then too.
- Results are ``json.dumps`` with a numpy-aware encoder (so ``{"a": 1}``, with spaces), a
  pydantic model its own compact JSON.
- Errors are ``{"error": "<text>"}`` with ``X-BASETEN-ERROR-SOURCE: 04`` and
  ``X-BASETEN-ERROR-CODE``: 600 for the model's side, 700 for the client's, 500 unexpected.
"""

from __future__ import annotations

import json
import textwrap
import typing
import uuid
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator, Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from ...errors import (
    Canceled,
    ImpastoError,
    InputError,
    MalformedInput,
    ModelError,
    ModelHTTPError,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    PredictTimeout,
    pydantic_errors,
)

SOURCE = "04"  # the Truss server, in Baseten's error-propagation numbering
MODEL_SIDE, CLIENT_SIDE, UNEXPECTED = 600, 700, 500
MODEL_ERROR_MESSAGE = "Internal Server Error (in model/chainlet)."


# -- errors ---------------------------------------------------------------------------------


def error_headers(code: int) -> dict[str, str]:
    return {"X-BASETEN-ERROR-SOURCE": SOURCE, "X-BASETEN-ERROR-CODE": f"{code:03}"}


def error_body(status: int, message: Any, code: int, headers: dict[str, str] | None = None):
    """Truss's error response: ``{"error": message}`` with the Baseten error headers."""
    return JSONResponse(
        {"error": message}, status_code=status, headers={**(headers or {}), **error_headers(code)}
    )


def not_ready(name: str) -> str:
    return f"Model with name {name} is not ready."


def error_response(error: ImpastoError, model_name: str) -> Response:
    """The answer a Truss server gives for what ``error`` stands for."""
    retry = {k: v for k, v in error.headers.items() if k.lower() == "retry-after"}
    if isinstance(error, NotReady):  # loading, failed to load, shutting down
        return error_body(503, not_ready(model_name), MODEL_SIDE, retry)
    if isinstance(error, ModelHTTPError):
        return error_body(error.status, error.detail, MODEL_SIDE, error.headers)
    if isinstance(error, ModelError):  # the cause is in the log, with the request id
        # A ModelDefinitionError (a streaming predict with a postprocess) included: a Truss
        # server raises it inside its model-error guard, so clients get this same 500.
        return error_body(500, MODEL_ERROR_MESSAGE, MODEL_SIDE)
    if isinstance(error, PayloadTooLarge):
        return error_body(413, error.message, CLIENT_SIDE)
    if isinstance(error, InputError):
        if error.details:
            return error_body(400, parsing_error(error.details), CLIENT_SIDE)
        if isinstance(error, MalformedInput):
            return error_body(400, error.message, CLIENT_SIDE)
        return error_body(400, f"Input Parsing Error: {error.message}", CLIENT_SIDE)
    if isinstance(error, NotFound):
        return error_body(404, error.message, CLIENT_SIDE)
    if isinstance(error, Overloaded | PredictTimeout | Canceled):
        return error_body(error.status, error.message, MODEL_SIDE, retry)
    return error_body(error.status, error.message, UNEXPECTED)


def parsing_error(details: list[dict[str, Any]]) -> str:
    """Validation errors as Truss words them: ``Input Parsing Error:`` then one indented
    line per error, ``\\`items[1].value\\`: msg.``"""
    lines = ["Input Parsing Error:" if len(details) == 1 else "Input Parsing Errors:"]
    for detail in details:
        loc = "".join(
            f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
            for i, part in enumerate(detail.get("loc", ()))
        )
        lines.append(textwrap.indent(f"`{loc}`: {detail.get('msg')}.", "  "))
    return "\n".join(lines)


# -- bodies ---------------------------------------------------------------------------------


def is_binary(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == "application/octet-stream"


def parse_json(body: bytes, max_depth: int, input_model: type[BaseModel] | None) -> Any:
    """A JSON body as Truss reads it (``json.loads``: an empty body is an error, NaN and
    Infinity are accepted), nesting bounded by ``runtime.max_json_depth``."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _invalid_json(body, exc, input_model) from None
    if body.count(b"[") + body.count(b"{") > max_depth and not _depth_ok(value, max_depth):
        raise MalformedInput(
            f"Invalid JSON payload: nests deeper than {max_depth} levels (runtime.max_json_depth)",
            field="body",
        )
    return value


def _invalid_json(body: bytes, exc: BaseException, input_model: type[BaseModel] | None):
    """The error for a body that is not JSON: a typed model's parse error (Truss hands the
    raw body to pydantic), else ``Invalid JSON payload: <json error>``."""
    if input_model is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                input_model.parse_raw(body)
        except ValidationError as error:
            return pydantic_errors(error)
        except Exception:
            pass
    return MalformedInput(f"Invalid JSON payload: {exc}", field="body")


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return False
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def msgpack_loads(body: bytes) -> Any:
    """A msgpack body (numpy arrays and Truss's extension maps included); 400 if invalid."""
    import msgpack
    import msgpack_numpy

    try:
        return msgpack.unpackb(body, object_hook=lambda obj: _decode_ext(obj, msgpack_numpy.decode))
    except ValueError as exc:
        raise MalformedInput(str(exc), field="body") from None


def msgpack_dumps(value: Any) -> bytes:
    import msgpack
    import msgpack_numpy

    return msgpack.packb(value, default=lambda obj: _encode_ext(obj, msgpack_numpy.encode))


def _encode_ext(obj: Any, chain: Any) -> Any:
    if isinstance(obj, datetime):
        text = obj.isoformat()
        text = text[:-6] + "Z" if text.endswith("+00:00") else text
        return {b"__dt_datetime_iso__": True, b"data": text}
    if isinstance(obj, date):
        return {b"__dt_date_iso__": True, b"data": obj.isoformat()}
    if isinstance(obj, time):
        if obj.utcoffset() is not None:
            raise ValueError("Cannot represent timezone-aware times.")
        return {b"__dt_time_iso__": True, b"data": obj.isoformat()}
    if isinstance(obj, timedelta):
        return {b"__dt_timedelta__": True, b"data": (obj.days, obj.seconds, obj.microseconds)}
    if isinstance(obj, Decimal):
        return {b"__decimal__": True, b"data": str(obj)}
    if isinstance(obj, uuid.UUID):
        return {b"__uuid__": True, b"data": str(obj)}
    return chain(obj)


def _decode_ext(obj: Any, chain: Any) -> Any:
    if obj.get(b"nd") is True and obj.get(b"kind") == b"O":
        raise ValueError("unsupported payload")  # object arrays would unpickle
    try:
        if b"__dt_datetime_iso__" in obj:
            return datetime.fromisoformat(obj[b"data"])
        if b"__dt_date_iso__" in obj:
            return date.fromisoformat(obj[b"data"])
        if b"__dt_time_iso__" in obj:
            return time.fromisoformat(obj[b"data"])
        if b"__dt_timedelta__" in obj:
            days, seconds, micros = obj[b"data"]
            return timedelta(days=days, seconds=seconds, microseconds=micros)
        if b"__decimal__" in obj:
            return Decimal(obj[b"data"])
        if b"__uuid__" in obj:
            return uuid.UUID(obj[b"data"])
    except KeyError:
        pass
    return chain(obj)


# -- results --------------------------------------------------------------------------------


class NumpyJSONEncoder(json.JSONEncoder):
    """``json.dumps`` for model outputs holding numpy scalars and arrays."""

    def default(self, obj: Any) -> Any:
        import numpy as np

        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return super().default(obj)


def render(result: Any, binary: bool) -> Response:
    """A model output as Truss answers it: msgpack for a binary request, else JSON (a
    pydantic model as its own JSON). An output that cannot be written is Truss's 500."""
    try:
        if binary:
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="python")
            content = result if isinstance(result, bytes) else msgpack_dumps(result)
            return Response(content, headers={"Content-Type": "application/octet-stream"})
        if isinstance(result, BaseModel):
            content = result.model_dump_json()
        else:
            content = json.dumps(result, cls=NumpyJSONEncoder)
    except Exception as exc:
        return error_body(500, f"Unhandled exception: {type(exc).__name__}: {exc}", UNEXPECTED)
    return Response(content, headers={"Content-Type": "application/json"})


def gathered_text(chunks: list[Any]) -> str:
    """A stream drained into one string: bytes joined and decoded once, other chunks as
    their text."""
    return b"".join(
        c if isinstance(c, bytes | bytearray) else str(c).encode() for c in chunks
    ).decode()


# -- /schema --------------------------------------------------------------------------------


def schema(cls: type) -> dict[str, Any] | None:
    """``/schema`` as Truss derives it: the input model of the first stage's first
    parameter, the output model of the last stage's return annotation (a pydantic model;
    ``Awaitable[Model]``; a generator, which streams; or a Union of a model and a
    generator, which may stream), or None when neither is a pydantic model."""
    first = getattr(cls, "preprocess", None) or getattr(cls, "predict", None)
    last = getattr(cls, "postprocess", None) or getattr(cls, "predict", None)
    if first is None or last is None:
        return None
    input_type = _first_param_model(first)
    output = _output_type(_hints(last).get("return"))
    if input_type is None and output is None:
        return None
    output_type, streams = output or (None, None)
    return {
        "input_schema": input_type.model_json_schema() if input_type else None,
        "output_schema": output_type.model_json_schema() if output_type else None,
        "supports_streaming": streams,
    }


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def _first_param_model(fn: Any) -> type[BaseModel] | None:
    import inspect

    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    if not params:
        return None
    annotation = _hints(fn).get(params[0].name)
    return annotation if _is_model(annotation) else None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_generator(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return isinstance(origin, type) and issubclass(
        origin, (Generator, AsyncGenerator, Iterator, AsyncIterator)
    )


def _awaited_model(tp: Any) -> type[BaseModel] | None:
    origin = typing.get_origin(tp)
    if isinstance(origin, type) and issubclass(origin, Awaitable):
        (inner,) = typing.get_args(tp)
        return inner if _is_model(inner) else None
    return None


def _output_type(tp: Any) -> tuple[type[BaseModel] | None, bool] | None:
    if _is_model(tp):
        return tp, False
    if _is_generator(tp):
        return None, True
    if typing.get_origin(tp) is not None and _awaited_model(tp) is not None:
        return _awaited_model(tp), False
    if typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        models = [_awaited_model(a) or a for a in args if _awaited_model(a) or _is_model(a)]
        generators = [a for a in args if _is_generator(a)]
        if len(args) == 2 and len(models) == 1 and len(generators) == 1:
            return models[0], True
    return None
