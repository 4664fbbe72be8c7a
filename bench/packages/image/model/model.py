"""Returns a prepared photo-like image of the requested size; encoding is impasto's work."""

from bench.encoders import photo_like
from PIL import Image

SIZES = (512, 1024)


class Model:
    def load(self) -> None:
        self.images = {size: Image.fromarray(photo_like(size)) for size in SIZES}

    async def predict(self, model_input: dict) -> Image.Image:
        return self.images[int(model_input.get("size", 512))]
