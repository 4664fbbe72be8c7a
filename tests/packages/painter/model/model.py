import logging
import threading

import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, Field

import impasto
from impasto import Image

log = logging.getLogger("painter")  # lines a prediction logs reach its Cog `logs`


class Painted(BaseModel):
    images: list[Image]
    seeds: list[int]
    prompt: str


def paint(width: int, height: int, seed: int) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class Model:
    impasto_default_endpoint = "paint"
    load_gate = None  # a threading.Event the test sets before the server starts: load waits
    hold = threading.Event()  # set: predictions with hold=true wait for `release`
    release = threading.Event()
    loads = 0

    def load(self):
        type(self).loads += 1
        if type(self).load_gate is not None:
            type(self).load_gate.wait(60)

    @impasto.endpoint
    def paint(
        self,
        prompt: str = Field(..., min_length=1),
        width: int = Field(16, ge=1, le=1024),
        height: int = Field(16, ge=1, le=1024),
        num_images: int = Field(1, ge=1, le=4),
        seed: int = 0,
        num_inference_steps: int = Field(4, ge=1, le=20),
        fail: bool = False,
        hold: bool = False,
        context=None,
    ) -> Painted:
        """Noise images of the asked size, one per num_images; reports a step per image."""
        log.warning("painting %r", prompt)
        if hold:
            type(self).hold.set()
            type(self).release.wait(60)
        if fail:
            raise ValueError("the painter dropped its brush")
        for step in range(num_inference_steps):
            context.progress(step + 1, num_inference_steps, preview=paint(8, 8, step))
        return Painted(
            images=[paint(width, height, seed + i) for i in range(num_images)],
            seeds=[seed + i for i in range(num_images)],
            prompt=prompt,
        )

    @impasto.endpoint
    def tokens(self, prompt: str, n: int = 3):
        """A generator: one chunk per word of the prompt, n times over."""
        for i in range(n):
            log.warning("token %d", i)
            yield f"{prompt}-{i}"
