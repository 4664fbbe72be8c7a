"""Package folders made for other serving systems, recognised and loaded unchanged.

A folder is impasto's own (``config.yaml`` + ``model/model.py``, or a ``diffusers:``
section) unless it is one of these, each of which builds an ordinary model class so the
runner, admission, batching and metrics serve it like any other:

- an OctoAI-style service: ``service.py`` with a ``Service`` subclass
  (:mod:`impasto.octoai`);
- a SageMaker model folder: ``code/inference.py``, a diffusers pipeline folder with no
  ``config.yaml``, or ``HF_MODEL_ID`` and no package at all (:mod:`impasto.sagemaker`).

Detection reads file names (and, for ``service.py``, its text), never imports user code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .config import PackageConfig


class Format(Protocol):
    """How to recognise and load one kind of foreign package folder."""

    name: str

    def detect(self, root: Path) -> bool:
        """Whether ``root`` is a folder of this kind (file names only; no user code runs)."""
        ...

    def config(self, root: Path) -> PackageConfig:
        """impasto settings for the folder (an optional ``config.yaml`` and this kind's
        defaults)."""
        ...

    def model_class(self, root: Path, config: PackageConfig) -> type:
        """The model class serving the folder, built while the package's scope is active."""
        ...

    def requirements(self, root: Path) -> Path | None:
        """The folder's pip requirements file, if it has one."""
        ...


def formats() -> list[Format]:
    """Every foreign format, in the order they are tried."""
    from .octoai.folder import OCTOAI
    from .sagemaker.folder import SAGEMAKER

    return [OCTOAI, SAGEMAKER]


def detect_format(root: Path) -> Format | None:
    """The foreign format of ``root``, or None for an impasto package."""
    if (root / "model" / "model.py").is_file():
        return None
    for fmt in formats():
        if fmt.detect(root):
            return fmt
    return None


def is_package_folder(root: Path) -> bool:
    """Whether ``root`` holds a package ``impasto serve`` can serve as it is (settings from
    the environment, such as ``HF_MODEL_ID``, aside)."""
    from .octoai.folder import OCTOAI
    from .sagemaker.folder import has_sagemaker_files

    if (root / "config.yaml").is_file() or (root / "model" / "model.py").is_file():
        return True
    return OCTOAI.detect(root) or has_sagemaker_files(root)
