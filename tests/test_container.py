"""A real image: `impasto build examples/tiny-sd --engine podman` with a wheelhouse, run with
no network at all (the weights must come from the image) and asked for an image from inside
the container, then run with a published loopback port and asked over HTTP by the test.

Then a Truss package (echo, with an external package dir) built and asked the same way.

Run alone with `pytest -m container`. The base image (debootstrap) and the wheelhouse (`pip
download`) are made once per machine; podman's layer cache keeps the venv stage, so a
rebuild after a code change only redoes impasto's layer, the package and `impasto setup`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from build_helpers import EXAMPLES, TRUSS_SHARED, impasto_wheelhouse
from conftest import free_port
from container_helpers import ensure_base_image, podman, wheelhouse

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]

TAG = "localhost/impasto-tests/tiny-sd:ci"
TRUSS_TAG = "localhost/impasto-tests/echo:ci"
REQUIREMENTS = ["torch==2.13.0"]  # the local CPU wheel; the rest come from impasto's extras

PROBE = """
import json, sys, urllib.error, urllib.request
url = "http://127.0.0.1:8080" + sys.argv[1]
body = sys.argv[2].encode() if len(sys.argv) > 2 else None
accept = sys.argv[3] if len(sys.argv) > 3 else "image/png"
req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                       "Accept": accept})
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        data = r.read()
        found = {"status": r.status, "type": r.headers["Content-Type"], "size": len(data),
                 "png": data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"}
        if accept == "application/json":
            found["json"] = json.loads(data)
        print(json.dumps(found))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read()[:300].decode("utf-8", "replace")}))
except OSError as e:
    print(json.dumps({"status": 0, "error": str(e)}))
"""


def inside(container: str, path: str, body: dict | None = None, accept: str = "") -> dict:
    """A request made by Python inside the container, to the server inside it."""
    args = ["exec", container, "python3", "-c", PROBE, path]
    if body is not None:
        args.append(json.dumps(body))
        if accept:
            args.append(accept)
    done = podman(*args, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_until(check, timeout: float, what: str, logs) -> float:
    """Poll ``check`` each second; the seconds it took to pass."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if check():
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout} s; container log:\n{logs()}")


def build_image(package: Path, tag: str, work: Path, home: Path) -> str:
    """``impasto build PACKAGE --engine podman`` with the per-machine base image and
    wheelhouse (timed)."""
    base = ensure_base_image()
    wheels = wheelhouse(
        impasto_wheelhouse() / "impasto-0.1.0-py3-none-any.whl", REQUIREMENTS, work / "wheelhouse"
    )
    cmd = [sys.executable, "-m", "impasto.cli.main", "build", str(package)]
    cmd += ["--out", str(work / "context"), "--wheelhouse", str(wheels), "--engine", "podman"]
    cmd += ["--base-image", base, "--tag", tag]
    started = time.monotonic()
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=2000,
        env={**os.environ, "IMPASTO_HOME": str(home)},
    )
    assert done.returncode == 0, f"{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    print(f"\n{tag} built in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """The tiny-sd image, its weights from this machine's model store."""
    from impasto.diffusers import build_tiny_sd
    from impasto.store import ModelStore

    work = tmp_path_factory.mktemp("container")
    home = work / "home"
    ModelStore(home).import_folder("tiny-sd:ci", build_tiny_sd(work / "weights", seed=0))
    # Never `podman image prune` after it: the venv stage's image is untagged and no parent
    # of the final image, so a prune drops the layer cache that makes the next build take
    # seconds. What a code change adds (impasto's layer, the package, setup) is a few MB.
    return build_image(EXAMPLES / "tiny-sd", TAG, work, home)


@pytest.fixture(scope="module")
def truss_image(image, tmp_path_factory) -> str:
    """echo, a Truss package with ``external_package_dirs: [../shared_lib]`` (after the
    tiny-sd image: its venv stage reuses the wheelhouse layer)."""
    work = tmp_path_factory.mktemp("truss")
    return build_image(TRUSS_SHARED, TRUSS_TAG, work, work / "home")


class Container:
    port: int | None = None

    def __init__(self, *args: str) -> None:
        self.id = podman("run", "-d", *args, timeout=120).stdout.strip()

    def logs(self) -> str:
        done = podman("logs", self.id, check=False)
        return done.stdout + done.stderr

    def stop(self, grace: int = 40) -> int:
        """SIGTERM, then the exit code (SIGKILL only after ``grace`` seconds)."""
        podman("stop", "-t", str(grace), self.id, timeout=grace + 60, check=False)
        code = podman("inspect", self.id, "--format", "{{.State.ExitCode}}", check=False)
        return int(code.stdout.strip() or -1)

    def remove(self) -> None:
        podman("rm", "-f", self.id, check=False)


def test_image_config(image):
    (info,) = json.loads(podman("image", "inspect", image).stdout)
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] == "SIGTERM"
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["/usr/local/bin/impasto-entrypoint"]
    health = info.get("Healthcheck") or config.get("Healthcheck")  # podman: top level
    assert "/health/ready" in " ".join(health["Test"])
    assert "HF_HUB_OFFLINE=1" in config["Env"] and "IMPASTO_HOST=0.0.0.0" in config["Env"]


@pytest.fixture(scope="module")
def boxes(image, truss_image):
    """The three containers the tests ask, started together so their loads overlap: tiny-sd
    with no network, tiny-sd on a published loopback port (started as SageMaker starts
    it, ``IMAGE serve``) and the Truss package with no network."""
    port = free_port()
    started = {
        "offline": Container("--network=none", image),
        "published": Container("-p", f"127.0.0.1:{port}:8080", image, "serve"),
        "truss": Container("--network=none", truss_image),
    }
    started["published"].port = port
    yield started
    for box in started.values():
        box.stop(5)
        box.remove()


def test_runs_with_no_network_and_answers_inside(boxes):
    box = boxes["offline"]
    took = wait_until(
        lambda: inside(box.id, "/health/ready")["status"] == 200, 300, "not ready", box.logs
    )
    print(f"\nready {took:.0f} s after the test began waiting (no network)")
    reply = inside(box.id, "/text2img", {"prompt": "a red cat", "seed": 1})
    assert reply == {"status": 200, "type": "image/png", "size": reply["size"], "png": True}
    assert box.stop() == 0  # SIGTERM: drained, then a clean exit


def test_runs_with_a_published_port_and_sagemakers_serve_argument(boxes):
    box = boxes["published"]
    with httpx.Client(base_url=f"http://127.0.0.1:{box.port}", timeout=120) as client:

        def ready() -> bool:
            try:
                return client.get("/health/ready").status_code == 200
            except httpx.TransportError:
                return False

        took = wait_until(ready, 300, "not ready over the published port", box.logs)
        print(f"\nready {took:.0f} s after the test began waiting (published port)")
        reply = client.post(
            "/text2img", json={"prompt": "a cat", "seed": 2}, headers={"Accept": "image/png"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get("/ping").status_code == 200
        toolkit = client.post(
            "/invocations",
            json={"inputs": "a fox", "parameters": {"num_inference_steps": 2}},
            headers={"Accept": "image/png"},
        )
        assert toolkit.status_code == 200 and toolkit.content[:4] == b"\x89PNG"


def test_context_layers_keep_weights_apart_from_code(image, tmp_path: Path):
    """The context's Dockerfile copies the store before the package (checked in the image's
    history: the weights layer comes first)."""
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    lines = history.splitlines()[::-1]  # oldest first
    store = next(i for i, line in enumerate(lines) if "/var/lib/impasto/models/" in line)
    package = next(i for i, line in enumerate(lines) if "/app/" in line and "COPY" in line)
    assert store < package


def test_a_truss_package_image_serves_with_its_shared_code(boxes):
    """No network: the Truss-shaped model answers its own route, importing from its bundled
    packages/ and from ../shared_lib (copied to /shared_lib), with config.yaml's
    environment."""
    box = boxes["truss"]
    wait_until(lambda: inside(box.id, "/health/ready")["status"] == 200, 300, "not ready", box.logs)
    reply = inside(box.id, "/v1/models/model:predict", {"text": "hi"}, "application/json")
    assert reply["status"] == 200, reply
    out = reply["json"]
    assert (out["shout"], out["suffix"]) == ("HI", "(from an external package dir)")
    assert out["env_var"] == "loud" and out["greeting"]
    assert out["stages"] == ["preprocess", "predict", "postprocess"]
    assert box.stop() == 0
