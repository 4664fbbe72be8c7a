"""Media values as plain data: ``Video``, ``Audio``, ``File`` and an ``UploadedFile`` part.

The bottom of the media package: decoding builds these, encoding reads them, and
:mod:`impasto.media.types` teaches pydantic to validate them as inputs. Nothing here
imports the rest of the package.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part, as the server hands it to validation."""

    data: bytes
    content_type: str | None = None
    filename: str | None = None


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


@dataclass(frozen=True)
class File:
    """Opaque bytes with a content type and an optional file name, passed through untouched."""

    data: bytes
    content_type: str = "application/octet-stream"
    filename: str | None = None
