"""The benchmark's no-op and image workloads as BentoML services, written as its docs show.

    BENCH_IMAGES=DIR bentoml serve bentoml_service:Noop|Picture --host 127.0.0.1 --port PORT

Run by ``bench/peers.py`` from a virtualenv that has bentoml installed.
"""

import os
from pathlib import Path

import bentoml
import numpy as np
from PIL import Image


@bentoml.service
class Noop:
    @bentoml.api
    async def predict(self, text: str = "", n: int = 0) -> dict:
        return {"text": text, "n": n}


@bentoml.service
class Picture:
    """Answers a prepared image; BentoML sends a PIL image as raw PNG bytes."""

    def __init__(self) -> None:
        folder = Path(os.environ["BENCH_IMAGES"])
        self.images = {}
        for size in (512, 1024):
            with Image.open(folder / f"{size}.png") as img:
                self.images[size] = Image.fromarray(np.asarray(img))

    @bentoml.api
    async def predict(self, size: int = 512) -> Image.Image:
        return self.images[size]
