"""Request and result models for the diffusers tasks, with every bound taken from config.

Limits differ per package (a 4090 box and an H100 box allow different sizes), so the
input models are built by :func:`make_schemas` from a :class:`~impasto.config.DiffusersConfig`.
A value out of bounds is a pydantic error at that field, which the server answers as a 422
naming the field. The module-level ``Text2ImgInput`` etc. carry the default limits.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..config import DiffusersConfig
from ..media import Image, Video
from .pipelines import allowed_schedulers, scheduler_name

__all__ = [
    "ImageResult",
    "Img2ImgInput",
    "Img2VidInput",
    "InpaintInput",
    "LoraInput",
    "Text2ImgInput",
    "VideoResult",
    "make_schemas",
]

RGBImage = Image["RGB"]
MaskImage = Image["L"]  # white: repaint, black: keep
MAX_SEED = 2**53 - 1  # exactly representable in JSON numbers everywhere (JavaScript included)


class LoraInput(BaseModel):
    """One LoRA adapter applied to a single request."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(
        ...,
        min_length=1,
        max_length=300,
        description="Store ref (`name:version`) or a folder inside the package's data dir.",
        examples=["pixel-art:latest"],
    )
    scale: float = Field(1.0, ge=-4.0, le=4.0, description="Adapter strength.", examples=[0.8])


class ImageResult(BaseModel):
    """Generated images (encoded by the server as png/jpeg/webp), their seeds and recipe."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    images: list[Image] = Field(..., description="One image per requested `num_images`.")
    seeds: list[int] = Field(..., description="The seed of each image, for reproduction.")
    recipe: dict[str, Any] = Field(
        default_factory=dict, description="Model, pipeline, scheduler and every setting used."
    )
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")


class VideoResult(BaseModel):
    """A generated video (encoded by the server as mp4/gif/webp), its seed and recipe."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    video: Video = Field(..., description="The frames at `fps`.")
    seed: int
    recipe: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)


def _fit(w: int, h: int, max_side: int, max_pixels: int) -> tuple[int, int]:
    """Scale (w, h) down to fit the limits, keep the aspect ratio, round down to multiples of 8."""
    scale = min(1.0, max_side / max(w, h), (max_pixels / (w * h)) ** 0.5)
    return max(8, int(w * scale) // 8 * 8), max(8, int(h * scale) // 8 * 8)


def _some_steps_left(cls: Any, strength: float, info: ValidationInfo) -> float:
    """img2img and inpaint run ``int(num_inference_steps * strength)`` steps: none is an
    error of the request (named here, as a 422 on ``strength``), not of the pipeline."""
    steps = info.data.get("num_inference_steps")
    if isinstance(steps, int) and int(steps * strength) < 1:
        raise ValueError(
            f"strength {strength} x num_inference_steps {steps} leaves no denoising step; "
            "raise either so that their product is at least 1"
        )
    return strength


def make_schemas(cfg: DiffusersConfig) -> dict[str, type[BaseModel]]:
    """The input model of each task (``text2img``, ``img2img``, ``inpaint``, ``img2vid``)."""
    lim = cfg.limits
    steps = min(cfg.default_steps, lim.max_steps)
    guidance = min(cfg.default_guidance, lim.max_guidance)
    schedulers = allowed_schedulers(cfg)
    scheduler_type: Any = Literal[tuple(schedulers)]  # an enum in the OpenAPI document

    def size_field(default: int | None, which: str, fallback: str = "the model's") -> Any:
        return Field(
            default,
            ge=8,
            le=lim.max_side,
            json_schema_extra={"x-limit": "diffusers.limits.max_side"},
            multiple_of=8,
            description=f"Output {which} in pixels, a multiple of 8 (default: {fallback}).",
            examples=[default or 512],
        )

    class _Common(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

        seed: int | None = Field(
            None,
            ge=0,
            le=MAX_SEED,
            description="Random seed (image i of a request uses seed+i); random when absent.",
            examples=[42],
        )
        num_inference_steps: int = Field(
            steps,
            ge=1,
            le=lim.max_steps,
            json_schema_extra={"x-limit": "diffusers.limits.max_steps"},
            description="Denoising steps.",
            examples=[steps],
        )

        @field_validator("height", check_fields=False)
        @classmethod
        def _pixels(cls, height: int | None, info: ValidationInfo) -> int | None:
            width = info.data.get("width")
            if height is not None and width is not None and width * height > lim.max_pixels:
                raise ValueError(
                    f"width*height = {width * height} exceeds the limit of {lim.max_pixels} "
                    "pixels (diffusers.limits.max_pixels)"
                )
            return height

        @model_validator(mode="after")
        def _size_from_image(self) -> Any:
            """Image-conditioned tasks default to the input image's size, fitted to limits."""
            image = getattr(self, "image", None)
            if image is None or (self.width is not None and self.height is not None):
                return self
            w, h = image.size
            if self.width is not None:
                h = self.width * h / w
                w = self.width
            elif self.height is not None:
                w = self.height * w / h
                h = self.height
            self.width, self.height = _fit(int(w), int(h), lim.max_side, lim.max_pixels)
            return self

    class _Image(_Common):
        prompt: str = Field(
            ...,
            max_length=lim.max_prompt_chars,
            json_schema_extra={"x-limit": "diffusers.limits.max_prompt_chars"},
            description="What to draw.",
            examples=["a watercolor painting of a lighthouse at dawn"],
        )
        negative_prompt: str | None = Field(
            None,
            max_length=lim.max_prompt_chars,
            json_schema_extra={"x-limit": "diffusers.limits.max_prompt_chars"},
            description="What to steer away from.",
            examples=["blurry, low quality"],
        )
        guidance_scale: float = Field(
            guidance,
            ge=0,
            le=lim.max_guidance,
            json_schema_extra={"x-limit": "diffusers.limits.max_guidance"},
            description="Classifier-free guidance; 1 or less turns it off (faster).",
            examples=[guidance],
        )
        width: int | None = size_field(cfg.default_width, "width")
        height: int | None = size_field(cfg.default_height, "height")
        num_images: int = Field(
            1,
            ge=1,
            le=lim.max_images,
            json_schema_extra={"x-limit": "diffusers.limits.max_images"},
            description="Images to make from this prompt.",
        )
        scheduler: scheduler_type | None = Field(
            None,
            description=f"Sampler for this request (default: {cfg.scheduler or 'the model default'}).",
            examples=[schedulers[0]],
        )
        loras: list[LoraInput] = Field(
            default_factory=list,
            max_length=lim.max_loras,
            json_schema_extra={"x-limit": "diffusers.limits.max_loras"},
            description="LoRA adapters applied to this request only.",
        )
        output_format: Literal["png", "jpeg", "webp"] | None = Field(
            None, description="Image encoding (default: media.image_format)."
        )
        quality: int | None = Field(None, ge=1, le=100, description="Lossy encoding quality.")

        @field_validator("loras")
        @classmethod
        def _unique(cls, loras: list[LoraInput]) -> list[LoraInput]:
            refs = [lo.ref for lo in loras]
            if len(set(refs)) != len(refs):
                raise ValueError("each LoRA ref may appear once; combine the scales instead")
            return loras

        @field_validator("scheduler", mode="before")
        @classmethod
        def _suffix(cls, value: Any) -> Any:
            return scheduler_name(value) if isinstance(value, str) and value else value

    class Text2ImgInput(_Image):
        """Make images from a text prompt."""

    class Img2ImgInput(_Image):
        """Redraw an input image guided by a prompt."""

        image: RGBImage = Field(..., description="The starting image.")
        width: int | None = size_field(None, "width", "the image's, fitted to the limits")
        height: int | None = size_field(None, "height", "the image's, fitted to the limits")
        strength: float = Field(
            0.8,
            gt=0,
            le=1,
            description="How much to change the image (1: ignore it entirely).",
            examples=[0.6],
        )

        _steps_left = field_validator("strength")(classmethod(_some_steps_left))

    class InpaintInput(_Image):
        """Repaint the white area of a mask."""

        image: RGBImage = Field(..., description="The image to edit.")
        width: int | None = size_field(None, "width", "the image's, fitted to the limits")
        height: int | None = size_field(None, "height", "the image's, fitted to the limits")
        mask: MaskImage = Field(..., description="White: repaint; black: keep.")
        strength: float = Field(
            1.0, gt=0, le=1, description="How much to change the masked area.", examples=[1.0]
        )

        _steps_left = field_validator("strength")(classmethod(_some_steps_left))

    video_guidance = guidance if "default_guidance" in cfg.model_fields_set else 3.0
    video_guidance = min(video_guidance, lim.max_guidance)

    class Img2VidInput(_Common):
        """Animate a still image into a short video."""

        image: RGBImage = Field(..., description="The first frame.")
        width: int | None = size_field(cfg.default_width, "width", "config, else the image's")
        height: int | None = size_field(cfg.default_height, "height", "config, else the image's")
        num_frames: int | None = Field(
            None,
            ge=1,
            le=lim.max_frames,
            json_schema_extra={"x-limit": "diffusers.limits.max_frames"},
            description="Frames to make (default: the model's).",
        )
        fps: int = Field(7, ge=1, le=60, description="Frame rate: conditions motion and playback.")
        motion_bucket_id: int = Field(
            127, ge=0, le=1023, description="More motion when higher.", examples=[127]
        )
        noise_aug_strength: float = Field(
            0.02, ge=0, le=1, description="Noise added to the first frame; more: less like it."
        )
        decode_chunk_size: int | None = Field(
            None,
            ge=1,
            le=lim.max_frames,
            json_schema_extra={"x-limit": "diffusers.limits.max_frames"},
            description="Frames decoded at once (lower: less memory; default: all).",
        )
        guidance_scale: float = Field(
            video_guidance,
            ge=0,
            le=lim.max_guidance,
            json_schema_extra={"x-limit": "diffusers.limits.max_guidance"},
            description="Guidance at the last frame (it ramps up from min_guidance_scale).",
        )
        min_guidance_scale: float = Field(
            1.0,
            ge=0,
            le=lim.max_guidance,
            json_schema_extra={"x-limit": "diffusers.limits.max_guidance"},
            description="Guidance at the first frame.",
        )
        output_format: Literal["mp4", "gif", "webp"] | None = Field(
            None, description="Video encoding (default: media.video_format)."
        )
        quality: int | None = Field(None, ge=1, le=100, description="Lossy encoding quality.")

    return {
        "text2img": Text2ImgInput,
        "img2img": Img2ImgInput,
        "inpaint": InpaintInput,
        "img2vid": Img2VidInput,
    }


_DEFAULTS = make_schemas(DiffusersConfig(model="-"))
Text2ImgInput = _DEFAULTS["text2img"]
Img2ImgInput = _DEFAULTS["img2img"]
InpaintInput = _DEFAULTS["inpaint"]
Img2VidInput = _DEFAULTS["img2vid"]
