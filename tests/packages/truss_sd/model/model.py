"""Stable Diffusion as Truss's docs write it: predict returns the pipeline's output object,
a Dict-annotated postprocess turns it into base64 PNGs. (The pipeline is a tiny one with
random weights, built by the tests into data/tiny-sd.)"""

import base64
import io
from typing import Any, Dict

import torch
from diffusers import StableDiffusionPipeline


class Model:
    def __init__(self, **kwargs) -> None:
        self._data_dir = kwargs["data_dir"]
        self._model = None

    def load(self) -> None:
        self._model = StableDiffusionPipeline.from_pretrained(str(self._data_dir / "tiny-sd"))
        self._model.set_progress_bar_config(disable=True)

    def predict(self, model_input: Dict) -> Any:
        prompt = model_input.pop("prompt")
        generator = torch.Generator("cpu").manual_seed(model_input.pop("seed", 0))
        return self._model(
            prompt,
            num_inference_steps=model_input.get("steps", 2),
            height=64,
            width=64,
            generator=generator,
        )

    def postprocess(self, model_output: Dict) -> Dict:
        image = model_output["images"][0]
        buffered = io.BytesIO()
        image.save(buffered, format="PNG")
        return {
            "status": "success",
            "output": type(model_output).__name__,
            "keys": list(model_output.keys()),
            "size": list(image.size),
            "data": base64.b64encode(buffered.getvalue()).decode("utf-8"),
        }
