"""What a client sent -> bytes -> decoded media, under the limits of ``MediaConfig``.

Every failure is an :class:`~impasto.errors.InputError` (422) or
:class:`~impasto.errors.PayloadTooLarge` (413) whose message names the field and says what
is allowed: nothing a client sends raises anything else. Sizes are checked before the
expensive step (base64 length before decoding, image header before pixels, frame count
while decoding, bytes while downloading).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import time
import urllib.parse
from io import BytesIO
from typing import Any

import av
import httpx
from PIL import Image as PILImage
from PIL import ImageMode, ImageOps, ImageSequence

from ..config import MediaConfig
from ..errors import ImpastoError, InputError, PayloadTooLarge
from .budget import DecodeBudget
from .values import Audio, UploadedFile, Video

_MAX_REDIRECTS = 5
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_SOURCES = "send base64 text, a data: URI or a multipart file"


def load_bytes(value: Any, *, field: str, config: MediaConfig) -> tuple[bytes, str | None]:
    """The bytes and content type of one media value, size- and type-checked.

    The content type is what the bytes are (sniffed from their header) when recognised,
    else what the client declared; ``allowed_content_types`` is checked against it.
    """
    declared: str | None = None
    if isinstance(value, UploadedFile):
        data, declared = value.data, value.content_type
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, dict) and "data" in value:  # impasto's own JSON media envelope
        data, declared = load_bytes(value["data"], field=field, config=config)
        declared = value.get("content_type") or declared
    elif isinstance(value, str):
        text = value.strip()
        head = text[:10].lower()
        if head.startswith("data:"):
            data, declared = _data_uri(text, field, config)
        elif head.startswith(("http://", "https://")):
            data, declared = fetch_url(text, field=field, config=config)
        elif "://" in text[:16]:
            scheme = text.split("://", 1)[0]
            raise InputError(f"{field}: {scheme}:// URLs are not accepted; {_SOURCES}", field=field)
        else:
            data = _b64(text, field, config)
    else:
        raise InputError(
            f"{field}: expected base64 text, a data: URI, an http(s) URL or a file upload, "
            f"got {type(value).__name__}",
            field=field,
        )
    _check_size(len(data), field, config)
    if not data:
        raise InputError(f"{field}: no data; {_SOURCES}", field=field)
    content_type = sniff_content_type(data) or _normalize_type(declared)
    _check_type(content_type, field, config)
    return data, content_type


def _check_size(size: int, field: str, config: MediaConfig, what: str = "bytes") -> None:
    if size > config.max_part_bytes:
        raise PayloadTooLarge(
            f"{field}: {size} {what} exceeds media.max_part_bytes {config.max_part_bytes}",
            field=field,
        )


def _b64(text: str, field: str, config: MediaConfig) -> bytes:
    """Decode base64, tolerating whitespace, missing padding and the URL-safe alphabet."""
    _check_size(len(text) * 3 // 4, field, config, "bytes of base64 data")
    if any(c in text for c in " \n\r\t"):
        text = "".join(text.split())
    text = text.rstrip("=")
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field}: not valid base64; {_SOURCES}", field=field) from None


def _data_uri(text: str, field: str, config: MediaConfig) -> tuple[bytes, str | None]:
    header, comma, payload = text.partition(",")
    if not comma:
        raise InputError(f"{field}: malformed data: URI (no comma)", field=field)
    params = header[5:].split(";")
    content_type = params[0].strip() or None
    if any(p.strip().lower() == "base64" for p in params[1:]):
        return _b64(payload, field, config), content_type
    _check_size(len(payload), field, config)
    return urllib.parse.unquote_to_bytes(payload), content_type


def _normalize_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    return None if value in _GENERIC_TYPES else value


def _check_type(content_type: str | None, field: str, config: MediaConfig) -> None:
    allowed = config.allowed_content_types
    if not allowed:
        return
    for pattern in allowed:
        major, _, minor = pattern.lower().partition("/")
        if content_type and (
            pattern in ("*", "*/*")
            or content_type == pattern.lower()
            or (minor == "*" and content_type.startswith(major + "/"))
        ):
            return
    raise InputError(
        f"{field}: content type {content_type or 'unknown'} is not allowed; "
        f"media.allowed_content_types is {', '.join(allowed)}",
        field=field,
    )


def sniff_content_type(data: bytes) -> str | None:
    """The media type of common image/video/audio formats from their first bytes."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(
            head[8:12]
        )
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1"):
            return "image/heic"
        return {b"M4A ": "audio/mp4", b"qt  ": "video/quicktime"}.get(brand, "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


# -- URLs -----------------------------------------------------------------------------------


def fetch_url(url: str, *, field: str, config: MediaConfig) -> tuple[bytes, str | None]:
    """Download ``url`` if allowed: size-capped, time-limited, every hop's address checked.

    Each hop connects to an address that was checked (the Host header and TLS SNI keep the
    name), so a second DNS answer cannot slip a private address in after the check.
    """
    if not config.allow_urls:
        raise InputError(
            f"{field}: URLs are not accepted (media.allow_urls is false); {_SOURCES}", field=field
        )
    deadline = time.monotonic() + config.url_timeout_s
    target = httpx.URL(url)
    with httpx.Client(timeout=config.url_timeout_s, trust_env=False) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            addresses = _checked_addresses(target, field, config)
            try:
                response = _send(client, target, addresses)
                try:
                    if response.is_redirect and "location" in response.headers:
                        target = target.join(response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise InputError(
                            f"{field}: fetching the URL answered HTTP {response.status_code}",
                            field=field,
                        )
                    data = _read_capped(response, field, config, deadline)
                    return data, response.headers.get("content-type")
                finally:
                    response.close()
            except httpx.TimeoutException:
                raise _timed_out(field, config) from None
            except httpx.HTTPError as exc:
                raise InputError(f"{field}: could not fetch the URL: {exc}", field=field) from None
    raise InputError(f"{field}: more than {_MAX_REDIRECTS} redirects", field=field)


def _checked_addresses(url: httpx.URL, field: str, config: MediaConfig) -> list[str]:
    return checked_addresses(url, field=field, allow_private=config.allow_private_urls)


def checked_addresses(
    url: httpx.URL,
    *,
    field: str,
    allow_private: bool,
    setting: str = "media.allow_private_urls",
) -> list[str]:
    """The host's addresses (IPv4 first), each refused unless public or ``allow_private``
    (the knob named ``setting``): what every URL impasto itself connects to (media inputs,
    webhooks) goes through, so loopback, private and link-local targets are refused alike.
    Connect to one of these addresses, not to the name, so a second DNS answer cannot slip
    a private address in after the check."""
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"{field}: only http(s) URLs are accepted, got {url}", field=field)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"{field}: cannot resolve {url.host}: {exc}", field=field) from None
    addresses = sorted(dict.fromkeys(str(info[4][0]) for info in infos), key=lambda a: ":" in a)
    for address in addresses:
        if not allow_private and not _is_public(address):
            raise InputError(
                f"{field}: {url.host} resolves to non-public address {address}; refused "
                f"({setting} is false)",
                field=field,
            )
    return addresses


def _send(client: httpx.Client, url: httpx.URL, addresses: list[str]) -> httpx.Response:
    """GET ``url`` from the first of ``addresses`` that accepts a connection."""
    for i, address in enumerate(addresses):
        request = client.build_request(
            "GET",
            url.copy_with(host=address.split("%")[0]),
            headers={"Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": url.host},
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError:
            if i == len(addresses) - 1:
                raise
    raise httpx.ConnectError(f"no address for {url.host}")


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _read_capped(
    response: httpx.Response, field: str, config: MediaConfig, deadline: float
) -> bytes:
    length = response.headers.get("content-length", "")
    if length.isdigit():
        _check_size(int(length), field, config)
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        _check_size(total, field, config, "bytes or more")
        if time.monotonic() > deadline:
            raise _timed_out(field, config)
        chunks.append(chunk)
    return b"".join(chunks)


def _timed_out(field: str, config: MediaConfig) -> InputError:
    return InputError(
        f"{field}: fetching the URL took over media.url_timeout_s {config.url_timeout_s}s",
        field=field,
    )


# -- decoders -------------------------------------------------------------------------------


def _too_many_pixels(w: int, h: int, field: str, config: MediaConfig) -> None:
    if w * h > config.max_pixels:
        raise PayloadTooLarge(
            f"{field}: {w}x{h} = {w * h} pixels exceeds media.max_pixels {config.max_pixels}",
            field=field,
        )


def decode_image(
    data: bytes,
    *,
    field: str,
    config: MediaConfig,
    mode: str | None = None,
    budget: DecodeBudget | None = None,
    content_type: str | None = None,
) -> PILImage.Image:
    """Decode one image, refusing it on its header's size before any pixel is decoded."""
    try:
        img = PILImage.open(BytesIO(data))
        _too_many_pixels(img.width, img.height, field, config)
        if budget is not None:
            bands = len(ImageMode.getmode(mode or img.mode).bands)
            budget.reserve(img.width * img.height * max(bands, len(img.getbands())), field)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img if mode in (None, img.mode) else img.convert(mode)
    except ImpastoError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{field}: {exc}", field=field) from None
    except PILImage.UnidentifiedImageError:
        sniffed = sniff_content_type(data)
        if sniffed and not sniffed.startswith("image/"):
            what = sniffed  # another kind of media
        elif content_type and not content_type.startswith("image/"):
            what = content_type  # what the client said it is
        else:
            what = "its bytes are no known image format"
        raise InputError(f"{field}: not an image ({what})", field=field) from None
    except Exception as exc:  # untrusted bytes: Pillow raises many kinds
        raise InputError(f"{field}: not a valid image: {_reason(exc)}", field=field) from None


def _reason(exc: BaseException) -> str:
    """A decoder's complaint without Python object reprs (``<_io.BytesIO object at ...>``)."""
    import re

    return re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the data", str(exc)) or type(exc).__name__


_ANIMATED = ("image/gif", "image/webp", "image/png")


def decode_video(
    data: bytes, *, field: str, config: MediaConfig, budget: DecodeBudget | None = None
) -> Video:
    """Decode a video (PyAV) or an animated GIF/WebP/PNG (Pillow) into RGB frames, charging
    each frame to ``budget`` as it is decoded."""
    try:
        if sniff_content_type(data) in _ANIMATED:
            return _decode_animation(data, field, config, budget)
        return _decode_av(data, field, config, budget)
    except ImpastoError:
        raise
    except Exception as exc:  # untrusted bytes: FFmpeg and Pillow raise many kinds
        raise InputError(f"{field}: not a valid video: {_reason(exc)}", field=field) from None


def _too_many_frames(count: int, field: str, config: MediaConfig) -> None:
    if count > config.max_frames:
        raise PayloadTooLarge(
            f"{field}: {count} frames exceeds media.max_frames {config.max_frames}", field=field
        )


def _decode_av(data: bytes, field: str, config: MediaConfig, budget: DecodeBudget | None) -> Video:
    with av.open(BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise InputError(f"{field}: no video stream in the data", field=field)
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _too_many_pixels(width, height, field, config)
        _too_many_frames(stream.frames, field, config)
        frames = []
        for frame in container.decode(stream):
            _too_many_frames(len(frames) + 1, field, config)
            if budget is not None:
                budget.reserve(frame.width * frame.height * 3, field)
            frames.append(frame.to_image())
        rate = stream.average_rate or stream.guessed_rate
    if not frames:
        raise InputError(f"{field}: the video has no frames", field=field)
    return Video(frames, fps=float(rate) if rate else 8.0)


def _decode_animation(
    data: bytes, field: str, config: MediaConfig, budget: DecodeBudget | None
) -> Video:
    img = PILImage.open(BytesIO(data))
    _too_many_pixels(img.width, img.height, field, config)
    count = getattr(img, "n_frames", 1)
    _too_many_frames(count, field, config)
    if budget is not None:
        budget.reserve(img.width * img.height * 3 * count, field)
    frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(img)]
    img.seek(0)
    img.load()  # WebP reports its frame duration only once a frame is loaded
    return Video(frames, fps=1000.0 / (img.info.get("duration") or 125))


_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}


def decode_audio(
    data: bytes, *, field: str, config: MediaConfig, content_type: str | None = None
) -> Audio:
    """Check the bytes hold audio (PyAV reads only the headers) and keep them as sent."""
    try:
        with av.open(BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InputError(f"{field}: no audio stream in the data", field=field)
            rate = container.streams.audio[0].sample_rate or None
            names = container.format.name.split(",")
    except ImpastoError:
        raise
    except Exception as exc:  # untrusted bytes
        raise InputError(f"{field}: not a valid audio file: {_reason(exc)}", field=field) from None
    if not (content_type or "").startswith("audio/"):
        content_type = next((_AUDIO_TYPES[n] for n in names if n in _AUDIO_TYPES), None) or (
            content_type or "application/octet-stream"
        )
    return Audio(data, content_type, rate)
