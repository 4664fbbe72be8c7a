"""Shared fixtures: real servers on free loopback ports, talked to over HTTP."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

PACKAGES = Path(__file__).parent / "packages"
REPO = Path(__file__).parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite's own impasto home (model store, job store), never the user's ~/.impasto; tests
# that need a home of their own still set IMPASTO_HOME for their server
_HOME = tempfile.mkdtemp(prefix="impasto-tests-home-")
os.environ.setdefault("IMPASTO_HOME", _HOME)
atexit.register(shutil.rmtree, _HOME, True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving an app in a background thread of the test process."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        wait_ready(self.client, timeout)

    @property
    def loop(self):
        """The server's event loop (to run a coroutine there from the test)."""
        return self.server.servers[0].get_loop()

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ProcessServer:
    """`impasto serve` in a subprocess, as a user runs it."""

    def __init__(
        self, path: Path | None, *args: str, env: dict[str, str | None] | None = None, log: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        # The playground is off unless a test asks (None unsets a variable): Gradio is heavy.
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "IMPASTO_UI": "0", **(env or {})}
        full_env = {k: v for k, v in full_env.items() if v is not None}
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "impasto.cli.main",
                "serve",
                *([str(path)] if path is not None else []),
                "--port",
                str(self.port),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_live(self, timeout: float = 60) -> ProcessServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.client.get("/health/live").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not live after {timeout}s:\n{self.logs()}")

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.client, timeout)

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wait_ready(client: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = client.get("/health/ready")
            if last.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"not ready after {timeout}s: {last and last.text}")


@pytest.fixture
def serve_thread() -> Iterator:
    """Start packages (folders or loaded Package objects) in-process; stopped after the test."""
    from impasto import build_app

    started: list[ThreadServer] = []

    def start(package, ready: bool = True) -> ThreadServer:
        server = ThreadServer(build_app(package)).start()
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def serve_module() -> Iterator:
    """Like serve_thread, for servers a whole test module shares (generous timeouts: the
    tiny pipelines run on a shared CPU)."""
    from impasto import build_app

    started: list[ThreadServer] = []

    def start(package, ready: bool = True) -> ThreadServer:
        server = ThreadServer(build_app(package)).start()
        server.client.timeout = 300
        started.append(server)
        if ready:
            server.wait_ready(120)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline saved with save_pretrained."""
    from impasto.diffusers import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator:
    """Start `impasto serve` subprocesses; stopped after the test."""
    started: list[ProcessServer] = []

    def start(
        path: Path | None, *args: str, env: dict[str, str] | None = None, live: bool = True
    ) -> ProcessServer:
        server = ProcessServer(path, *args, env=env, log=tmp_path / f"server{len(started)}.log")
        started.append(server)
        if live:
            server.wait_live()
        return server

    yield start
    for server in started:
        server.stop()


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, object]]:
    """``(event, data)`` pairs of a server-sent event stream, ``data`` parsed as JSON."""
    event, data = None, []
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event:
            yield event, json.loads("\n".join(data))
            event, data = None, []


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent); ``labels`` must
    all match, other labels of the sample are ignored."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


PROTOCOLS_YAML = """\
models:
  - name: sd
    path: {repo}/examples/tiny-sd
    default: true
    overrides:  # per-model settings over the package's config.yaml
      diffusers: {{default_steps: 2, limits: {{max_images: 3}}}}
  - name: painter
    path: {packages}/painter
  - name: typed
    path: {packages}/typed
"""


@pytest.fixture(scope="session")
def three_models(tmp_path_factory) -> Iterator[ThreadServer]:
    """One server for every protocol test: the tiny diffusers example (``sd``, the
    default), a custom impasto package (``painter``) and a Truss-shaped one (``typed``)."""
    from impasto import build_app
    from impasto.models_file import load_models_file

    root = tmp_path_factory.mktemp("three-models")
    spec = root / "models.yaml"
    spec.write_text(PROTOCOLS_YAML.format(repo=REPO, packages=PACKAGES))
    home = os.environ.get("IMPASTO_HOME")
    os.environ["IMPASTO_HOME"] = str(root / "home")  # the tiny weights are built there
    try:
        server = ThreadServer(build_app(load_models_file(spec))).start()
        server.home = root / "home"  # type: ignore[attr-defined]  # tiny-sd's weights
        server.client.timeout = 120
        server.wait_ready(300)
    finally:
        if home is None:
            os.environ.pop("IMPASTO_HOME", None)
        else:
            os.environ["IMPASTO_HOME"] = home
    yield server
    server.stop()


# The job tests' shared fixtures: PostgreSQL, S3 on loopback, a webhook receiver.
from jobs_fixtures import moto_s3, postgres_admin, receiver  # noqa: E402, F401
