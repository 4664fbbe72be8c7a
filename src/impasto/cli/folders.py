"""Which folder a command serves, and installing its requirements on request.

SageMaker starts a container as ``<entrypoint> serve``, with the model unpacked in
``/opt/ml/model``: so ``impasto serve`` with no path serves ``.`` when it is a package, else
that folder when it exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..formats import is_package_folder
from ..octoai import SERVICE_CLASS_ENV
from ..requirements import install, requirements_file
from ..sagemaker import sagemaker_model_dir
from .output import err_console


def package_path(path: Path | None) -> Path:
    """``path``, else ``.`` when it holds a package, else SageMaker's model folder
    (``$SM_MODEL_DIR``, default ``/opt/ml/model``) when it exists, else ``.``."""
    if path is not None:
        return path
    here = Path(".")
    if is_package_folder(here):
        return here
    sagemaker = sagemaker_model_dir()
    return sagemaker if sagemaker.is_dir() else here


def install_requirements(path: Path) -> None:
    """pip install the package's requirements file, if it has one (before it is imported)."""
    file = requirements_file(path.resolve())
    if file is None:
        err_console.print(f"{path}: no requirements file to install")
        return
    install(file)


def choose_service_class(name: str | None) -> None:
    """``--service-class``: which OctoAI-style service class of ``service.py`` to serve."""
    if name:
        os.environ[SERVICE_CLASS_ENV] = name
