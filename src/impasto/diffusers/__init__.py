"""Zero-code serving of diffusers pipelines: tasks, schemas, progress, LoRA, tiny test models.

Importing this package is cheap; torch and diffusers load when a pipeline does.
"""

from .calls import batch_cost, batch_key
from .model import DiffusersModel, model_class_for
from .pipelines import (
    DEFAULT_SCHEDULERS,
    TASKS,
    ModelSource,
    PipelineSet,
    load_pipelines,
    resolve_source,
    supported_tasks,
)
from .schemas import (
    ImageResult,
    Img2ImgInput,
    Img2VidInput,
    InpaintInput,
    LoraInput,
    Text2ImgInput,
    VideoResult,
    make_schemas,
)
from .tiny import build_tiny_lora, build_tiny_sd, build_tiny_sdxl, build_tiny_svd

__all__ = [
    "DEFAULT_SCHEDULERS",
    "TASKS",
    "DiffusersModel",
    "ImageResult",
    "Img2ImgInput",
    "Img2VidInput",
    "InpaintInput",
    "LoraInput",
    "ModelSource",
    "PipelineSet",
    "Text2ImgInput",
    "VideoResult",
    "batch_cost",
    "batch_key",
    "build_tiny_lora",
    "build_tiny_sd",
    "build_tiny_sdxl",
    "build_tiny_svd",
    "load_pipelines",
    "make_schemas",
    "model_class_for",
    "resolve_source",
    "supported_tasks",
]
