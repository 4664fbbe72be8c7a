"""The one module of :mod:`impasto.build` that runs other programs: pip (impasto's own
wheel), and a container engine (podman or docker) to build and push an image.

Everything else in the package renders text or copies files; keeping the subprocesses here
keeps them few, visible and easy to fake nowhere: tests run them for real.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import BuildError

log = logging.getLogger("impasto.build")

ENGINES = ("podman", "docker")


def source_tree() -> Path | None:
    """The source checkout impasto runs from (an editable install), if it is one."""
    try:
        dist = importlib.metadata.distribution("impasto")
        text = dist.read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        text = None
    if text:
        info = json.loads(text)
        url = str(info.get("url", ""))
        if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
            return Path(url.removeprefix("file://"))
    here = Path(__file__).resolve().parents[3]  # src/impasto/build/shell.py -> repo root
    pyproject = here / "pyproject.toml"
    if pyproject.is_file() and 'name = "impasto"' in pyproject.read_text():
        return here
    return None


def impasto_wheel(dest: Path, wheelhouse: Path | None = None) -> Path:
    """impasto's own wheel, of the running version, in ``dest``: from the wheelhouse when it
    has one, else built from the source checkout, else downloaded with pip."""
    name = f"impasto-{__version__}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)
    if wheelhouse is not None and (wheelhouse / name).is_file():
        return wheelhouse / name
    src = source_tree()
    with tempfile.TemporaryDirectory(prefix="impasto-wheel-") as tmp:
        if src is not None:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(src)]
        else:
            req = f"impasto=={__version__}"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, req]
        run(cmd, what="building impasto's wheel")
        built = Path(tmp) / name
        if not built.is_file():
            raise BuildError(
                f"pip wrote no {name} (found: {sorted(p.name for p in Path(tmp).iterdir())})"
            )
        shutil.move(built, dest / name)
    return dest / name


def engine_path(engine: str) -> str | None:
    """The engine's executable, if installed."""
    if engine not in ENGINES:
        raise BuildError(f"--engine {engine!r}: use podman or docker")
    return shutil.which(engine)


def build_command(engine: str, context: Path, tag: str) -> list[str]:
    """The command that builds ``context`` into ``tag`` (podman keeps the Docker image format,
    so the HEALTHCHECK and STOPSIGNAL survive)."""
    fmt = ["--format", "docker"] if engine == "podman" else []
    return [engine, "build", *fmt, "-t", tag, str(context)]


def push_command(engine: str, tag: str) -> list[str]:
    return [engine, "push", tag]


def quote(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def run(cmd: Sequence[str], *, what: str, capture: bool = True) -> str:
    """Run ``cmd``; a failure is a :class:`BuildError` with the tail of its output."""
    log.info("%s: %s", what, quote(cmd))
    try:
        done = subprocess.run(
            list(cmd),
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} is not installed") from None
    if done.returncode != 0:
        tail = (done.stdout or "")[-3000:]
        raise BuildError(f"{what} failed (exit {done.returncode}): {quote(cmd)}\n{tail}".rstrip())
    return done.stdout or ""
