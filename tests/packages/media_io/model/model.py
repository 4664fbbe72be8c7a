"""Every media input and output kind, and no encoding code: impasto does the bytes."""

from typing import Literal

import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, Field

import impasto
from impasto import Audio, File, Image, Video

RGB = Image["RGB"]  # aliases: linters read a string inside an annotation as a name
Gray = Image["L"]


class Described(BaseModel):
    width: int
    height: int
    mode: str
    corner: list[int]


def describe(img: PILImage.Image) -> Described:
    corner = img.getpixel((0, 0))
    corner = list(corner) if isinstance(corner, tuple) else [corner]
    return Described(width=img.width, height=img.height, mode=img.mode, corner=corner)


class Edit(BaseModel):
    image: RGB
    mask: Gray | None = None
    scale: float = Field(1.0, gt=0, le=4)


class Card(BaseModel):
    title: str
    image: Image
    thumbnails: list[Image]


def gradient(width: int, height: int, seed: int = 0) -> PILImage.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([x + 0 * y, y + 0 * x, np.full((height, width, 1), seed * 40.0)], 2)
    return PILImage.fromarray(rgb.astype(np.uint8))


class Model:
    def predict(self, image: RGB) -> Described:
        """Describe one uploaded image."""
        return describe(image)

    @impasto.endpoint
    def inputs(
        self,
        image: Image | None = None,
        images: list[Image] = [],  # noqa: B006 - pydantic copies defaults
        video: Video | None = None,
        audio: Audio | None = None,
        file: File | None = None,
        note: str = "",
        count: int = 0,
    ) -> dict:
        """Report what arrived for each media field, decoded."""
        out: dict = {"note": note, "count": count, "images": [describe(i) for i in images]}
        if image is not None:
            out["image"] = describe(image)
        if video is not None:
            out["video"] = {"frames": len(video), "fps": video.fps, "size": list(video.size)}
        if audio is not None:
            out["audio"] = {"content_type": audio.content_type, "rate": audio.sample_rate}
        if file is not None:
            out["file"] = {
                "bytes": len(file.data),
                "content_type": file.content_type,
                "filename": file.filename,
            }
        return out

    @impasto.endpoint(name="edit", route="/tools/edit")
    def edit(self, request: Edit) -> Described:
        """A pydantic input model holding media fields."""
        img = request.image
        if request.scale != 1:
            img = img.resize((round(img.width * request.scale), round(img.height * request.scale)))
        if request.mask is not None:
            img = PILImage.composite(
                img, PILImage.new("RGB", img.size), request.mask.resize(img.size)
            )
        return describe(img)

    @impasto.endpoint
    def image(
        self,
        width: int = 32,
        height: int = 24,
        output_format: Literal["png", "jpeg", "webp"] | None = None,
        quality: int | None = Field(None, ge=1, le=100),
    ) -> Image:
        """One PIL image; the schema lets a client pick the format and quality."""
        return gradient(width, height)

    @impasto.endpoint
    def plain(self, width: int = 16, height: int = 8):
        """One PIL image from a schema without output_format (query string only)."""
        return gradient(width, height)

    @impasto.endpoint
    def grade(self, quality: Literal["draft", "final"] = "draft"):
        """A model whose own ``quality`` field is not the encoder's."""
        return gradient(16, 16 if quality == "draft" else 32)

    @impasto.endpoint
    def images(self, count: int = 3):
        """Several images."""
        return [gradient(16 + i, 8, seed=i) for i in range(count)]

    @impasto.endpoint
    def array(self, width: int = 20, height: int = 10):
        """A uint8 HxWxC numpy array."""
        return np.asarray(gradient(width, height))

    @impasto.endpoint
    def video(self, frames: int = 4, fps: float = 8.0):
        """An impasto.Video of frames."""
        return Video([gradient(32, 16, seed=i) for i in range(frames)], fps=fps)

    @impasto.endpoint
    def file(self, text: str = "hello"):
        """Raw bytes with a content type."""
        return File(text.encode(), "text/csv", "table.csv")

    @impasto.endpoint
    def audio(self, clip: Audio) -> dict:
        """Audio in, audio out: kept as sent."""
        return {"clip": clip, "rate": clip.sample_rate}

    @impasto.endpoint
    def card(self, title: str = "card") -> Card:
        """A pydantic output model whose fields hold images."""
        return Card(
            title=title,
            image=gradient(24, 12),
            thumbnails=[gradient(8, 4, seed=i) for i in range(2)],
        )

    @impasto.endpoint
    def recaption(self, card: Card, suffix: str = "!") -> Card:
        """One pydantic model in the input (media decoded) and as the output (media encoded)."""
        return card.model_copy(update={"title": card.title.upper() + suffix})
