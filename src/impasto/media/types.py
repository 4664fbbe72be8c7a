"""The media types a model takes and returns: ``Image``, ``Video``, ``Audio`` and ``File``.

As annotations (``def predict(self, image: Image)`` or a pydantic field) they decode what the
client sent (base64, a ``data:`` URI, raw bytes, a multipart part, an allowed URL) with the
limits of the :class:`~impasto.config.MediaConfig` found in the validation context
(``model_validate(data, context={"media": config})``; defaults when absent). Returned from
``predict`` they are encoded by :mod:`impasto.media.encode`.

A limit breach raises :class:`~impasto.errors.PayloadTooLarge` straight out of validation so
it keeps its 413; any other bad media becomes a pydantic error at the field's ``loc`` (422).
"""

from __future__ import annotations

import io
import types
import typing
import wave
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image as PILImage
from PIL import ImageMode
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from ..config import MediaConfig
from ..errors import InputError, PayloadTooLarge

MediaKind = Literal["image", "video", "audio", "file"]

_DEFAULT_CONFIG = MediaConfig()
_SOURCES = "base64 text, a data: URI, a multipart file part, or an http(s) URL when allowed"


def media_config(context: Any) -> MediaConfig:
    """The MediaConfig in a pydantic validation context (``{"media": ...}``), else defaults."""
    media = context.get("media") if isinstance(context, dict) else None
    if isinstance(media, MediaConfig):
        return media
    if isinstance(media, dict):
        return MediaConfig.model_validate(media)
    return _DEFAULT_CONFIG


def _media_schema(
    kind: MediaKind, convert: Callable[[Any, str, MediaConfig], Any]
) -> core_schema.CoreSchema:
    """A pydantic core schema running ``convert(value, field, config)`` on each value."""
    from .encode import encode  # encode imports this module; bound once per schema build

    def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
        field = info.field_name or kind
        try:
            return convert(value, field, media_config(info.context))
        except PayloadTooLarge:
            raise  # keep 413; pydantic would turn it into a 422
        except InputError as exc:
            reason = exc.message.removeprefix(f"{field}: ")
            raise PydanticCustomError(f"invalid_{kind}", "{reason}", {"reason": reason}) from None

    def serialize(value: Any, info: core_schema.SerializationInfo) -> dict[str, Any]:
        config = media_config(info.context)
        return encode(value, config=config).to_dict(config.data_uri)

    return core_schema.with_info_plain_validator_function(
        validate,
        serialization=core_schema.plain_serializer_function_ser_schema(
            serialize, info_arg=True, when_used="json"
        ),
    )


_ENCODED_SCHEMA = {
    "type": "object",
    "description": "Encoded media, as every impasto JSON response carries it.",
    "properties": {
        "data": {"type": "string", "description": "base64, or a data: URI (media.data_uri)"},
        "content_type": {"type": "string"},
        "format": {"type": "string"},
        "width": {"type": ["integer", "null"]},
        "height": {"type": ["integer", "null"]},
        "frames": {"type": "integer"},
        "filename": {"type": "string"},
    },
    "required": ["data", "content_type", "format"],
}


def _json_schema(handler: GetJsonSchemaHandler, media_type: str, what: str) -> dict[str, Any]:
    """The input (validation) schema is a binary string; the output one the encoded object."""
    if handler.mode == "serialization":
        return dict(_ENCODED_SCHEMA)
    return {
        "type": "string",
        "format": "binary",
        "contentMediaType": media_type,
        "description": f"{what}: {_SOURCES}.",
    }


@dataclass(frozen=True)
class _ImageField:
    """Annotation metadata behind ``Image`` and ``Image["RGB"]``."""

    mode: str | None = None

    def convert(self, value: Any, field: str, config: MediaConfig) -> PILImage.Image:
        from .decode import decode_image, load_bytes

        if isinstance(value, PILImage.Image):  # built in Python (an output), not client data
            return value if self.mode in (None, value.mode) else value.convert(self.mode)
        data, _ = load_bytes(value, field=field, config=config)
        return decode_image(data, field=field, config=config, mode=self.mode)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _media_schema("image", self.convert)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        what = f"An image (converted to {self.mode})" if self.mode else "An image"
        return _json_schema(handler, "image/*", what)


class Image:
    """An image input; the model receives a ``PIL.Image.Image`` with EXIF orientation applied.

    ``Image["RGB"]`` (any PIL mode) also converts it to that mode. Returning a PIL image or
    a uint8 HxWxC array from ``predict`` is how a model outputs one.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("impasto.Image is an annotation; build images with PIL.Image instead")

    def __class_getitem__(cls, mode: str) -> Any:
        try:
            ImageMode.getmode(mode)
        except KeyError:
            raise TypeError(f"Image[{mode!r}]: not a PIL mode; use e.g. 'RGB', 'RGBA' or 'L'")
        return Annotated[PILImage.Image, _ImageField(mode)]

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _ImageField().__get_pydantic_core_schema__(source, handler)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return _ImageField().__get_pydantic_json_schema__(schema, handler)


@dataclass(frozen=True, eq=False)
class Video:
    """A video: RGB frames (PIL images, or a uint8 ``(T, H, W, C)`` array) at ``fps``.

    Returned from ``predict`` it is encoded as mp4, gif or webp; as an input annotation the
    model receives a ``Video`` whose frames are decoded PIL images.
    """

    frames: list[PILImage.Image] | np.ndarray
    fps: float = 8.0

    def __post_init__(self) -> None:
        if not isinstance(self.frames, list | np.ndarray):
            object.__setattr__(self, "frames", list(self.frames))
        if len(self.frames) == 0:
            raise ValueError("Video needs at least one frame")
        if not self.fps > 0:
            raise ValueError(f"Video fps must be positive, got {self.fps}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the first frame."""
        first = self.frames[0]
        if isinstance(first, PILImage.Image):
            return first.size
        shape = np.shape(first)
        return int(shape[1]), int(shape[0])

    @classmethod
    def _convert(cls, value: Any, field: str, config: MediaConfig) -> Video:
        from .decode import decode_video, load_bytes

        if isinstance(value, Video):
            return value
        data, _ = load_bytes(value, field=field, config=config)
        return decode_video(data, field=field, config=config)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _media_schema("video", cls._convert)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return _json_schema(handler, "video/*", "A video (mp4, webm, gif, animated webp...)")


@dataclass(frozen=True)
class Audio:
    """Encoded audio bytes with their content type; kept as sent, never transcoded."""

    data: bytes
    content_type: str = "audio/wav"
    sample_rate: int | None = None

    @classmethod
    def from_array(cls, samples: Any, sample_rate: int) -> Audio:
        """16-bit PCM WAV from float samples in [-1, 1] or int16, shaped (n,) or (n, channels)."""
        arr = np.asarray(samples)
        if arr.dtype != np.int16:
            arr = (np.clip(arr.astype(np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
        arr = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
        buf = io.BytesIO()
        with wave.open(buf, "wb") as out:
            out.setnchannels(arr.shape[1])
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(np.ascontiguousarray(arr, dtype="<i2").tobytes())
        return cls(buf.getvalue(), "audio/wav", int(sample_rate))

    @classmethod
    def _convert(cls, value: Any, field: str, config: MediaConfig) -> Audio:
        from .decode import decode_audio, load_bytes

        if isinstance(value, Audio):
            return value
        data, content_type = load_bytes(value, field=field, config=config)
        return decode_audio(data, field=field, config=config, content_type=content_type)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _media_schema("audio", cls._convert)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return _json_schema(handler, "audio/*", "An audio file")


@dataclass(frozen=True)
class File:
    """Opaque bytes with a content type and an optional file name, passed through untouched."""

    data: bytes
    content_type: str = "application/octet-stream"
    filename: str | None = None

    @classmethod
    def _convert(cls, value: Any, field: str, config: MediaConfig) -> File:
        from .decode import UploadedFile, load_bytes

        if isinstance(value, File):
            return value
        data, content_type = load_bytes(value, field=field, config=config)
        filename = value.filename if isinstance(value, UploadedFile) else None
        return cls(data, content_type or "application/octet-stream", filename)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _media_schema("file", cls._convert)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return _json_schema(handler, "application/octet-stream", "A file")


_KINDS: dict[Any, MediaKind] = {Image: "image", Video: "video", Audio: "audio", File: "file"}


def media_kind(annotation: Any) -> MediaKind | None:
    """The media kind an annotation takes (``Image``, ``list[Video]``, ``File | None``...)."""
    if isinstance(annotation, _ImageField):
        return "image"
    if isinstance(annotation, type) and annotation in _KINDS:
        return _KINDS[annotation]
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *meta = typing.get_args(annotation)
        return next((k for k in map(media_kind, meta) if k), None) or media_kind(inner)
    if origin in (list, tuple, typing.Union, types.UnionType):
        return next((k for k in map(media_kind, typing.get_args(annotation)) if k), None)
    return None
