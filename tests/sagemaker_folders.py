"""SageMaker model folders the tests serve: a tiny random-weight pipeline saved with
``save_pretrained`` plus ``code/inference.py`` in each of the toolkit's styles."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

PREDICT_FN = """
import torch
from diffusers import AutoPipelineForImage2Image, StableDiffusionPipeline
from PIL import Image


def model_fn(model_dir):
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def predict_fn(data, model):
    if not isinstance(data, dict):  # application/x-npy: the array itself
        return {"array": list(data.shape), "dtype": str(data.dtype)}
    inputs = data["inputs"]
    if isinstance(inputs, bytes):  # audio: the file's bytes
        return {"audio_bytes": len(inputs)}
    params = data.get("parameters") or {}
    if inputs == "raise":
        raise ValueError("the handler refused this prompt")
    generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
    steps = int(params.get("num_inference_steps", 2))
    if isinstance(inputs, Image.Image):  # img2img: the body was an image
        if inputs.mode != "RGB":
            raise ValueError(f"expected an RGB image, got {inputs.mode}")
        img2img = AutoPipelineForImage2Image.from_pipe(model)
        out = img2img(prompt="", image=inputs, strength=0.5, num_inference_steps=steps,
                      generator=generator)
        return out.images[0]
    return model(inputs, num_inference_steps=steps, generator=generator).images[0]
"""

TRANSFORM_FN = """
import base64
import io
import json

from diffusers import StableDiffusionPipeline


def model_fn(model_dir, context):
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.loaded_from = context.system_properties["model_dir"]
    return pipe


def transform_fn(model, input_data, content_type, accept):
    if not content_type.startswith("application/json"):
        return json.dumps({
            "type": type(input_data).__name__,
            "content_type": content_type,
            "accept": accept,
            "size": len(input_data),
            "loaded_from": model.loaded_from,
        })
    body = json.loads(input_data)
    image = model(body["inputs"], num_inference_steps=2).images[0]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    if accept == "image/png":
        return buf.getvalue()
    return json.dumps({"image": base64.b64encode(buf.getvalue()).decode()})
"""

CONTEXT_FNS = """
import io
import json

import torch


def input_fn(input_data, content_type, context):
    headers = context.request_processor[0].get_request_properties()
    attributes = headers.get("X-Amzn-SageMaker-Custom-Attributes") or ""
    pairs = dict(item.split("=", 1) for item in attributes.split(";") if "=" in item)
    data = json.loads(input_data)
    params = data.setdefault("parameters", {})
    params["num_inference_steps"] = 2
    if "seed" in pairs:
        params["generator"] = torch.Generator().manual_seed(int(pairs["seed"]))
    return data


def output_fn(prediction, accept, context):
    attributes = context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", f"echo;{attributes}")
    context.set_response_header(0, "X-Model-Dir", context.system_properties["model_dir"])
    buf = io.BytesIO()
    prediction.save(buf, format="PNG")
    if accept == "image/png":
        return buf.getvalue()
    return json.dumps({
        "size": list(prediction.size),
        "inference_id": context.get_request_header(0, "X-Amzn-SageMaker-Inference-Id"),
        "gpu_id": context.system_properties["gpu_id"],
    })
"""

BOTH = """
def transform_fn(model, input_data, content_type, accept):
    return input_data


def predict_fn(data, model):
    return data
"""

GATED = """
import json
import time
from pathlib import Path


def _wait(path):
    while not path.exists():
        time.sleep(0.01)


def model_fn(model_dir):
    folder = Path(model_dir)
    _wait(folder / "load.open")
    (folder / "loads").open("a").write("x")
    return {"folder": folder}


def predict_fn(data, model):
    if data.get("inputs") == "block":
        (model["folder"] / "started").write_text("1")
        _wait(model["folder"] / "release")
    return {"echo": data.get("inputs")}
"""


def code_folder(root: Path, source: str, *, weights: Path | None = None, config: str = "") -> Path:
    """``root`` with ``weights`` copied in (a save_pretrained folder) and code/inference.py."""
    if weights is not None:
        shutil.copytree(weights, root)
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "inference.py").write_text(textwrap.dedent(source))
    if config:
        (root / "config.yaml").write_text(textwrap.dedent(config))
    return root
