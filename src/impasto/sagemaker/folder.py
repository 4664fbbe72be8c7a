"""Recognise and load a SageMaker model folder (the Hugging Face inference toolkit's layout).

::

    model/                      # what model.tar.gz unpacks to (/opt/ml/model on SageMaker)
    ├── model_index.json        # a diffusers pipeline: served as text-to-image by default
    ├── unet/ vae/ ...
    ├── config.yaml             # optional: impasto settings (runtime limits, batching, media)
    └── code/
        ├── inference.py        # optional: model_fn / input_fn / predict_fn / output_fn
        └── requirements.txt    #           or transform_fn; checked at load

``SAGEMAKER_PROGRAM`` names another module than ``inference.py``; ``code/`` is on the import
path while the folder is imported and served. With ``HF_MODEL_ID`` (``HF_MODEL_REVISION``,
``HF_API_TOKEN``/``HF_TOKEN``) the model is downloaded at load into impasto's model store,
so a second start reads it from disk.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..config import PackageConfig, load_config
from ..errors import NotFound
from ..requirements import report_missing
from .handlers import Handlers, read_handlers
from .model import SageMakerModel

log = logging.getLogger("impasto.sagemaker")

PROGRAM_ENV = "SAGEMAKER_PROGRAM"
DEFAULT_PROGRAM = "inference.py"
MODEL_DIR_ENV = "SM_MODEL_DIR"
DEFAULT_MODEL_DIR = "/opt/ml/model"
SHIM_MARKER = "# impasto: SageMaker entry point"
"""The first line of the ``code/inference.py`` impasto generates for an impasto package."""


def program_file(root: Path) -> Path:
    """``code/<SAGEMAKER_PROGRAM>`` (default ``code/inference.py``)."""
    name = os.environ.get(PROGRAM_ENV) or DEFAULT_PROGRAM
    return root / "code" / (name if name.endswith(".py") else f"{name}.py")


def has_sagemaker_files(root: Path) -> bool:
    """A handler module, or a diffusers pipeline with no impasto config beside it. The
    ``code/inference.py`` that ``impasto build --format sagemaker`` writes for an impasto
    package does not count: that folder is the impasto package, the shim is for the toolkit."""
    program = program_file(root)
    if program.is_file() and not is_impasto_shim(program):
        return True
    return (root / "model_index.json").is_file() and not (root / "config.yaml").is_file()


def is_impasto_shim(path: Path) -> bool:
    """Whether ``path`` is the handler module impasto generates for an impasto package."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.readline().startswith(SHIM_MARKER)
    except OSError:
        return False


def sagemaker_model_dir() -> Path:
    """Where SageMaker unpacks the model (``$SM_MODEL_DIR``, default ``/opt/ml/model``)."""
    return Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR)


class SageMakerFormat:
    """The :class:`~impasto.formats.Format` of SageMaker model folders."""

    name = "sagemaker"

    def detect(self, root: Path) -> bool:
        if has_sagemaker_files(root):
            return True
        hub = bool(os.environ.get("HF_MODEL_ID"))  # a hub model and no package at all
        return hub and not (root / "config.yaml").is_file()

    def config(self, root: Path) -> PackageConfig:
        config = load_config(root / "config.yaml")
        if (root / "code").is_dir():
            dirs = [*config.external_package_dirs, "code"]
            config = config.model_copy(update={"external_package_dirs": dirs})
        return config

    def model_class(self, root: Path, config: PackageConfig) -> type:
        from ..package import _import_model_module

        source = program_file(root)
        handlers = Handlers()
        if source.is_file():
            module = _import_model_module(source.parent, source)
            handlers = read_handlers(module, source)
            log.info("%s: %s", source, ", ".join(handlers.defined) or "no handler functions")
        requirements = self.requirements(root)
        if requirements is not None:
            report_missing(requirements)
        return model_class_for(root, handlers)

    def requirements(self, root: Path) -> Path | None:
        path = root / "code" / "requirements.txt"
        return path if path.is_file() else None


SAGEMAKER = SageMakerFormat()


def model_class_for(root: Path, handlers: Handlers) -> type[SageMakerModel]:
    """A :class:`SageMakerModel` subclass bound to one folder and its handlers."""

    def model_dir() -> str:
        return hub_model_dir() or str(root)

    namespace = {
        "__module__": SageMakerModel.__module__,
        "__qualname__": SageMakerModel.__qualname__,
        "__doc__": SageMakerModel.__doc__,
        "handlers": handlers,
        "model_dir": staticmethod(model_dir),
    }
    return type(SageMakerModel.__name__, (SageMakerModel,), namespace)


def hub_store_ref(model_id: str, revision: str | None) -> str:
    """The store ref ``HF_MODEL_ID`` (at ``HF_MODEL_REVISION``) is kept under:
    ``hf--org--name:revision`` (``main`` by default)."""
    name = "hf--" + _store_word(model_id.replace("/", "--"))
    return f"{name}:{_store_word(revision or 'main')}"


def _store_word(text: str) -> str:
    word = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:64]
    return word or "model"


def hub_model_dir() -> str | None:
    """``HF_MODEL_ID``'s folder in the model store, downloaded there on first use."""
    model_id = os.environ.get("HF_MODEL_ID")
    if not model_id:
        return None
    from ..store import ModelStore

    store = ModelStore()
    revision = os.environ.get("HF_MODEL_REVISION") or None
    ref = hub_store_ref(model_id, revision)
    try:
        return str(store.resolve(ref).path)
    except NotFound:
        pass
    token = os.environ.get("HF_API_TOKEN") or None  # else HF_TOKEN, found by the store
    log.info("downloading %s into the model store as %s", model_id, ref)
    return str(store.import_hub(ref, model_id, revision=revision, token=token).path)
