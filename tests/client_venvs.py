"""Virtualenvs holding other projects' clients, built once per machine and reused.

A client such as ``octoai-sdk`` pins old libraries that must never enter impasto's own
environment, so it gets its own venv under ``~/.cache/impasto-tests/<name>``. Outside CI a
venv that cannot be built (no package index, say) skips the tests that need it; in CI
(``IMPASTO_CI=1``) it fails them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("IMPASTO_TEST_CACHE") or Path.home() / ".cache" / "impasto-tests")


def client_venv(name: str, requirements: list[str]) -> Path:
    """The python of a venv named ``name`` with ``requirements`` installed (built on first
    use, under a lock so concurrent test runs build it once)."""
    folder = CACHE / name
    python = folder / "bin" / "python"
    done = folder / ".complete"
    if done.exists():
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return python
        shutil.rmtree(folder, ignore_errors=True)  # a build that stopped half-way
        try:
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *requirements],
                check=True,
                timeout=900,
                capture_output=True,
                text=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            detail = getattr(exc, "stderr", "") or str(exc)
            message = f"cannot build the {name} client venv: {detail[-2000:]}"
            if os.environ.get("IMPASTO_CI"):
                pytest.fail(message)
            pytest.skip(message)
        done.write_text(" ".join(requirements))
    return python
