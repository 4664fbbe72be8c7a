"""A package folder's pip requirements: which are missing, and installing them on request.

impasto never installs anything silently: at load it reports the requirements the
environment lacks, and ``impasto serve --install-requirements`` (or a container build)
installs them with pip, before the package's code is imported.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from .errors import PackageError

log = logging.getLogger("impasto.package")


def requirements_file(root: Path) -> Path | None:
    """The requirements file of the package in ``root``: its format's (``code/
    requirements.txt`` of a SageMaker folder, ``requirements.txt`` of an OctoAI service),
    else ``config.yaml``'s ``requirements_file``."""
    from .config import load_config
    from .formats import detect_format

    fmt = detect_format(root)
    if fmt is not None:
        return fmt.requirements(root)
    config = load_config(root / "config.yaml")
    if config.requirements_file and (root / config.requirements_file).is_file():
        return root / config.requirements_file
    return None


def missing(path: Path) -> list[str]:
    """The lines of ``path`` the environment does not satisfy (a name not installed, or a
    version outside the specifier; a URL requirement only needs its name installed)."""
    found = []
    for line in _lines(path):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # pip options (-r, --index-url...) and editable lines: pip's business
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            found.append(line)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            found.append(f"{line} (installed: {version})")
    return found


def report_missing(path: Path) -> list[str]:
    """Log the requirements ``path`` lists that are not installed; returns them."""
    lacking = missing(path)
    if lacking:
        log.warning(
            "%s: not installed in this environment: %s; install them with "
            "`impasto serve --install-requirements` (or pip install -r %s)",
            path,
            ", ".join(lacking),
            path,
        )
    return lacking


def install(path: Path) -> None:
    """``pip install -r path`` into this interpreter's environment."""
    log.info("installing %s", path)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-r", str(path)], check=False)
    if done.returncode != 0:
        raise PackageError(f"pip install -r {path} failed (exit {done.returncode}); see above")


def _lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines
