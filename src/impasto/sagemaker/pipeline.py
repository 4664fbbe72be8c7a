"""The toolkit's default ``model_fn`` and ``predict_fn``.

With no ``model_fn``, a folder with ``model_index.json`` (or ``HF_TASK=text-to-image``) loads
as a diffusers text-to-image pipeline that returns one PIL image per call (a requested
``num_images_per_prompt`` is dropped, as the toolkit does), and ``HF_TASK`` names any other
transformers pipeline. With no ``predict_fn``, ``{"inputs": ..., "parameters": {...}}`` is
``model(inputs, **parameters)``.

The diffusers pipeline reports progress and stops within a step when its request is canceled
or runs past its deadline (impasto's step hook), which the toolkit's does not.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..context import RequestContext

log = logging.getLogger("impasto.sagemaker")

TEXT_TO_IMAGE = "text-to-image"

current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "impasto_sagemaker_request", default=None
)
"""The request a handler is running for, set around each handler call (its thread)."""


class TextToImage:
    """A diffusers pipeline called as the toolkit calls it: ``model(prompt, **parameters)``
    gives one PIL image."""

    def __init__(self, model_dir: str | Path) -> None:
        import torch
        from diffusers import DiffusionPipeline

        from ..diffusers.pipelines import pick_device, quiet

        device = pick_device()
        dtype = torch.float32
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with quiet():
            self.pipeline = DiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=dtype)
        self.pipeline.to(device)
        self.pipeline.set_progress_bar_config(disable=True)  # the server log is for requests
        self._lock = threading.Lock()  # a pipeline is not thread-safe

    def __call__(self, prompt: Any, **kwargs: Any) -> Any:
        import torch

        from ..diffusers.calls import accepted
        from ..diffusers.progress import StepHook

        if kwargs.pop("num_images_per_prompt", None) is not None:
            log.warning("num_images_per_prompt is not supported; generating one image")
        ctx = current_request.get()
        hooked = "callback_on_step_end" in kwargs
        if ctx is not None and not hooked and "callback_on_step_end" in accepted(self.pipeline):
            steps = kwargs.get("num_inference_steps") or 50
            kwargs["callback_on_step_end"] = StepHook([ctx], [(0, 1)], int(steps))
        with self._lock, torch.inference_mode():
            if ctx is not None:
                ctx.check()  # canceled while waiting for the lock
            out = self.pipeline(prompt, num_images_per_prompt=1, **kwargs)
        return out.images[0]


def default_model_fn(model_dir: str) -> Any:
    """The toolkit's ``load``: ``HF_TASK``, else ``model_index.json`` (text-to-image)."""
    task = os.environ.get("HF_TASK")
    folder = Path(model_dir)
    if not task and (folder / "model_index.json").is_file():
        task = TEXT_TO_IMAGE
    if not task:
        what = "config.json" if (folder / "config.json").is_file() else "no model_index.json"
        raise ValueError(
            f"{model_dir} has {what}; set HF_TASK to the pipeline task to serve (for example "
            "text-to-image, text-classification), or define model_fn in code/inference.py"
        )
    if task == TEXT_TO_IMAGE:
        return TextToImage(folder)
    from transformers import pipeline

    device = 0 if _cuda() else -1
    return pipeline(task=task, model=str(folder), device=device)


def default_predict_fn(data: Any, model: Any) -> Any:
    """The toolkit's ``predict``: ``inputs`` and ``parameters`` from the decoded body."""
    inputs = data.pop("inputs", data)
    parameters = data.pop("parameters", None)
    if parameters is not None:
        return model(inputs, **parameters)
    return model(inputs)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
