"""``octoai.types`` as OctoAI-style services use it (``Text``, ``Image``, ``Audio``), for
environments without a compatible ``octoai-sdk``.

On the wire they are ``{"text": str}``, ``{"image_b64": str}`` and ``{"audio_b64": str}``;
they construct positionally (``Text("x")``) and keep the SDK's helpers. A value that does
not fit (a missing or unknown key, a number for ``text``, base64 that is not base64) is a
validation error, which impasto answers 422 naming the field.
"""

import base64
import binascii
import io
from pathlib import Path
from typing import Any, ClassVar, Union

from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, field_validator

_UNSET: Any = object()


def file_b64encode(file_bytes: bytes) -> str:
    """Binary file contents as base64 text."""
    return base64.b64encode(file_bytes).decode("ascii")


def file_b64decode(file_b64: str) -> bytes:
    """Base64 text back to binary file contents."""
    return base64.b64decode(file_b64.encode("ascii"))


def _check_b64(value: str) -> str:
    try:
        base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("must be base64-encoded file contents") from None
    return value


class Text(BaseModel):
    """Text, as ``{"text": "..."}``; behaves like a str (``+``, ``in``, slices, ``*``)."""

    model_config = ConfigDict(extra="forbid")

    text: str

    def __init__(self, text: Any = _UNSET, /, **data: Any) -> None:
        if text is not _UNSET:
            data["text"] = text
        super().__init__(**data)

    def __add__(self, other: Union["Text", str]) -> "Text":
        return Text(self.text + str(other))

    def __contains__(self, item: Union["Text", str]) -> bool:
        return str(item) in self.text

    def __getitem__(self, index: Any) -> "Text":
        return Text(self.text[index])

    def __mul__(self, times: int) -> "Text":
        return Text(self.text * times)

    def __str__(self) -> str:
        return self.text


class _Media(BaseModel):
    """Shared helpers of the base64 file types."""

    model_config = ConfigDict(extra="forbid")
    b64_field: ClassVar[str] = ""

    def _b64(self) -> str:
        return getattr(self, self.b64_field)

    @classmethod
    def from_base64(cls, b64: str) -> Any:
        return cls(b64)

    @classmethod
    def from_file(cls, path: str | Path) -> Any:
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"{path} is not a file")
        return cls(file_b64encode(file.read_bytes()))

    @classmethod
    def from_url(cls, url: str, follow_redirects: bool = False) -> Any:
        """Download ``url`` under impasto's URL policy: public addresses only (unless
        ``media.allow_private_urls``), size- and time-limited."""
        from .sdk import fetch

        return cls(file_b64encode(fetch(url)))

    @classmethod
    def from_endpoint_response(cls, resp_dict: dict[str, Any], key: str) -> Any:
        """From an endpoint's JSON response: ``resp[key]``, else ``resp["output"][key]``."""
        for where in (resp_dict, resp_dict.get("output") or {}):
            value = where.get(key) if isinstance(where, dict) else None
            if isinstance(value, dict) and cls.b64_field in value:
                return cls(value[cls.b64_field])
        raise ValueError(f"{key} not found in the response")

    def to_bytes(self) -> bytes:
        return file_b64decode(self._b64())

    def to_file(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    def is_valid(self) -> bool:
        try:
            self.to_bytes()
        except (binascii.Error, ValueError):
            return False
        return True


class Image(_Media):
    """An image file, as ``{"image_b64": "<base64 of an image file>"}``."""

    b64_field: ClassVar[str] = "image_b64"
    image_b64: str = Field(description="base64-encoded image file")

    def __init__(self, image_b64: Any = _UNSET, /, **data: Any) -> None:
        if image_b64 is not _UNSET:
            data["image_b64"] = image_b64
        super().__init__(**data)

    @field_validator("image_b64")
    @classmethod
    def _base64(cls, value: str) -> str:
        return _check_b64(value)

    @classmethod
    def from_pil(cls, image_pil: PILImage.Image, format: str = "JPEG") -> "Image":
        buf = io.BytesIO()
        image_pil.save(buf, format=format)
        return cls(file_b64encode(buf.getvalue()))

    def to_pil(self) -> PILImage.Image:
        return PILImage.open(io.BytesIO(self.to_bytes()))

    def is_valid(self) -> bool:
        try:
            self.to_pil().verify()
        except Exception:
            return False
        return True


class Audio(_Media):
    """An audio file, as ``{"audio_b64": "<base64 of an audio file>"}``."""

    b64_field: ClassVar[str] = "audio_b64"
    audio_b64: str = Field(description="base64-encoded audio file")

    def __init__(self, audio_b64: Any = _UNSET, /, **data: Any) -> None:
        if audio_b64 is not _UNSET:
            data["audio_b64"] = audio_b64
        super().__init__(**data)

    @field_validator("audio_b64")
    @classmethod
    def _base64(cls, value: str) -> str:
        return _check_b64(value)

    @classmethod
    def from_numpy(cls, data: Any, sample_rate: int, format: str = "WAV") -> "Audio":
        """Samples (float in [-1, 1] or int16, shaped (n,) or (n, channels)) as a file; WAV
        is written here, other formats need the ``soundfile`` package."""
        if format.upper() == "WAV":
            from ..media import Audio as MediaAudio

            return cls(file_b64encode(MediaAudio.from_array(data, sample_rate).data))
        import soundfile

        buf = io.BytesIO()
        soundfile.write(buf, data, samplerate=sample_rate, format=format)
        return cls(file_b64encode(buf.getvalue()))

    def to_numpy(self) -> tuple[Any, int]:
        """``(samples, sample_rate)``: float32 samples from a 16-bit WAV, or whatever
        ``soundfile`` reads for other files."""
        import wave

        import numpy as np

        raw = self.to_bytes()
        try:
            with wave.open(io.BytesIO(raw)) as wav:
                if wav.getsampwidth() != 2:
                    raise wave.Error("not 16-bit")
                frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
                channels = wav.getnchannels()
                samples = frames.astype(np.float32) / 32768.0
                if channels > 1:
                    samples = samples.reshape(-1, channels)
                return samples, wav.getframerate()
        except wave.Error:
            import soundfile

            data, rate = soundfile.read(io.BytesIO(raw))
            return data, rate
