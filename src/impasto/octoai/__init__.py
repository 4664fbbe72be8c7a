"""OctoAI-style services (``service.py`` with an ``octoai.service.Service`` subclass) served
unchanged, without depending on ``octoai-sdk``.

:mod:`.folder` recognises and loads a folder; :mod:`.model` turns the service into an
impasto model; :mod:`.sdk` provides ``octoai.service``/``octoai.types`` when no compatible
SDK is installed (:mod:`.compat_service`, :mod:`.compat_types`). The routes (``/infer``,
``/healthcheck``, ``GET /``) are :mod:`impasto.server.adapters.octoai`.
"""

from .folder import OCTOAI, SERVICE_CLASS_ENV, find_service_class
from .model import OctoAIModel, ResponseAnalytics
from .sdk import sdk_modules

__all__ = [
    "OCTOAI",
    "SERVICE_CLASS_ENV",
    "OctoAIModel",
    "ResponseAnalytics",
    "find_service_class",
    "sdk_modules",
]
