"""The media types a model takes and returns: ``Image``, ``Video``, ``Audio`` and ``File``.

As annotations (``def predict(self, image: Image)`` or a pydantic field) they decode what the
client sent (base64, a ``data:`` URI, raw bytes, a multipart part, an allowed URL) with the
limits of the :class:`~impasto.config.MediaConfig` found in the validation context
(``model_validate(data, context={"media": config, "budget": DecodeBudget(config)})``;
defaults and no request budget when absent). Returned from ``predict`` they are encoded by
:mod:`impasto.media.encode`.

This module sits on top of the media package: it imports the values, the decoders and the
encoders, and gives ``Video``, ``Audio`` and ``File`` their pydantic hooks.

A limit breach raises :class:`~impasto.errors.PayloadTooLarge` straight out of validation so
it keeps its 413; any other bad media becomes a pydantic error at the field's ``loc`` (422).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from PIL import Image as PILImage
from PIL import ImageMode
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from ..config import MediaConfig
from ..errors import InputError, PayloadTooLarge
from .budget import DecodeBudget
from .decode import decode_audio, decode_image, decode_video, load_bytes
from .encode import encode
from .values import Audio, File, UploadedFile, Video

MediaKind = Literal["image", "video", "audio", "file"]

_DEFAULT_CONFIG = MediaConfig()
_SOURCES = "base64 text, a data: URI, a multipart file part, or an http(s) URL when allowed"
Convert = Callable[[Any, str, MediaConfig, DecodeBudget | None], Any]


def media_config(context: Any) -> MediaConfig:
    """The MediaConfig in a pydantic validation context (``{"media": ...}``), else defaults."""
    media = context.get("media") if isinstance(context, dict) else None
    if isinstance(media, MediaConfig):
        return media
    if isinstance(media, dict):
        return MediaConfig.model_validate(media)
    return _DEFAULT_CONFIG


def _budget(context: Any) -> DecodeBudget | None:
    budget = context.get("budget") if isinstance(context, dict) else None
    return budget if isinstance(budget, DecodeBudget) else None


def _media_schema(kind: MediaKind, convert: Convert) -> core_schema.CoreSchema:
    """A pydantic core schema running ``convert(value, field, config, budget)`` on each value."""

    def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
        field = info.field_name or kind
        budget = _budget(info.context)
        try:
            if budget is not None:
                budget.count(field)
            return convert(value, field, media_config(info.context), budget)
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

    def convert(
        self, value: Any, field: str, config: MediaConfig, budget: DecodeBudget | None
    ) -> PILImage.Image:
        if isinstance(value, PILImage.Image):  # built in Python (an output), not client data
            return value if self.mode in (None, value.mode) else value.convert(self.mode)
        data, content_type = load_bytes(value, field=field, config=config)
        return decode_image(
            data,
            field=field,
            config=config,
            mode=self.mode,
            budget=budget,
            content_type=content_type,
        )

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


def _video(value: Any, field: str, config: MediaConfig, budget: DecodeBudget | None) -> Video:
    if isinstance(value, Video):
        return value
    data, _ = load_bytes(value, field=field, config=config)
    return decode_video(data, field=field, config=config, budget=budget)


def _audio(value: Any, field: str, config: MediaConfig, budget: DecodeBudget | None) -> Audio:
    if isinstance(value, Audio):
        return value
    data, content_type = load_bytes(value, field=field, config=config)
    if budget is not None:
        budget.reserve(len(data), field)
    return decode_audio(data, field=field, config=config, content_type=content_type)


def _file(value: Any, field: str, config: MediaConfig, budget: DecodeBudget | None) -> File:
    if isinstance(value, File):
        return value
    data, content_type = load_bytes(value, field=field, config=config)
    if budget is not None:
        budget.reserve(len(data), field)
    filename = value.filename if isinstance(value, UploadedFile) else None
    return File(data, content_type or "application/octet-stream", filename)


def _hook(cls: type, kind: MediaKind, convert: Convert, media_type: str, what: str) -> None:
    """Give a value class its pydantic hooks (the values module knows nothing of pydantic)."""

    def core(cls_: type, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return _media_schema(kind, convert)

    def json(
        cls_: type, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return _json_schema(handler, media_type, what)

    cls.__get_pydantic_core_schema__ = classmethod(core)  # type: ignore[attr-defined]
    cls.__get_pydantic_json_schema__ = classmethod(json)  # type: ignore[attr-defined]


_hook(Video, "video", _video, "video/*", "A video (mp4, webm, gif, animated webp...)")
_hook(Audio, "audio", _audio, "audio/*", "An audio file")
_hook(File, "file", _file, "application/octet-stream", "A file")

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
