"""OpenAI Images request fields, checked and mapped onto an endpoint's inputs.

=====================  ==========================================================
OpenAI                 impasto
=====================  ==========================================================
``prompt``             ``prompt`` (required for generations and edits)
``n`` (1-10)           ``num_images``; without that field, ``n`` predictions
``size`` ``WxH``       ``width`` and ``height`` (``auto``: the model's default)
``quality``            ``num_inference_steps``: ``low`` half the endpoint's default,
                       ``medium``/``standard``/``auto`` the default, ``high``/``hd``
                       twice it (capped by the endpoint's maximum)
``output_format``      the encoding (``png``, ``jpeg``, ``webp``)
``output_compression`` the encoder's quality (0-100; 100, OpenAI's default, is best)
``background``         checked (``transparent`` needs png or webp); images are opaque
``image``/``image[]``  ``image``, one prediction per image
``mask``               ``mask``: OpenAI's transparent pixels become the white
                       (repaint) pixels of impasto's mask
other endpoint fields  passed through (``seed``, ``negative_prompt``... via the
                       SDK's ``extra_body``); unknown fields are ignored
=====================  ==========================================================
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage

from ...context import OutputPrefs
from ...errors import MalformedInput
from ...media import UploadedFile, decode_image, load_bytes
from ...runner import Runner
from ...spec import EndpointSpec
from .fields import default, fields_of, has, returns_media, task_endpoint, upper_bound

# OpenAI's own parameters: never passed through to the endpoint under these names
OPENAI_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "response_format", "quality", "style", "output_format",
        "output_compression", "background", "moderation", "stream", "partial_images", "user",
        "image", "image[]", "mask", "input_fidelity", "markup", "safety_identifier",
        "complexity", "frame_count", "frame_duration_ms", "svg",
    }
)  # fmt: skip
QUALITIES = ("low", "medium", "high", "auto", "standard", "hd")
FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*x\s*(\d{1,5})\s*$")
MAX_N = 10


@dataclass(frozen=True)
class ImagesCall:
    """One OpenAI images request, read and checked: the endpoint's payload(s) and how to
    answer."""

    kind: str  # generations | edits | variations
    endpoint: EndpointSpec
    payloads: tuple[dict[str, Any], ...]
    response_format: str  # b64_json | url
    format: str | None  # png | jpeg | webp (None: the package's default)
    quality: int | None  # encoder quality
    stream: bool
    partial_images: int
    size: str | None
    background: str
    steps_quality: str | None

    @property
    def prefs(self) -> OutputPrefs:
        return OutputPrefs(
            format=self.format,
            quality=self.quality,
            previews=self.partial_images if self.stream else 0,
        )

    def echo(self, fmt: str) -> dict[str, Any]:
        """The settings echoed in a response."""
        out: dict[str, Any] = {"background": "opaque", "output_format": fmt}
        if self.size:
            out["size"] = self.size
        quality = _echo_quality(self.steps_quality)
        if quality != "auto":
            out["quality"] = quality
        return out

    def event_echo(self, fmt: str) -> dict[str, Any]:
        return {
            "background": "opaque",
            "output_format": fmt,
            "quality": _echo_quality(self.steps_quality),
            "size": self.size or "auto",
        }

    def preview_size(self, image: PILImage.Image) -> PILImage.Image:
        """A step preview at the size asked for (previews come at latent resolution)."""
        first = self.payloads[0]
        width = first.get("width") or default(self.endpoint, "width")
        height = first.get("height") or default(self.endpoint, "height")
        if isinstance(width, int) and isinstance(height, int) and image.size != (width, height):
            return image.resize((width, height), PILImage.Resampling.BILINEAR)
        return image


def _echo_quality(value: str | None) -> str:
    return {"standard": "auto", "hd": "high", None: "auto"}.get(value, value or "auto")


def read_generation(runner: Runner, data: dict[str, Any]) -> ImagesCall:
    endpoint = task_endpoint(runner, "text2img")
    assert endpoint is not None
    return _call("generations", endpoint, data, images=None, mask=None)


async def read_edit(runner: Runner, data: dict[str, Any]) -> ImagesCall:
    images = _images(data)
    mask = data.get("mask")
    endpoint = task_endpoint(runner, "inpaint" if mask is not None else "img2img")
    if endpoint is None:
        what = "inpaint with a mask" if mask is not None else "edit images"
        raise MalformedInput(f"model {runner.name} cannot {what}", field="model")
    if mask is not None:
        media = runner.config.media
        mask = await runner.in_input_pool(lambda: repaint_mask(mask, images[0], media))
    return _call("edits", endpoint, data, images=images, mask=mask)


async def read_variation(runner: Runner, data: dict[str, Any]) -> ImagesCall:
    images = _images(data)
    endpoint = task_endpoint(runner, "img2img")
    if endpoint is None:
        raise MalformedInput(f"model {runner.name} cannot make variations", field="model")
    return _call("variations", endpoint, {**data, "prompt": ""}, images=images[:1], mask=None)


def _images(data: dict[str, Any]) -> list[Any]:
    found = data.get("image[]", data.get("image"))
    if found is None or found == "":
        raise MalformedInput("image is required: send it as a file part", field="image")
    return found if isinstance(found, list) else [found]


def _call(
    kind: str,
    endpoint: EndpointSpec,
    data: dict[str, Any],
    *,
    images: list[Any] | None,
    mask: Any,
) -> ImagesCall:
    if returns_media(endpoint) is False:
        raise MalformedInput(
            f"this model does not make images: its endpoint {endpoint.name} returns "
            f"{endpoint.output_model.__name__ if endpoint.output_model else 'no images'}",
            field="model",
        )
    prompt = data.get("prompt")
    if kind != "variations" and (not isinstance(prompt, str) or not prompt.strip()):
        raise MalformedInput("prompt is required: a non-empty string", field="prompt")
    n = _int(data.get("n", 1), "n", 1, MAX_N)
    response_format = data.get("response_format") or "b64_json"
    if response_format not in ("b64_json", "url"):
        raise MalformedInput("response_format must be b64_json or url", field="response_format")
    fmt = data.get("output_format")
    if fmt is not None:
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            raise MalformedInput("output_format must be png, jpeg or webp", field="output_format")
        fmt = FORMATS[fmt.lower()]
    compression = data.get("output_compression")
    quality = (
        None if compression is None else max(1, _int(compression, "output_compression", 0, 100))
    )
    background = data.get("background") or "auto"
    if background not in ("auto", "opaque", "transparent"):
        raise MalformedInput("background must be transparent, opaque or auto", field="background")
    if background == "transparent" and fmt == "jpeg":
        raise MalformedInput(
            "a transparent background needs output_format png or webp", field="background"
        )
    steps_quality = data.get("quality")
    if steps_quality is not None and steps_quality not in QUALITIES:
        raise MalformedInput(f"quality must be one of {', '.join(QUALITIES)}", field="quality")
    stream = _bool(data.get("stream", False), "stream")
    partial = _int(data.get("partial_images", 0), "partial_images", 0, 3)
    size = data.get("size")
    if stream and images is not None and len(images) > 1:
        raise MalformedInput("stream takes one image", field="image")

    payload: dict[str, Any] = {}
    fields = fields_of(endpoint)
    if fields is not None:  # the endpoint's own fields pass through (seed, negative_prompt...)
        payload.update({k: v for k, v in data.items() if k in fields and k not in OPENAI_FIELDS})
    if has(endpoint, "prompt") and prompt is not None:
        payload["prompt"] = prompt
    payload.update(_size(endpoint, size))
    steps = _steps(endpoint, steps_quality)
    if steps is not None:
        payload["num_inference_steps"] = steps
    if mask is not None:
        payload["mask"] = mask
    copies = 1
    if has(endpoint, "num_images") and fields is not None:
        payload["num_images"] = n
    else:
        copies = n
    if stream and copies > 1:
        raise MalformedInput("stream takes n=1 on this model", field="n")
    payloads = [
        {**payload, **({"image": image} if image is not None else {})}
        for image in (images or [None])
        for _ in range(copies)
    ]
    return ImagesCall(
        kind=kind,
        endpoint=endpoint,
        payloads=tuple(payloads),
        response_format=response_format,
        format=fmt,
        quality=quality,
        stream=stream,
        partial_images=partial if stream else 0,
        size=size if isinstance(size, str) else None,
        background=background,
        steps_quality=steps_quality,
    )


def _int(value: Any, field: str, low: int, high: int) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or str(value).strip() not in (str(number), f"{number}.0"):
        raise MalformedInput(f"{field} must be an integer from {low} to {high}", field=field)
    if not low <= number <= high:
        raise MalformedInput(f"{field} is {number}; it must be from {low} to {high}", field=field)
    return number


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise MalformedInput(f"{field} must be true or false", field=field)


def _size(endpoint: EndpointSpec, size: Any) -> dict[str, int]:
    if size is None or size == "auto":
        return {}
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise MalformedInput("size must be WIDTHxHEIGHT (e.g. 1024x1024) or auto", field="size")
    width, height = int(match[1]), int(match[2])
    if width < 1 or height < 1:
        raise MalformedInput("size must be at least 1x1", field="size")
    if not (has(endpoint, "width") and has(endpoint, "height")):
        raise MalformedInput(
            f"endpoint {endpoint.name} does not take a size; send size=auto", field="size"
        )
    return {"width": width, "height": height}


def _steps(endpoint: EndpointSpec, quality: str | None) -> int | None:
    """The documented steps preset: low = half the default, high/hd = twice it."""
    if quality in (None, "auto", "medium", "standard") or fields_of(endpoint) is None:
        return None
    base = default(endpoint, "num_inference_steps")
    if not isinstance(base, int):
        return None
    steps = max(1, base // 2) if quality == "low" else base * 2
    cap = upper_bound(endpoint, "num_inference_steps")
    return int(min(steps, cap)) if cap is not None else steps


def repaint_mask(mask: Any, image: Any, media: Any) -> UploadedFile:
    """OpenAI's mask (transparent pixels: edit) as impasto's (white: repaint), checked against
    the first image's size. Runs in the input pool, under the media limits."""
    data, _ = load_bytes(mask, field="mask", config=media)
    picture = decode_image(data, field="mask", config=media)
    if "A" not in picture.getbands():
        raise MalformedInput(
            f"the mask must have an alpha channel (RGBA or LA), got {picture.mode}", field="mask"
        )
    image_bytes, _ = load_bytes(image, field="image", config=media)
    try:
        with PILImage.open(io.BytesIO(image_bytes)) as header:  # reads the size, not pixels
            size = header.size
    except Exception:
        raise MalformedInput("image: not an image impasto can read", field="image") from None
    if picture.size != size:
        raise MalformedInput(
            f"the mask is {picture.size[0]}x{picture.size[1]} but the image is "
            f"{size[0]}x{size[1]}; they must match",
            field="mask",
        )
    alpha = picture.getchannel("A")
    repaint = alpha.point(lambda a: 255 if a == 0 else 0)
    out = io.BytesIO()
    repaint.save(out, format="PNG")
    return UploadedFile(out.getvalue(), "image/png", "mask.png")
