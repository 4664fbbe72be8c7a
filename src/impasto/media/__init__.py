"""Media in one place: decode with limits on the way in, encode by preference on the way out.

Models annotate inputs with :class:`Image`, :class:`Video`, :class:`Audio` or :class:`File`
and return PIL images, arrays or these types; routes and protocol adapters only pick the
envelope (:func:`to_jsonable`, raw :func:`encode` bytes, or :func:`encode_multipart`).
"""

from .budget import DecodeBudget
from .decode import (
    decode_audio,
    decode_image,
    decode_video,
    fetch_url,
    load_bytes,
    sniff_content_type,
)
from .encode import (
    IMAGE_FORMATS,
    VIDEO_FORMATS,
    Encoded,
    encode,
    encode_multipart,
    find_media,
    format_for_accept,
    is_media,
    normalize_format,
    to_jsonable,
    to_pil,
)
from .types import Image, MediaKind, media_config, media_kind
from .values import Audio, File, UploadedFile, Video

__all__ = [
    "IMAGE_FORMATS",
    "VIDEO_FORMATS",
    "Audio",
    "DecodeBudget",
    "Encoded",
    "File",
    "Image",
    "MediaKind",
    "UploadedFile",
    "Video",
    "decode_audio",
    "decode_image",
    "decode_video",
    "encode",
    "encode_multipart",
    "fetch_url",
    "find_media",
    "format_for_accept",
    "is_media",
    "load_bytes",
    "media_config",
    "media_kind",
    "normalize_format",
    "sniff_content_type",
    "to_jsonable",
    "to_pil",
]
