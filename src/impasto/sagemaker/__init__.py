"""SageMaker model folders served unchanged, as the Hugging Face inference toolkit serves them.

:mod:`.folder` recognises and loads a folder; :mod:`.handlers` reads ``code/inference.py``;
:mod:`.model` runs the handler chain inside impasto's runner; :mod:`.codec` holds the
toolkit's default decoders and encoders; :mod:`.mms` the ``context`` handlers receive. The
routes (``/ping``, ``/invocations``, ``/endpoints/{name}/invocations``) are
:mod:`impasto.server.adapters.sagemaker`.
"""

from .folder import SAGEMAKER, has_sagemaker_files, hub_store_ref, sagemaker_model_dir
from .model import HandlerFailed, Invocation, Reply, SageMakerModel

__all__ = [
    "SAGEMAKER",
    "HandlerFailed",
    "Invocation",
    "Reply",
    "SageMakerModel",
    "has_sagemaker_files",
    "hub_store_ref",
    "sagemaker_model_dir",
]
