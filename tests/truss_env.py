"""Truss's own model server, for tests that compare impasto's answers with it.

The server needs ``truss`` and its server's requirements, which impasto never depends on:
they live in a venv of their own, built once per machine under
``~/.cache/impasto-tests/truss-<version>`` (``IMPASTO_TEST_CACHE`` moves the cache) and
reused by every later run. Outside CI a machine that cannot build it skips the
comparisons; in CI (``IMPASTO_CI`` set, as ``.ci/run`` does) that is a failure.

Models that need heavy libraries (torch, diffusers) import them from the test's own
environment, searched after the venv's own packages (``TRUSS_TEST_FALLBACK_PATH``): the
same versions, without a second 1.5 GB install.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import httpx

from conftest import free_port

TRUSS_VERSION = "0.18.35"
REFERENCE = Path(__file__).parent / "truss_reference.py"
IN_CI = bool(os.environ.get("IMPASTO_CI"))


class Unavailable(Exception):
    """Truss's server cannot run on this machine (the venv could not be built)."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "impasto-tests"
    return Path(os.environ.get("IMPASTO_TEST_CACHE", default)).expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per machine (test runs of several checkouts share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@cache
def truss_python() -> Path:
    """The Python of the Truss venv, built on first use (a few minutes, once per machine);
    raises :class:`Unavailable` with the reason when it cannot be built."""
    root = cache_dir() / f"truss-{TRUSS_VERSION}"
    python = root / "bin" / "python"
    done = root / ".complete"
    log = cache_dir() / f"truss-{TRUSS_VERSION}.log"
    with _locked(cache_dir() / f"truss-{TRUSS_VERSION}.lock"):
        if done.exists():
            return python
        shutil.rmtree(root, ignore_errors=True)
        with log.open("w") as out:
            try:
                _run([sys.executable, "-m", "venv", str(root)], out)
                _run([str(python), "-m", "pip", "install", f"truss=={TRUSS_VERSION}"], out)
                server = _server_template(python)
                reqs = [
                    "-r",
                    str(server / "requirements.txt"),
                    "-c",
                    str(server / "constraints.txt"),
                ]
                _run([str(python), "-m", "pip", "install", *reqs], out)
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(root, ignore_errors=True)
                tail = log.read_text(errors="replace")[-2000:]
                raise Unavailable(f"cannot build the Truss venv ({exc}); see {log}:\n{tail}")
        done.write_text(TRUSS_VERSION)
    return python


def _run(cmd: list[str], out) -> None:
    out.write(f"$ {' '.join(cmd)}\n")
    out.flush()
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800, env=env)


def _server_template(python: Path) -> Path:
    code = "import truss, pathlib; print(pathlib.Path(truss.__file__).parent)"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip()) / "templates" / "server"


def own_site_packages() -> str:
    """This environment's site-packages (for models importing torch or diffusers)."""
    return os.pathsep.join(site.getsitepackages())


class TrussServer:
    """Truss's model server serving one package on a loopback port (see
    ``tests/truss_reference.py``)."""

    def __init__(
        self, python: Path, package: Path, workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "truss-server.log"
        self._log = self.log_path.open("wb")
        full_env = {
            **os.environ,
            "HOME": str(workdir),  # where a failed load leaves its marker file
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        full_env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [str(python), str(REFERENCE), str(package), str(workdir / "container"), str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_live(self, timeout: float = 120) -> TrussServer:
        return self._wait("/", timeout)

    def wait_ready(self, timeout: float = 120) -> TrussServer:
        return self._wait("/v1/models/model/loaded", timeout)

    def _wait(self, path: str, timeout: float) -> TrussServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Truss's server exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.client.get(path).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Truss's server: {path} not 200 after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
