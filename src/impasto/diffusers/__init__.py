"""Zero-code serving of diffusers pipelines: tasks, schemas, progress, LoRA, tiny test models.

Importing this package is cheap; torch and diffusers load when a pipeline does.
"""

from pathlib import Path
from typing import Any

from .calls import batch_cost, batch_key
from .continuous import ContinuousEngine
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
from .tiny import build_tiny_lora, build_tiny_sd, build_tiny_sdxl, build_tiny_svd, ensure_in_store


def import_model(ref: str, source: str | Path, *, home: Path | None = None, **options: Any) -> Any:
    """Import a diffusers folder or hub repo into the model store (``impasto models import``).

    ``options`` are those of :meth:`impasto.store.ModelStore.import_source` (``revision``,
    ``variant``, ``include``, ``exclude``, ``token``, ``allow_pickle``, ``force``).
    """
    from ..store import ModelStore

    return ModelStore(home).import_source(ref, source, **options)


__all__ = [
    "DEFAULT_SCHEDULERS",
    "TASKS",
    "ContinuousEngine",
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
    "ensure_in_store",
    "import_model",
    "load_pipelines",
    "make_schemas",
    "model_class_for",
    "resolve_source",
    "supported_tasks",
]
