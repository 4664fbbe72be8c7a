"""Pure helpers that turn validated requests into one pipeline call's keyword arguments.

Kept apart from the model so the batching rules (what may share a call, what a call costs,
which seed each image gets) read in one place and need no pipeline to test.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import DiffusersConfig


def batch_key(task: str, inp: Any) -> Hashable:
    """Requests that can share one pipeline call: same task, size, steps, guidance,
    scheduler, strength, LoRA set and negative-prompt presence (SDXL treats "" and none
    differently, so mixing them would change a request's output)."""
    loras = tuple(sorted((lo.ref, lo.scale) for lo in getattr(inp, "loras", ())))
    return (
        task,
        inp.width,
        inp.height,
        inp.num_inference_steps,
        inp.guidance_scale,
        getattr(inp, "scheduler", None),
        getattr(inp, "strength", None),
        getattr(inp, "num_frames", None),
        loras,
        bool(getattr(inp, "negative_prompt", None)),
    )


def batch_cost(cfg: DiffusersConfig, inp: Any) -> tuple[int, int]:
    """``(images, pixels)`` counted against the batch limits."""
    n = getattr(inp, "num_images", 1)
    width = inp.width or cfg.default_width or 512
    height = inp.height or cfg.default_height or 512
    return n, n * width * height


@dataclass
class ImageBatch:
    """One pipeline call for several requests: ``spans[i]`` = (first item, count) of request i."""

    seeds: list[int]
    spans: list[tuple[int, int]]
    kwargs: dict[str, Any] = field(default_factory=dict)


def image_batch(task: str, inputs: Sequence[Any], width: int, height: int) -> ImageBatch:
    """Prompts repeated per image, one generator per image (request seed + i), inputs
    resized to the output size; settings shared by the batch come from the first input."""
    first = inputs[0]
    seeds = [inp.seed if inp.seed is not None else random_seed() for inp in inputs]
    prompts: list[str] = []
    negatives: list[str] = []
    generators, images, masks, spans = [], [], [], []
    for inp, seed in zip(inputs, seeds, strict=True):
        n = inp.num_images
        spans.append((len(prompts), n))
        prompts += [inp.prompt] * n
        negatives += [inp.negative_prompt or ""] * n
        generators += [generator(seed + k) for k in range(n)]
        if task != "text2img":
            images += [fit(inp.image, width, height, "RGB")] * n
        if task == "inpaint":
            masks += [fit(inp.mask, width, height, "L")] * n
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "negative_prompt": negatives if any(negatives) else None,
        "num_inference_steps": first.num_inference_steps,
        "guidance_scale": first.guidance_scale,
        "width": width,
        "height": height,
        "generator": generators,
        "output_type": "pil",
    }
    if task != "text2img":
        kwargs.update(image=images, strength=first.strength)
    if task == "inpaint":
        kwargs["mask_image"] = masks
    return ImageBatch(seeds, spans, kwargs)


def video_kwargs(inp: Any, width: int, height: int, frames: int, seed: int) -> dict[str, Any]:
    """Stable Video Diffusion's arguments; ``guidance_scale`` is the last frame's guidance."""
    return {
        "image": fit(inp.image, width, height, "RGB"),
        "width": width,
        "height": height,
        "num_frames": frames,
        "num_inference_steps": inp.num_inference_steps,
        "min_guidance_scale": inp.min_guidance_scale,
        "max_guidance_scale": inp.guidance_scale,
        "fps": inp.fps,
        "motion_bucket_id": inp.motion_bucket_id,
        "noise_aug_strength": inp.noise_aug_strength,
        "decode_chunk_size": inp.decode_chunk_size or frames,
        "generator": generator(seed),
        "output_type": "pil",
    }


def random_seed() -> int:
    return secrets.randbelow(2**32)


def generator(seed: int) -> Any:
    """A CPU generator: the same seed gives the same noise on every device, so a recipe
    made on a GPU server reproduces on a laptop."""
    import torch

    return torch.Generator("cpu").manual_seed(seed)


def fit(image: Any, width: int, height: int, mode: str) -> Any:
    """``image`` in ``mode`` at exactly the output size (pipelines differ in resizing)."""
    from PIL import Image

    image = image.convert(mode) if image.mode != mode else image
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def native_size(pipe: Any) -> int:
    """The side length the model was trained at (sample size times the VAE's factor)."""
    unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(pipe, "default_sample_size", None) or getattr(
        getattr(unet, "config", None), "sample_size", 64
    )
    return int(sample) * int(getattr(pipe, "vae_scale_factor", 8))


def pipeline_kwargs(pipe: Any, kwargs: dict[str, Any], hook: Any) -> dict[str, Any]:
    """The arguments ``pipe`` takes, with the step hook as its ``callback_on_step_end``."""
    names = accepted(pipe)
    call = {k: v for k, v in kwargs.items() if k in names and v is not None}
    call["callback_on_step_end"] = hook
    return call


def accepted(pipe: Any) -> frozenset[str]:
    """The keyword arguments a pipeline's ``__call__`` takes."""
    return _call_parameters(type(pipe))


@functools.cache
def _call_parameters(cls: type) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(cls.__call__).parameters)
