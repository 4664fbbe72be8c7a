"""The step hook given to every pipeline call: progress, previews and cancellation.

diffusers calls ``callback_on_step_end`` after each denoising step. Raising there is the
one way to stop every pipeline (SVD ignores ``_interrupt``) without decoding a useless
image, and the pipeline stays usable afterwards, so cancellation lands within one step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..context import RequestContext

log = logging.getLogger(__name__)

# Linear map from SD 1.x/2.x latents to RGB: a cheap preview without the VAE.
_SD_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


def latent_preview(latent: Any, max_side: int = 256) -> Any:
    """A small PIL image from one item's latents ``(C, H, W)`` or video ``(F, C, H, W)``."""
    import torch
    from PIL import Image

    x = latent.detach().float().cpu()
    if x.ndim == 4:  # video latents: show the first frame
        x = x[0]
    if x.ndim != 3 or x.shape[0] < 3:
        return None  # packed latents (Flux and friends) have no cheap image view
    if x.shape[0] == 4:
        rgb = torch.einsum("chw,cr->rhw", x, torch.tensor(_SD_RGB))
    else:
        rgb = x[:3] / (x[:3].abs().amax() + 1e-6)
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr, "RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return img


class StepHook:
    """``callback_on_step_end`` for one batched call serving several requests.

    ``spans[i]`` is ``(start, count)``: which items of the batch belong to ``contexts[i]``.
    """

    def __init__(
        self,
        contexts: Sequence[RequestContext],
        spans: Sequence[tuple[int, int]],
        total: int,
        preview_every: int = 0,
    ) -> None:
        self.contexts = list(contexts)
        self.spans = list(spans)
        self.total = total
        self.preview_every = preview_every
        self.steps = 0

    def raise_if_all_cancelled(self) -> None:
        """Stop the call once nobody is waiting for it (canceled, gone or past deadline)."""
        if self.contexts and all(ctx.cancelled for ctx in self.contexts):
            self.contexts[0].check()

    def __call__(self, pipe: Any, step_index: int, timestep: Any, kwargs: dict) -> dict:
        self.steps = step_index + 1
        self.raise_if_all_cancelled()
        total = getattr(pipe, "num_timesteps", None) or self.total
        latents = kwargs.get("latents")
        for ctx, (start, _) in zip(self.contexts, self.spans, strict=True):
            if ctx.cancelled:
                continue
            every = _preview_every(ctx, self.preview_every, int(total))
            want_preview = every > 0 and self.steps % every == 0 and latents is not None
            try:
                preview = latent_preview(latents[start]) if want_preview else None
                ctx.progress(self.steps, int(total), preview=preview)
            except Exception:  # a broken listener must not stop the others' images
                log.exception("request %s: progress listener failed", ctx.request_id)
        return {}


def _preview_every(ctx: RequestContext, default: int, total: int) -> int:
    """Steps between previews: the package's ``preview_every``, or spread over the run when
    the client asked for a number of them (OpenAI's ``partial_images``)."""
    wanted = ctx.output.previews
    if wanted <= 0:
        return default
    return max(1, total // (wanted + 1))
