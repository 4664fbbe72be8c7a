"""The inference toolkit's default decoders and encoders, by content type and Accept.

What a SageMaker handler gets when it defines no ``input_fn``/``output_fn``: JSON and CSV
bodies as Python data, images as ``{"inputs": <PIL RGB image>}`` (decoded under impasto's
image limits), audio as ``{"inputs": <bytes>}``, ``application/x-npy`` as an array; and the
prediction written back as JSON (PIL images as base64 PNG strings), CSV, npy or raw image
bytes. Anything else is the toolkit's "not supported by this framework" error.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..config import MediaConfig
from ..media import decode_image

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
X_IMAGE = "image/x-image"
UTF8_TYPES = (JSON, CSV)
IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/tiff",
    "image/bmp",
    "image/gif",
    "image/webp",
    X_IMAGE,
)
AUDIO_TYPES = ("audio/x-flac", "audio/mpeg", "audio/wave", "audio/ogg", "audio/x-audio")
CSV_HEADERS = ("question", "context", "inputs")


class UnsupportedFormat(ValueError):
    """A content type (or Accept) the default handlers cannot read (or write)."""

    def __init__(self, content_type: str | None) -> None:
        super().__init__(
            f"Content type {content_type} is not supported by this framework.\n\n"
            "Please implement input_fn to deserialize the request data or an output_fn to "
            "serialize the response. For more information, see the SageMaker Python SDK README."
        )


def base_type(content_type: str | None) -> str:
    """``image/PNG; q=1`` -> ``image/png``."""
    return (content_type or "").split(";")[0].strip().lower()


def accept_type(accept: str | None) -> str:
    """The Accept a handler sees: the first media type listed, ``application/json`` when
    there is none or it is ``*/*`` (as the toolkit does)."""
    first = (accept or "").split(",")[0].split(";")[0].strip()
    return JSON if not first or first == ANY else first


# -- decoding ----------------------------------------------------------------------------------


def decode(data: str | bytes | bytearray, content_type: str | None, media: MediaConfig) -> Any:
    """The toolkit's default ``input_fn``."""
    kind = base_type(content_type)
    if kind == JSON:
        return json.loads(data)
    if kind == CSV:
        return _decode_csv(data if isinstance(data, str) else bytes(data).decode("utf-8"))
    if kind in IMAGE_TYPES:
        return {"inputs": decode_image(bytes(data), field="inputs", config=media, mode="RGB")}
    if kind in AUDIO_TYPES:
        return {"inputs": bytes(data)}
    if kind == NPY:
        return np.load(io.BytesIO(bytes(data)), allow_pickle=False)  # pickles run code
    raise UnsupportedFormat(content_type)


def _decode_csv(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    if not lines or not any(name in lines[0].lower() for name in CSV_HEADERS):
        raise ValueError(
            "You need to provide the correct CSV with Header columns to use it with the "
            "inference toolkit default handler."
        )
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and "inputs" in rows[0]:
        return {"inputs": [row["inputs"] for row in rows]}
    return {"inputs": rows}


# -- encoding ----------------------------------------------------------------------------------


def encode(value: Any, accept: str) -> str | bytes:
    """The toolkit's default ``output_fn``."""
    kind = base_type(accept)
    if kind == JSON:
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json
        )
    if kind == CSV:
        return _encode_csv(value)
    if kind == NPY:
        buf = io.BytesIO()
        np.save(buf, value)
        return buf.getvalue()
    if kind in IMAGE_TYPES:
        return _encode_image(value, kind)
    raise UnsupportedFormat(accept)


def _json(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, datetime.datetime):
        return str(value)
    if isinstance(value, PILImage.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_csv(value: Any) -> str:
    rows = value if isinstance(value, list) else list(value)
    if not rows or not isinstance(rows[0], dict):
        raise ValueError("CSV output needs a list of objects with the same keys")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _encode_image(value: Any, kind: str) -> bytes:
    if not isinstance(value, PILImage.Image):
        raise ValueError(f"{kind} output needs an image, but the prediction is a {type(value)}")
    fmt = "PNG" if kind == X_IMAGE else kind.split("/")[1].upper()
    buf = io.BytesIO()
    value.save(buf, format=fmt)
    return buf.getvalue()
