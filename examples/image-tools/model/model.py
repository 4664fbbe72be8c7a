"""image-tools: a custom model whose endpoints take and return images, with no encoding code.

    POST /predict    describe an image: size, mean colour, palette and a thumbnail
    POST /render     draw a gradient with a caption, from parameters alone
    POST /edit       apply an effect to an uploaded image where a mask is white
    POST /variants   several looks of one image (JSON, or multipart/mixed parts)

Images arrive as ``PIL.Image.Image`` in the declared mode, whether the client sent base64,
a data: URI or a multipart file; the PIL images returned go out as JSON base64, raw bytes
(``Accept: image/webp``) or multipart parts. Only Pillow is used, so it runs anywhere.
"""

from __future__ import annotations

from typing import Annotated, Literal

from PIL import Image as PILImage
from PIL import ImageColor, ImageDraw, ImageFilter, ImageFont, ImageOps
from pydantic import AfterValidator, BaseModel, Field

import impasto
from impasto import Image

RGB = Image["RGB"]  # aliases: linters read a string inside an annotation as a name
Gray = Image["L"]


def _color(value: str) -> str:
    ImageColor.getrgb(value)  # ValueError (a 422 naming the field) for an unknown colour
    return value


Color = Annotated[str, AfterValidator(_color), Field(examples=["#1e3a8a", "orange"])]
Side = Annotated[int, Field(ge=8, le=2048)]
Format = Literal["png", "jpeg", "webp"]
Quality = Annotated[int, Field(ge=1, le=100)]


class Summary(BaseModel):
    width: int
    height: int
    mean_color: str = Field(description="The average colour as #rrggbb.")
    palette: list[str] = Field(description="The most common colours, most common first.")
    thumbnail: Image = Field(description="At most 128 pixels on its longer side.")


class Variants(BaseModel):
    names: list[str]
    images: list[Image]


def _hex(rgb: tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def _gradient(size: tuple[int, int], start: str, end: str, direction: str) -> PILImage.Image:
    """A two-colour gradient: a 256-step ramp as the mask of a composite, resized to fit."""
    down = PILImage.linear_gradient("L")  # 256x256, black at the top, white at the bottom
    across = down.transpose(PILImage.Transpose.ROTATE_90)  # black left, white right
    ramp = {"vertical": down, "horizontal": across}.get(direction)
    mask = (ramp or PILImage.blend(down, across, 0.5)).resize(size, PILImage.Resampling.BILINEAR)
    return PILImage.composite(
        PILImage.new("RGB", size, ImageColor.getrgb(end)),
        PILImage.new("RGB", size, ImageColor.getrgb(start)),
        mask,
    )


def _effect(img: PILImage.Image, effect: str, strength: float) -> PILImage.Image:
    if effect == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=1 + strength * 15))
    if effect == "pixelate":
        block = max(2, round(2 + strength * 30))
        small = img.resize((max(1, img.width // block), max(1, img.height // block)))
        return small.resize(img.size, PILImage.Resampling.NEAREST)
    if effect == "grayscale":
        return ImageOps.grayscale(img).convert("RGB")
    if effect == "invert":
        return ImageOps.invert(img)
    if effect == "posterize":
        return ImageOps.posterize(img, bits=max(1, 8 - round(strength * 7)))
    sepia = ImageOps.colorize(ImageOps.grayscale(img), "#2b1a0e", "#f5e6c8")
    return PILImage.blend(img, sepia, 0.3 + 0.7 * strength)


class Model:
    def predict(self, image: RGB) -> Summary:
        """Describe an image: its size, mean colour, a small palette and a thumbnail."""
        mean = image.resize((1, 1), PILImage.Resampling.BOX).getpixel((0, 0))
        small = image.copy()
        small.thumbnail((128, 128))
        quantized = small.quantize(colors=5, method=PILImage.Quantize.FASTOCTREE)
        lut = quantized.getpalette() or []
        counts = sorted(quantized.getcolors() or [], reverse=True)
        palette = [_hex(tuple(lut[3 * i : 3 * i + 3])) for _, i in counts]
        return Summary(
            width=image.width,
            height=image.height,
            mean_color=_hex(mean),
            palette=palette,
            thumbnail=small,
        )

    @impasto.endpoint
    def render(
        self,
        width: Side = 512,
        height: Side = 256,
        start: Color = "#1e3a8a",
        end: Color = "#f97316",
        direction: Literal["horizontal", "vertical", "diagonal"] = "diagonal",
        text: Annotated[str, Field(max_length=80)] = "impasto",
        text_color: Color = "white",
        output_format: Format | None = None,
        quality: Quality | None = None,
    ) -> Image:
        """Draw a gradient with a centred caption. ``output_format`` and ``quality`` pick
        the encoding (impasto reads them; the model ignores them)."""
        img = _gradient((width, height), start, end, direction)
        if text:
            draw = ImageDraw.Draw(img)
            font = ImageFont.load_default(size=max(8, min(1.6 * width / len(text), 0.5 * height)))
            draw.text(
                (width / 2, height / 2),
                text,
                fill=text_color,
                font=font,
                anchor="mm",
                stroke_width=max(1, height // 100),
                stroke_fill="black",
            )
        return img

    @impasto.endpoint
    def edit(
        self,
        image: RGB,
        mask: Gray | None = None,
        effect: Literal["blur", "pixelate", "grayscale", "invert", "posterize", "sepia"] = "blur",
        strength: Annotated[float, Field(ge=0, le=1)] = 0.5,
        output_format: Format | None = None,
        quality: Quality | None = None,
    ) -> Image:
        """Apply ``effect`` where ``mask`` is white (everywhere without a mask); the mask is
        stretched to the image's size."""
        edited = _effect(image, effect, strength)
        if mask is None:
            return edited
        if mask.size != image.size:
            mask = mask.resize(image.size, PILImage.Resampling.BILINEAR)
        return PILImage.composite(edited, image, mask)

    @impasto.endpoint
    def variants(self, image: RGB, size: Side = 256) -> Variants:
        """Four looks of one image, each at most ``size`` pixels on its longer side."""
        img = image.copy()
        img.thumbnail((size, size))
        looks = {
            "original": img,
            "mirror": ImageOps.mirror(img),
            "grayscale": ImageOps.grayscale(img).convert("RGB"),
            "poster": ImageOps.posterize(img, 3),
        }
        return Variants(names=list(looks), images=list(looks.values()))
