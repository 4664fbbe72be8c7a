"""A local Ray instance for the Ray Serve tests, and `impasto deploy ray` run as users run it.

One Ray instance per test module (127.0.0.1, 4 logical CPUs whatever the machine has, a
small object store), started by the test process itself so that ``ray.shutdown()`` takes
every process it started down with it. Applications are deployed with the real command in a
subprocess that joins the instance by its GCS address, and requests go over HTTP through
Ray Serve's proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import PACKAGES, REPO, free_port

TINY_SD = REPO / "examples" / "tiny-sd"

IN_CI = bool(os.environ.get("IMPASTO_CI"))


def require_ray() -> Any:
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("Ray Serve is not installed: .ci/run installs impasto[ray]")
        pytest.skip("Ray Serve is not installed: pip install 'impasto[ray]'")
    return ray


class RayInstance:
    def __init__(self, address: str, http_port: int, temp_dir: str) -> None:
        self.address = address
        self.http_port = http_port
        self.temp_dir = temp_dir

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{prefix}"

    def impasto(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``impasto ARGS --address <this instance>``, as a user runs it."""
        command = [sys.executable, "-m", "impasto.cli.main", *args, "--address", self.address]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
        )

    def deploy(self, path: Path, name: str, *flags: str, env: dict[str, str] | None = None) -> str:
        """Deploy ``path`` as application ``name`` at ``/name``; its base URL."""
        result = self.impasto(
            "deploy",
            "ray",
            str(path),
            "--name",
            name,
            "--route-prefix",
            f"/{name}",
            "--http-port",
            str(self.http_port),
            *flags,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return self.url(f"/{name}")

    def replicas(self, app: str, deployment: str) -> dict[str, int]:
        """A deployment's replicas by state, asked in process (cheaper than the CLI)."""
        from ray import serve

        status = serve.status().applications[app].deployments[deployment]
        return {str(getattr(k, "value", k)): v for k, v in status.replica_states.items()}

    def deploy_here(self, paths: list[Path], name: str) -> str:
        """Deploy as the command does, from this process (the driver already joined the
        instance: no second Python and Ray client to start); the application's URL."""
        from impasto.ray.deploy import DeployOptions, deploy

        deploy(paths, DeployOptions(), name=name, route_prefix=f"/{name}", http_port=self.http_port)
        return self.url(f"/{name}")

    def status(self, name: str) -> dict[str, Any]:
        result = self.impasto("deploy", "ray", "--status", "--name", name)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)[name]


def start_ray() -> Iterator[RayInstance]:
    """A local Ray instance with Serve's proxy on a free port (a module fixture's body)."""
    ray = require_ray()
    from ray import serve

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths
    # replicas inherit the instance's environment: the tiny weights are built in this home
    home = os.environ.get("IMPASTO_HOME")
    os.environ["IMPASTO_HOME"] = str(Path(temp_dir) / "home")
    ray.init(
        num_cpus=4,
        object_store_memory=80 * 1024 * 1024,
        include_dashboard=False,
        namespace="serve",
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        log_to_driver=False,
        logging_level="WARNING",
    )
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    address = ray.get_runtime_context().gcs_address
    try:
        yield RayInstance(address, http_port, temp_dir)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if home is None:
            os.environ.pop("IMPASTO_HOME", None)
        else:
            os.environ["IMPASTO_HOME"] = home


def package_copy(tmp: Path, source: str = "ray_gate", **config: Any) -> Path:
    """A copy of a test package with ``config`` merged over its config.yaml's top level."""
    folder = tmp / source
    shutil.copytree(PACKAGES / source, folder)
    data = yaml.safe_load((folder / "config.yaml").read_text())
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    return folder


def retrying(send: Any, timeout: float = 90) -> httpx.Response:
    """``send()`` again while it answers 503 (a replica being replaced), as clients do:
    after a short pause, for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = send()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)
