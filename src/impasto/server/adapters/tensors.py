"""Open Inference Protocol tensors on the wire: JSON ``data`` and the binary tensor data
extension, both ways.

A request is a JSON object, optionally followed by raw tensor bytes: then the
``Inference-Header-Content-Length`` header gives the JSON's length and each binary input
says its size in ``parameters.binary_data_size``; the tensors follow in the order of
``inputs``, little-endian, row-major, BYTES elements each a 4-byte little-endian length and
the bytes. Without that header the whole body is JSON, whatever the ``Content-Type`` says
(tritonclient sends none). Every inconsistency (data that does not fill its shape, sizes past
the body, an unknown datatype) is a 400 naming the tensor, never a 500.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import MalformedInput
from ..requests import parse_json

NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMPY, "BYTES", "BF16")


@dataclass
class Tensor:
    """One tensor: BYTES data is a flat list (``str`` from JSON, ``bytes`` from binary);
    every other datatype a numpy array of its shape."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    parameters: dict[str, Any] = field(default_factory=dict)
    base64: bool = False  # BYTES elements that are not text: base64 in JSON

    @property
    def count(self) -> int:
        return math.prod(self.shape)


def parse_infer(
    body: bytes, header_length: str | None, max_depth: int
) -> tuple[dict, list[Tensor]]:
    """An inference request: its JSON object and its input tensors."""
    binary = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise MalformedInput(
                f"Inference-Header-Content-Length is {header_length!r} but the body holds "
                f"{len(body)} bytes",
                field="Inference-Header-Content-Length",
            )
        body, binary = body[:length], body[length:]
    request = parse_json(body, max_depth)
    if not isinstance(request, dict):
        raise MalformedInput("the inference request must be a JSON object", field="body")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MalformedInput("inputs must be a non-empty list of tensors", field="inputs")
    tensors, offset = [], 0
    for i, spec in enumerate(inputs):
        tensor, used = _input(spec, i, binary, offset)
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise MalformedInput(
            f"the body holds {len(binary) - offset} bytes of binary data no input claims "
            "(check each input's binary_data_size)",
            field="inputs",
        )
    return request, tensors


def _input(spec: Any, i: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise MalformedInput(f"inputs[{i}] must be an object with a name", field="inputs")
    name = spec["name"]
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise MalformedInput(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}",
            field=name,
        )
    if datatype == "BF16":
        raise MalformedInput(f"input {name!r}: BF16 is not supported; send FP32", field=name)
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise MalformedInput(f"input {name!r}: shape must be a list of sizes >= 0", field=name)
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise MalformedInput(f"input {name!r}: parameters must be an object", field=name)
    count = math.prod(shape)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise MalformedInput(
                f"input {name!r}: binary_data_size {size!r} runs past the body's "
                f"{len(binary) - offset} remaining bytes",
                field=name,
            )
        chunk = binary[offset : offset + size]
        return Tensor(
            name, datatype, shape, _from_binary(chunk, datatype, shape, name), params
        ), size
    if "data" not in spec:
        raise MalformedInput(f"input {name!r} has no data (nor binary_data_size)", field=name)
    flat = _flatten(spec["data"])
    if len(flat) != count:
        raise MalformedInput(
            f"input {name!r}: {len(flat)} values do not fill shape {shape} ({count} values)",
            field=name,
        )
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise MalformedInput(f"input {name!r}: BYTES data must be strings", field=name)
        return Tensor(name, datatype, shape, flat, params), 0
    try:
        array = np.asarray(flat, dtype=NUMPY[datatype]).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedInput(f"input {name!r}: not {datatype} data ({exc})", field=name) from None
    return Tensor(name, datatype, shape, array, params), 0


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _from_binary(chunk: bytes, datatype: str, shape: list[int], name: str) -> Any:
    count = math.prod(shape)
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                break
            (length,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + length > len(chunk):
                pos = len(chunk) + 1
                break
            items.append(chunk[pos : pos + length])
            pos += length
        if pos != len(chunk) or len(items) != count:
            raise MalformedInput(
                f"input {name!r}: its BYTES data does not hold {count} length-prefixed elements",
                field=name,
            )
        return items
    dtype = NUMPY[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise MalformedInput(
            f"input {name!r}: {len(chunk)} bytes do not fill shape {shape} of {datatype} "
            f"({count * dtype.itemsize} bytes)",
            field=name,
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def bytes_elements(elements: list[bytes | str]) -> bytes:
    """BYTES elements in the binary layout."""
    out = bytearray()
    for element in elements:
        data = element.encode() if isinstance(element, str) else element
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def render_outputs(
    head: dict[str, Any], outputs: list[Tensor], binary: list[bool]
) -> tuple[bytes, int | None]:
    """The response body and, when any output travels as binary, the JSON header's length."""
    from ..responses import dumps

    described, tail = [], []
    for tensor, as_binary in zip(outputs, binary, strict=True):
        out: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        params = dict(tensor.parameters)
        if as_binary:
            raw = (
                bytes_elements(tensor.data)
                if tensor.datatype == "BYTES"
                else np.ascontiguousarray(tensor.data, dtype=NUMPY[tensor.datatype]).tobytes()
            )
            params["binary_data_size"] = len(raw)
            tail.append(raw)
        elif tensor.datatype == "BYTES":
            if tensor.base64:
                params["content_type"] = "base64"
                out["data"] = [base64.b64encode(e).decode("ascii") for e in tensor.data]
            else:
                out["data"] = [e.decode() if isinstance(e, bytes) else e for e in tensor.data]
        else:
            out["data"] = np.asarray(tensor.data).reshape(-1).tolist()
        out["parameters"] = params or None
        described.append(out)
    header = dumps({**head, "outputs": described})
    if not tail:
        return header, None
    return header + b"".join(tail), len(header)
