"""What the container test needs, made once per machine and reused: a Debian base image made
with debootstrap (no registry is reachable) and a wheelhouse that `pip download` fills."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from client_venvs import CACHE
from impasto.build.context import place

BASE_IMAGE = "localhost/impasto-base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def require(tool: str) -> str:
    """The tool's path; outside CI a missing tool skips the test, in CI it fails it."""
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed (.ci/run installs podman, runc and debootstrap)"
        if os.environ.get("IMPASTO_CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def _mirror() -> str:
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", path.read_text(), re.M)
        if match:
            return match.group(1)
    sources = Path("/etc/apt/sources.list")
    if sources.is_file():
        match = re.search(r"^deb\s+(\S+/debian)\s", sources.read_text(), re.M)
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


def ensure_base_image() -> str:
    """``localhost/impasto-base:bookworm``: Debian's minbase with python3, python3-venv and
    ca-certificates (Python 3.11, as the local CPU torch wheel), made once per machine. The
    root filesystem is also kept as a tarball in the test cache, so an image store that was
    cleared gets it back in seconds instead of another debootstrap."""
    require("podman")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / "impasto-base-bookworm.tar"
    with (CACHE / "base-image.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
            return BASE_IMAGE
        if not tarball.is_file():
            _debootstrap(tarball)
        podman("import", str(tarball), BASE_IMAGE, timeout=600)
    return BASE_IMAGE


def _debootstrap(tarball: Path) -> None:
    """Debian bookworm's minbase, tarred into ``tarball`` (about 2 minutes, 270 MB)."""
    require("debootstrap")
    with tempfile.TemporaryDirectory(prefix="impasto-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                _mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=1500,
        )
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
            capture_output=True,
            timeout=600,
        )
        partial.replace(tarball)


def _requirements(wheel: Path, extra: str) -> list[str]:
    """impasto's own requirements with ``extra``, from the wheel's metadata."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    found = []
    for line in lines:
        if not line.startswith("Requires-Dist: "):
            continue
        req = line.removeprefix("Requires-Dist: ")
        req, _, marker = req.partition(";")
        if not marker or f"extra == '{extra}'" in marker or f'extra == "{extra}"' in marker:
            found.append(req.strip())
    return found


def wheelhouse(impasto_wheel: Path, requirements: list[str], dest: Path) -> Path:
    """``dest`` with impasto's wheel and every wheel the image needs (hard links into a
    per-machine cache that `pip download` fills the first time)."""
    wanted = sorted({*_requirements(impasto_wheel, "diffusers"), *requirements})
    key = hashlib.sha256("\n".join([sys.version, *wanted]).encode()).hexdigest()[:16]
    cache = CACHE / f"wheelhouse-{key}"
    done = cache / ".complete"
    if not done.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with (CACHE / f"wheelhouse-{key}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(cache, ignore_errors=True)
                cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(cache), *wanted]
                result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
                if result.returncode != 0:
                    shutil.rmtree(cache, ignore_errors=True)
                    raise AssertionError(f"pip download failed:\n{result.stderr[-3000:]}")
                done.write_text("\n".join(wanted))
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in cache.glob("*.whl"):
        if not wheel.name.startswith("impasto-"):
            place(wheel, dest / wheel.name)
    shutil.copy2(impasto_wheel, dest / impasto_wheel.name)
    return dest
