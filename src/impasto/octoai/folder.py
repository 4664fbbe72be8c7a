"""Recognise and load an OctoAI-style service folder.

::

    service/
    ├── service.py          # class MyService(Service): setup() once, infer(...) per request
    ├── octoai.yaml         # optional (the image name for a build)
    ├── requirements.txt    # optional: checked at load
    └── config.yaml         # optional: impasto settings (runtime limits, media)

The service class is found as the OctoAI SDK finds it: a class in ``service.py`` whose
direct base is ``octoai.service.Service``, the alphabetically last one when there are
several; ``impasto serve --service-class NAME`` (or ``model_class_name`` in config.yaml)
picks one. Requests that arrive while ``setup()`` runs wait for it
(``runtime.wait_for_load``, on by default here; ``runtime.load_wait_s`` bounds the wait).
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from types import ModuleType

from ..config import PackageConfig, load_config
from ..errors import PackageError
from ..requirements import report_missing
from .model import model_class_for
from .sdk import sdk_modules

log = logging.getLogger("impasto.octoai")

SERVICE_FILE = "service.py"
SERVICE_CLASS_ENV = "IMPASTO_SERVICE_CLASS"


def find_service_class(module: ModuleType, name: str | None, source: Path) -> type:
    """The service class of ``module``: ``name``, else the SDK's rule (a direct subclass of
    ``octoai.service.Service``; the alphabetically last of several)."""
    if name:
        cls = getattr(module, name, None)
        if not inspect.isclass(cls):
            raise PackageError(f"{source} has no class {name!r} (from --service-class)")
        return cls
    found = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)  # sorted by name
        if any(
            base.__module__ == "octoai.service" and base.__name__ == "Service"
            for base in cls.__bases__
        )
    ]
    if not found:
        raise PackageError(
            f"Module 'service' ({source}) contains no classes extending base "
            "'octoai.service.Service'"
        )
    if len(found) > 1:
        log.info("%s: several services (%s); using %s", source, found, found[-1].__name__)
    return found[-1]


class OctoAIFormat:
    """The :class:`~impasto.formats.Format` of OctoAI-style service folders."""

    name = "octoai"

    def detect(self, root: Path) -> bool:
        source = root / SERVICE_FILE
        if not source.is_file():
            return False
        try:
            return "octoai" in source.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def config(self, root: Path) -> PackageConfig:
        config = load_config(root / "config.yaml")
        update: dict = {"external_package_dirs": [*config.external_package_dirs, "."]}
        runtime = config.runtime
        if "wait_for_load" not in runtime.model_fields_set:  # /infer waits for setup()
            update["runtime"] = runtime.model_copy(update={"wait_for_load": True})
        return config.model_copy(update=update)

    def model_class(self, root: Path, config: PackageConfig) -> type:
        from ..package import _import_model_module

        source = root / SERVICE_FILE
        scope = sdk_modules
        with scope():
            module = _import_model_module(root, source)
            chosen = os.environ.get(SERVICE_CLASS_ENV) or (
                config.model_class_name if "model_class_name" in config.model_fields_set else None
            )
            service = find_service_class(module, chosen, source)
            cls = model_class_for(service, scope)
        requirements = self.requirements(root)
        if requirements is not None:
            report_missing(requirements)
        return cls

    def requirements(self, root: Path) -> Path | None:
        path = root / "requirements.txt"
        return path if path.is_file() else None


OCTOAI = OctoAIFormat()

__all__ = ["OCTOAI", "SERVICE_CLASS_ENV", "find_service_class"]
