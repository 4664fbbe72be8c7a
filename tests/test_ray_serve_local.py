"""`impasto serve PATH --ray`: a local Ray instance started by the command, the package
served through Ray Serve's proxy, and everything stopped by Ctrl-C. Its own module, so
that the Ray instance of tests/test_ray.py is gone before this one starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from conftest import PACKAGES, free_port
from jobs_fixtures import until
from ray_fixtures import require_ray

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_serve_ray_serves_until_ctrl_c(tmp_path):
    require_ray()
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    command = ["serve", str(PACKAGES / "ray_gate"), "--ray", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "impasto.cli.main", *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answered() -> httpx.Response | None:
        try:
            r = httpx.post(f"{url}/work", json={"steps": 1}, timeout=10)
        except httpx.TransportError:
            return None
        return r if r.status_code == 200 else None

    try:
        response = until(answered, timeout=180, every=0.5)
        assert response.json()["steps"] == 1 and response.headers["X-Impasto-Replica"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health/ready", timeout=5)
    assert "stopping gate and the local Ray instance" in (tmp_path / "serve.log").read_text()
