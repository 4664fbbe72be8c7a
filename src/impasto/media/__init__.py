"""Media in one place: decode with limits on the way in, encode by preference on the way out.

Models annotate inputs with :class:`Image`, :class:`Video`, :class:`Audio` or :class:`File`
and return PIL images, arrays or these types; routes and protocol adapters only pick the
envelope (:func:`to_jsonable`, raw :func:`encode` bytes, or :func:`encode_multipart`).
"""

from .decode import (
    UploadedFile,
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
from .types import Audio, File, Image, MediaKind, Video, media_config, media_kind

__all__ = [
    "IMAGE_FORMATS",
    "VIDEO_FORMATS",
    "Audio",
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
