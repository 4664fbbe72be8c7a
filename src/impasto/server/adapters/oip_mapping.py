"""Tensors to an endpoint's inputs and its results back to tensors (Open Inference Protocol).

Inputs map by name onto the endpoint's fields: a BYTES ``prompt`` is the text, a BYTES
``image`` an encoded file (base64 text in JSON), a UINT8 ``image`` of ``[H, W, C]`` pixels;
the first dimension is the batch: a ``prompt`` of shape ``[2]`` is two predictions (a
tensor of one row, or a request ``parameters`` entry, is the same for all of them; a field
that takes a list takes the whole tensor). Results map back by field name: a list of images
is the tensor ``images``, BYTES of encoded files (``output_format`` parameter) or UINT8
``[N, H, W, C]`` with ``image_encoding: "uint8"``; numbers and their lists are INT64 or FP64;
text is BYTES; anything else BYTES of JSON. The results of a batch are concatenated.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from ...config import MediaConfig
from ...errors import MalformedInput, ModelError
from ...media import encode, is_media, media_kind, to_jsonable, to_pil
from ...media.values import Video
from ...spec import EndpointSpec
from .fields import fields_of, is_list_field, media_field
from .tensors import Tensor

# Request parameters impasto reads itself; the others are the endpoint's fields.
RESERVED = frozenset(
    {"endpoint", "output_format", "quality", "image_encoding", "binary_data_output",
     "content_type", "headers", "timeout", "priority", "sequence_id", "sequence_start",
     "sequence_end"}
)  # fmt: skip


def to_payloads(
    endpoint: EndpointSpec, tensors: list[Tensor], parameters: dict[str, Any]
) -> list[dict[str, Any]]:
    """One payload per batch row."""
    fields = fields_of(endpoint)
    shared: dict[str, Any] = {}
    for key, value in parameters.items():
        if key in RESERVED or (fields is not None and key not in fields):
            continue
        shared[key] = value
    rows: dict[str, list[Any]] = {}
    for tensor in tensors:
        if fields is not None and tensor.name not in fields:
            known = ", ".join(fields)
            raise MalformedInput(
                f"unknown input {tensor.name!r}; the endpoint {endpoint.name} takes: {known}",
                field=tensor.name,
            )
        value = _as_value(endpoint, tensor)
        if isinstance(value, _Rows):
            rows[tensor.name] = value.rows
        else:
            shared[tensor.name] = value
    sizes = {len(r) for r in rows.values()}
    if len(sizes) > 1:
        listed = ", ".join(f"{k} ({len(v)})" for k, v in rows.items())
        raise MalformedInput(
            f"inputs disagree on the batch size (first dimension): {listed}", field="inputs"
        )
    batch = sizes.pop() if sizes else 1
    return [{**shared, **{k: v[i] for k, v in rows.items()}} for i in range(batch)]


class _Rows:
    """A tensor's values, one per batch row."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows


def _as_value(endpoint: EndpointSpec, t: Tensor) -> Any:
    media = media_field(endpoint, t.name)
    listed = is_list_field(endpoint, t.name)
    if t.datatype == "BYTES":
        elements = [e if media else _text(e, t.name) for e in t.data]
        if listed:
            return elements
        if len(t.shape) <= 1 and len(elements) == 1:
            return elements[0]
        if len(t.shape) == 1:
            return _Rows(elements)
        width = t.count // t.shape[0] if t.shape[0] else 0
        if width == 1:  # [N, 1]: one element per row
            return _Rows(elements)
        return _Rows([elements[i * width : (i + 1) * width] for i in range(t.shape[0])])
    array = t.data
    if media:  # pixels: [H, W, C] is one image, [N, H, W, C] N of them
        if t.datatype != "UINT8" or array.ndim not in (3, 4) or array.shape[-1] not in (1, 3, 4):
            raise MalformedInput(
                f"input {t.name!r}: an image is BYTES (an encoded file) or UINT8 [H, W, C]",
                field=t.name,
            )
        images = [to_pil(a) for a in (array if array.ndim == 4 else [array])]
        if listed:
            return images
        return images[0] if len(images) == 1 else _Rows(images)
    if listed:
        return array.reshape(-1).tolist() if array.ndim <= 1 else array.tolist()
    if array.size == 1:
        return array.reshape(-1)[0].item()
    return _Rows([row.reshape(-1)[0].item() if row.size == 1 else row.tolist() for row in array])


def _text(element: str | bytes, name: str) -> str:
    if isinstance(element, str):
        return element
    try:
        return element.decode()
    except UnicodeDecodeError:
        raise MalformedInput(f"input {name!r}: BYTES data is not UTF-8 text", field=name) from None


# -- results -> tensors -----------------------------------------------------------------------


def to_tensors(
    results: list[Any], *, media: MediaConfig, fmt: str | None, quality: int | None, pixels: bool
) -> list[Tensor]:
    """The results of a batch as output tensors named after their fields (runs in a thread)."""
    columns: dict[str, list[Any]] = {}
    for result in results:
        for name, value in _named(result).items():
            columns.setdefault(name, []).append(value)
    tensors = []
    for name, values in columns.items():
        if all(v is None for v in values):
            continue
        tensors.append(_column(name, values, media, fmt, quality, pixels))
    return tensors


def _named(result: Any) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return {n: getattr(result, n) for n in type(result).model_fields}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    if is_media(result) or (isinstance(result, list) and result and all(map(is_media, result))):
        return {"images": result}
    return {"output": result}


def _column(
    name: str, values: list[Any], media: MediaConfig, fmt: str | None, quality: int | None,
    pixels: bool,
) -> Tensor:  # fmt: skip
    lists = all(isinstance(v, list | tuple) for v in values)
    flat = [x for v in values for x in v] if lists else list(values)
    if flat and all(is_media(x) or isinstance(x, Video) for x in flat):
        if pixels and not any(isinstance(x, Video) for x in flat):
            arrays = [np.asarray(to_pil(x).convert("RGB")) for x in flat]
            if len({a.shape for a in arrays}) > 1:
                raise MalformedInput(
                    "image_encoding uint8 needs images of one size; use encoded files",
                    field="image_encoding",
                )
            stacked = np.stack(arrays)
            return Tensor(name, "UINT8", list(stacked.shape), stacked)
        encoded = [encode(x, format=fmt, quality=quality, config=media).data for x in flat]
        return Tensor(name, "BYTES", [len(encoded)], encoded, base64=True)
    if flat and all(isinstance(x, bool) for x in flat):
        return Tensor(name, "BOOL", [len(flat)], np.asarray(flat, dtype=np.bool_))
    if flat and all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
        return Tensor(name, "INT64", [len(flat)], np.asarray(flat, dtype=np.int64))
    if flat and all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
        array = np.asarray(flat, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ModelError(f"output {name!r} holds NaN or infinity, which JSON cannot carry")
        return Tensor(name, "FP64", [len(flat)], array)
    if all(isinstance(x, str) for x in flat):
        return Tensor(name, "BYTES", [len(flat)], [x.encode() for x in flat])
    texts = [
        json.dumps(to_jsonable(v, config=media), separators=(",", ":")).encode() for v in values
    ]
    return Tensor(name, "BYTES", [len(texts)], texts)


# -- metadata ---------------------------------------------------------------------------------


def tensor_specs(model: type[BaseModel] | None, fallback: str) -> list[dict[str, Any]]:
    """Tensor metadata for each field of ``model`` (one BYTES ``fallback`` when it has none)."""
    if model is None:
        return [{"name": fallback, "datatype": "BYTES", "shape": [-1]}]
    specs = []
    for name, info in model.model_fields.items():
        spec: dict[str, Any] = {
            "name": info.alias or name,
            "datatype": _datatype(info.annotation),
            "shape": [-1],
        }
        if not info.is_required():
            spec["parameters"] = {"optional": True}
        specs.append(spec)
    return specs


def _datatype(annotation: Any) -> str:
    if media_kind(annotation) is not None:
        return "BYTES"
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _datatype(args[0])
    if origin is Literal:
        return _datatype(type(args[0])) if args else "BYTES"
    if origin in (list, tuple, set, frozenset) and args:
        return _datatype(args[0])
    if origin is not None and args and all(_datatype(a) == _datatype(args[0]) for a in args):
        return _datatype(args[0])  # a union of one kind (``int | None``)
    return {bool: "BOOL", int: "INT64", float: "FP64", str: "BYTES"}.get(annotation, "BYTES")
