"""Media values -> bytes in a format, and the envelopes they travel in (JSON, raw, multipart).

Plain sync functions: the server runs them in a worker thread. Defaults are the fast
settings measured by ``bench/encoders.py``: PNG at ``media.png_compress_level`` (1) with
the "Up" filter and zlib RLE, JPEG 4:2:0 through Pillow's libjpeg-turbo, WebP ``method=0``,
GIF frames pre-quantized with FASTOCTREE, H.264 (x264 veryfast) through PyAV in memory.
"""

from __future__ import annotations

import base64
import dataclasses
import mimetypes
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from typing import Any

import av
import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ..accept import ranges
from ..config import MediaConfig
from ..errors import InputError, ModelError
from .values import Audio, File, Video

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
VIDEO_FORMATS = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}
_ALIASES = {"jpg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg"}
_X264_PRESET = "veryfast"  # bench/encoders.py: 0.37x the time of "medium", 0.86x the bytes
_DEFAULT_CONFIG = MediaConfig()


@dataclass(frozen=True)
class Encoded:
    """Encoded media bytes and what a client needs to know about them."""

    data: bytes
    content_type: str
    format: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    filename: str | None = None

    def b64(self, data_uri: bool) -> str:
        """Base64 text, or a ``data:`` URI a browser can show directly."""
        text = base64.b64encode(self.data).decode("ascii")
        return f"data:{self.content_type};base64,{text}" if data_uri else text

    def to_dict(self, data_uri: bool) -> dict[str, Any]:
        """The JSON object that stands for this media in a response."""
        out: dict[str, Any] = {
            "data": self.b64(data_uri),
            "content_type": self.content_type,
            "format": self.format,
            "width": self.width,
            "height": self.height,
        }
        if self.frames is not None:
            out["frames"] = self.frames
        if self.filename is not None:
            out["filename"] = self.filename
        return out


def is_media(value: Any) -> bool:
    """Whether ``value`` is encoded as media: a PIL image, a uint8 image array, or a media type."""
    if isinstance(value, PILImage.Image | Video | Audio | File):
        return True
    return (
        isinstance(value, np.ndarray)
        and value.dtype == np.uint8
        and (value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (1, 3, 4)))
    )


def _kind(value: Any) -> str:
    if isinstance(value, Video):
        return "video"
    if isinstance(value, Audio):
        return "audio"
    return "file" if isinstance(value, File) else "image"


def normalize_format(format: str, kind: str) -> str:
    """A client's format name (``jpg``, ``image/webp``, ``PNG``...) as one of ``kind``'s formats."""
    table = VIDEO_FORMATS if kind == "video" else IMAGE_FORMATS
    name = _ALIASES.get(format.strip().lower(), format.strip().lower())
    if name not in table:
        name = next((k for k, v in table.items() if v == name), name)
    if name not in table:
        raise InputError(
            f"output_format: {format!r} is not a {kind} format; use one of {', '.join(table)}",
            field="output_format",
        )
    return name


def encode(
    value: Any,
    *,
    format: str | None = None,
    quality: int | None = None,
    config: MediaConfig | None = None,
) -> Encoded:
    """Encode one media value. ``format`` applies to images and videos; audio and files are
    returned as they are."""
    config = config or _DEFAULT_CONFIG
    if quality is not None and not 1 <= quality <= 100:
        raise InputError(f"quality: {quality} is not between 1 and 100", field="quality")
    if isinstance(value, Audio):
        return Encoded(value.data, value.content_type, _extension(value.content_type, None))
    if isinstance(value, File):
        ext = _extension(value.content_type, value.filename)
        return Encoded(value.data, value.content_type, ext, filename=value.filename)
    q = quality or config.quality
    if isinstance(value, Video):
        fmt = normalize_format(format or config.video_format, "video")
        return _encode_video(value, fmt, q)
    fmt = normalize_format(format or config.image_format, "image")
    img = to_pil(value)
    buf = BytesIO()
    if fmt == "png":
        _png(img, config.png_compress_level, buf)
    elif fmt == "jpeg":
        img = img if img.mode in ("L", "RGB") else _flatten(img)
        img.save(buf, format="JPEG", quality=q, subsampling=2)
    else:
        img.save(buf, format="WEBP", quality=q, method=0)
    return Encoded(buf.getvalue(), IMAGE_FORMATS[fmt], fmt, img.width, img.height)


_PNG_COLOR = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}


def _png(img: PILImage.Image, level: int, buf: BytesIO) -> None:
    """PNG at a fast level (0-3): the "Up" filter in numpy, then zlib's RLE strategy.

    Pillow's writer tries every filter on every row; this is 4-5x faster than Pillow at
    level 6 and as small on photo-like images (bench/encoders.py). Levels 4-9 (smallest
    files) and other modes go through Pillow.
    """
    text = _png_text(img)
    if level > 3 or img.mode not in _PNG_COLOR or "icc_profile" in img.info:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text:
            info.add_text(key.decode(), value.decode("latin-1"))
        img = img if img.mode in ("1", "L", "LA", "I;16", "P", "RGB", "RGBA") else _rgb(img)
        img.save(buf, format="PNG", compress_level=level, pnginfo=info)
        return
    rows = np.asarray(img).reshape(img.height, -1)
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it (mod 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    deflate = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(filtered) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", img.width, img.height, 8, _PNG_COLOR[img.mode], 0, 0, 0)
    buf.write(b"\x89PNG\r\n\x1a\n")
    chunks = [(b"IHDR", ihdr), *((b"tEXt", k + b"\0" + v) for k, v in text)]
    for tag, body in (*chunks, (b"IDAT", idat), (b"IEND", b"")):
        buf.write(struct.pack(">I", len(body)) + tag)
        buf.write(body)
        buf.write(struct.pack(">I", zlib.crc32(body, zlib.crc32(tag))))


def _png_text(img: PILImage.Image) -> list[tuple[bytes, bytes]]:
    """Text metadata to keep (e.g. a generation recipe): str ``info`` entries, Latin-1 only."""
    out = []
    for key, value in img.info.items():
        if isinstance(key, str) and isinstance(value, str) and 0 < len(key) < 80:
            try:
                out.append((key.encode("latin-1"), value.encode("latin-1")))
            except UnicodeEncodeError:
                continue
    return out


def _extension(content_type: str, filename: str | None) -> str:
    if filename and "." in filename:
        return filename.rsplit(".", 1)[1].lower()
    subtype = {"audio/mpeg": ".mp3", "audio/wav": ".wav"}.get(content_type)
    subtype = subtype or mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return subtype.lstrip(".")


def to_pil(value: Any) -> PILImage.Image:
    """A PIL image from a PIL image or an HxW / HxWxC array (uint8, or float in [0, 1])."""
    if isinstance(value, PILImage.Image):
        return value
    arr = np.asarray(value)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != np.bool_:
            raise ModelError(f"cannot encode an array of {arr.dtype} as an image; use uint8")
        arr = _to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise ModelError(f"cannot encode an array shaped {arr.shape} as an image; use HxW or HxWxC")
    return PILImage.fromarray(np.ascontiguousarray(arr))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    out = np.multiply(arr, 255.0, dtype=np.float32)
    np.add(out, 0.5, out=out)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def _has_alpha(img: PILImage.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def _rgb(img: PILImage.Image) -> PILImage.Image:
    return img.convert("RGBA" if _has_alpha(img) else "RGB")


def _flatten(img: PILImage.Image) -> PILImage.Image:
    """RGB for JPEG: transparent pixels become white rather than their hidden colour."""
    if not _has_alpha(img):
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    out = PILImage.new("RGB", img.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


# -- video ------------------------------------------------------------------------------------


def _encode_video(video: Video, fmt: str, quality: int) -> Encoded:
    images = [_rgb_frame(f) for f in video.frames]
    size = images[0].size
    if any(img.size != size for img in images):
        raise ModelError(f"video frames differ in size (first is {size[0]}x{size[1]})")
    duration = max(1, round(1000 / video.fps))
    buf = BytesIO()
    if fmt == "mp4":
        size = _mp4(images, video.fps, quality, buf)
    elif fmt == "gif":
        quantized = [img.quantize(256, method=PILImage.Quantize.FASTOCTREE) for img in images]
        quantized[0].save(
            buf, format="GIF", save_all=True, append_images=quantized[1:], duration=duration,
            loop=0, optimize=False,
        )  # fmt: skip
    else:
        images[0].save(
            buf, format="WEBP", save_all=True, append_images=images[1:], duration=duration,
            loop=0, quality=quality, method=0,
        )  # fmt: skip
    return Encoded(buf.getvalue(), VIDEO_FORMATS[fmt], fmt, size[0], size[1], len(images))


def _rgb_frame(frame: Any) -> PILImage.Image:
    img = to_pil(frame)
    return img if img.mode == "RGB" else img.convert("RGB")


def _mp4(images: list[PILImage.Image], fps: float, quality: int, buf: BytesIO) -> tuple[int, int]:
    """H.264 yuv420p in memory; odd sizes are padded to even by repeating the edge."""
    w, h = images[0].size
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    crf = round(51 - 0.35 * quality)  # quality 90 -> crf 20, 100 -> 16, 50 -> 34
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        stream.options = {"crf": str(crf), "preset": _X264_PRESET}
        for i, img in enumerate(images):
            arr = np.asarray(img)
            if w % 2 or h % 2:
                arr = np.pad(arr, pad, mode="edge")
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return w + w % 2, h + h % 2


# -- content negotiation ----------------------------------------------------------------------

_ACCEPT = {
    "image": {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"},
    "video": {"video/mp4": "mp4", "image/gif": "gif", "image/webp": "webp"},
}
_KIND_DEFAULT = {"image": "png", "video": "mp4"}


def format_for_accept(accept: str | None, kind: str, default: str | None = None) -> str | None:
    """The format an Accept header asks for, or None when it does not ask for ``kind`` media.

    ``*/*`` alone answers None: curl and browsers send it and expect the JSON envelope. A
    ``image/*`` / ``video/*`` range answers ``default`` (else png / mp4). A JSON type that the
    client ranks above every media type also answers None.
    """
    if not accept or kind not in _ACCEPT:
        return None
    table = _ACCEPT[kind]
    for media in ranges(accept):
        if media in table:
            return table[media]
        if media == f"{kind}/*":
            return default or _KIND_DEFAULT[kind]
        if media in ("application/json", "application/*", "*/*"):
            return None
    return None


# -- envelopes --------------------------------------------------------------------------------


def _children(value: Any) -> Iterator[Any] | None:
    if isinstance(value, dict):
        return iter(value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return iter(value)
    if isinstance(value, BaseModel):
        return (getattr(value, name) for name in _model_names(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (getattr(value, f.name) for f in dataclasses.fields(value))
    return None


def _model_names(model: BaseModel) -> list[str]:
    cls = type(model)
    return [*cls.model_fields, *cls.model_computed_fields]


def find_media(value: Any) -> list[Any]:
    """The media leaves of an output, in order (a single one may be answered as raw bytes)."""
    if is_media(value):
        return [value]
    children = _children(value)
    return [leaf for child in children for leaf in find_media(child)] if children else []


def to_jsonable(
    value: Any, *, format: str | None = None, quality: int | None = None,
    config: MediaConfig | None = None,
) -> Any:  # fmt: skip
    """An output as JSON-ready data, each media value replaced by its encoded JSON object."""
    config = config or _DEFAULT_CONFIG
    encoded: dict[int, dict[str, Any]] = {}
    for leaf in find_media(value):
        enc = encode(leaf, format=format, quality=quality, config=config)
        encoded[id(leaf)] = enc.to_dict(config.data_uri)
    return _jsonable(value, encoded)


def _jsonable(value: Any, encoded: dict[int, Any]) -> Any:
    if id(value) in encoded and is_media(value):
        return encoded[id(value)]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else str(to_jsonable_python(k)): _jsonable(v, encoded)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, encoded) for v in value]
    if isinstance(value, BaseModel):
        return {name: _jsonable(getattr(value, name), encoded) for name in _model_names(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        return {name: _jsonable(getattr(value, name), encoded) for name in names}
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    try:
        return to_jsonable_python(value)
    except Exception:
        raise ModelError(
            f"the model returned output holding a {type(value).__name__}, which cannot be sent "
            "as JSON; return JSON values, media or pydantic models"
        ) from None


def encode_multipart(parts: list[Encoded], boundary: str | None = None) -> tuple[bytes, str]:
    """A ``multipart/mixed`` body with one part per media value, and its content type."""
    boundary = boundary or secrets.token_hex(16)
    marker = f"--{boundary}".encode("ascii")
    if any(marker in part.data for part in parts):
        raise ValueError("the multipart boundary occurs in a part's data; pick another")
    chunks = []
    for i, part in enumerate(parts):
        ext = "jpg" if part.format == "jpeg" else part.format
        head = (
            f"Content-Type: {part.content_type}\r\n"
            f'Content-Disposition: attachment; name="media-{i}"; filename="media-{i}.{ext}"\r\n'
            f"Content-Length: {len(part.data)}\r\n\r\n"
        )
        chunks += [marker, b"\r\n", head.encode("utf-8"), part.data, b"\r\n"]
    chunks += [marker, b"--\r\n"]
    return b"".join(chunks), f"multipart/mixed; boundary={boundary}"
