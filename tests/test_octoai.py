"""OctoAI-style services served unchanged (octoai.md §9): no octoai-sdk in impasto's
environment; the SDK's own ``Client`` (in a venv of its own) drives them over HTTP."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from client_venvs import client_venv
from conftest import ProcessServer
from impasto import load_package
from impasto.errors import PackageError
from impasto.octoai import SERVICE_CLASS_ENV
from octoai_services import (
    DIFFUSION,
    HEALTH_THEN_INFER,
    PLAIN,
    SEVERAL,
    SLOW,
    TEST_REQUEST,
    service_folder,
)

pytestmark = pytest.mark.timeout(600)

OCTOAI_SDK = "octoai-sdk==0.3.0"  # the last releases with Text; what the seed was written for


@pytest.fixture(scope="module")
def sdk_python():
    return client_venv("octoai-sdk-0.3.0", [OCTOAI_SDK])


@pytest.fixture(scope="module")
def diffusion(tiny_sd, tmp_path_factory):
    """The seed-shaped service under `impasto serve`, as a user runs it."""
    root = tmp_path_factory.mktemp("diffusion")
    log = root / "calls.log"
    folder = service_folder(root / "service", DIFFUSION, weights=str(tiny_sd), log=str(log))
    (folder / "octoai.yaml").write_text(
        "endpoint_config:\n  name: diffusion-octo\n  registry: {host: me, path: diffusion-octo, tag: latest}\n"
    )
    (folder / "test_request.py").write_text(TEST_REQUEST)
    server = ProcessServer(folder, env={"OCTOAI_REPLICA_NAME": "replica-7"}, log=root / "serve.log")
    server.client.timeout = 300
    server.wait_live(300)
    server.wait_ready(300)
    server.calls = log
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory, serve_module):
    return serve_module(service_folder(tmp_path_factory.mktemp("plain"), PLAIN))


def jpeg_of(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


# -- §9.1, 9.3, 9.4, 9.12: the seed's shape under `impasto serve`, driven by its own client ------


def test_no_sdk_is_installed_here():
    assert importlib.util.find_spec("octoai") is None


def test_happy_path_is_byte_compatible(diffusion):
    r = diffusion.client.post("/infer", json={"prompt": {"text": "Robot Dinosaur"}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["octoai_replica_name"] == "replica-7"
    body = r.json()
    assert list(body) == ["output", "analytics"]
    assert list(body["output"]) == ["image_b64"]
    assert set(body["analytics"]) == {"inference_time_ms", "performance_time_ms"}
    assert all(isinstance(v, float) for v in body["analytics"].values())
    assert b'", "' not in r.content and b": " not in r.content  # compact JSON
    img = jpeg_of(body["output"]["image_b64"])
    assert (img.format, img.size) == ("JPEG", (64, 64))
    r = diffusion.client.post("/infer", json={"prompt": {"text": "x"}, "steps": 3})
    assert r.status_code == 200  # extra top-level keys are ignored


def test_setup_runs_once_before_the_first_infer(diffusion):
    diffusion.client.post("/infer", json={"prompt": {"text": "a"}})
    lines = diffusion.calls.read_text().split()
    assert lines[0] == "setup"
    assert lines.count("setup") == 1
    assert lines.count("infer") >= 1


def test_the_seeds_test_request_py_runs_unchanged(diffusion, sdk_python, tmp_path):
    done = subprocess.run(
        [str(sdk_python), "test_request.py", "--endpoint", diffusion.url],
        cwd=diffusion.calls.parent / "service",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert set(printed) == {"output", "analytics"}
    # | jq -r ".output.image_b64" | base64 --decode > result.jpg
    (tmp_path / "result.jpg").write_bytes(base64.b64decode(printed["output"]["image_b64"]))
    assert Image.open(tmp_path / "result.jpg").format == "JPEG"


def test_routes_ports_and_methods(diffusion):
    r = diffusion.client.get("/infer")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert diffusion.client.get("/predict-me").status_code == 404
    assert diffusion.client.get("/healthcheck").json() == {"status": "READY"}
    assert diffusion.client.get("/").json() == {"docs": "/docs", "openapi": "/openapi.json"}


def test_openapi_describes_infer_input_and_output(diffusion):
    doc = diffusion.client.get("/openapi.json").json()
    infer = doc["paths"]["/infer"]["post"]
    ref = infer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = doc["components"]["schemas"]
    input_schema = schemas[ref.rsplit("/", 1)[1]]
    assert list(input_schema["properties"]) == ["prompt"]
    assert schemas["Text"]["properties"]["text"]["type"] == "string"
    out_ref = infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[out_ref.rsplit("/", 1)[1]]["properties"]) == {"output", "analytics"}
    assert "/healthcheck" in doc["paths"]


GATED_INFER = """
import time
from pathlib import Path

from octoai.service import Service
from octoai.types import Text

HERE = Path(__file__).parent


class GatedService(Service):
    def infer(self, prompt: Text) -> Text:
        (HERE / "started").write_text("1")
        while not (HERE / "release").exists():
            time.sleep(0.01)
        return prompt
"""


def test_sigterm_drains_and_exits_zero(tmp_path):
    folder = service_folder(tmp_path / "svc", GATED_INFER)
    server = ProcessServer(folder, log=tmp_path / "serve.log")
    server.wait_live(300)
    server.wait_ready(300)
    result = {}
    body = {"prompt": {"text": "drained"}}
    worker = threading.Thread(
        target=lambda: result.update(r=server.client.post("/infer", json=body))
    )
    worker.start()
    while not (folder / "started").exists():
        worker.join(0.01)
    server.proc.send_signal(signal.SIGTERM)  # while the request runs
    (folder / "release").write_text("1")
    worker.join(60)
    assert result["r"].status_code == 200
    assert result["r"].json()["output"] == {"text": "drained"}
    assert server.proc.wait(60) == 0
    server.stop()


# -- §9.5, 9.8, 9.9: types, bad input, model errors, one call at a time ------------------------


def test_plain_annotations_defaults_and_text_output(plain):
    r = plain.client.post(
        "/infer", json={"prompt": "fox", "tags": ["a", "b"], "text": {"text": "hi"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["output"] == {"text": "fox 3 1.5 a,b hi!"}
    r = plain.client.post("/infer", json={"prompt": "fox", "steps": 9, "scale": 2})
    assert r.json()["output"] == {"text": "fox 9 2.0 "}


def test_image_and_audio_travel_as_base64_both_ways(plain):
    buf = io.BytesIO()
    src = Image.new("RGB", (10, 6), (0, 0, 0))
    src.putpixel((0, 0), (255, 0, 0))
    src.save(buf, format="PNG")
    wav = io.BytesIO()
    import wave

    with wave.open(wav, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.arange(100, dtype="<i2").tobytes())
    body = {
        "prompt": "media",
        "image": {"image_b64": base64.b64encode(buf.getvalue()).decode()},
        "audio": {"audio_b64": base64.b64encode(wav.getvalue()).decode()},
    }
    r = plain.client.post("/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    assert out["size"] == [10, 6]
    flipped = jpeg_of(out["flipped"]["image_b64"])
    assert flipped.getpixel((9, 0)) == (255, 0, 0)  # mirrored
    with wave.open(io.BytesIO(base64.b64decode(out["audio"]["audio_b64"]))) as back:
        assert back.getframerate() == 8000
        assert back.getnframes() == 100


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"prompt": {"text": ', ["body"]),
        (b"", ["body", "prompt"]),
        (b"[1, 2]", ["body"]),
        (b'{"prompt": {"text": 5}}', ["body", "prompt"]),
        (b'{"text": "x"}', ["body", "prompt"]),
        (b'{"prompt": "x", "steps": "many"}', ["body", "steps"]),
        (b'{"prompt": "x", "text": {}}', ["body", "text", "text"]),
        (b'{"prompt": "x", "text": {"txt": "x"}}', ["body", "text", "text"]),
        (b'{"prompt": "x", "text": "x"}', ["body", "text"]),
        (
            b'{"prompt": "x", "text": null, "image": {"image_b64": "not base64!"}}',
            ["body", "image"],
        ),
    ],
)
def test_bad_input_is_422_in_fastapis_shape(plain, body, loc):
    r = plain.client.post("/infer", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"][: len(loc)] == loc
    assert detail[0]["msg"] and detail[0]["type"]


def test_seed_shaped_bad_input_is_422_too(diffusion):
    for body in (
        {"prompt": "x"},
        {"prompt": None},
        {"prompt": {}},
        {"prompt": {"txt": "x"}},
        {"text": "x"},
    ):
        r = diffusion.client.post("/infer", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"][:2] == ["body", "prompt"]


def test_an_infer_error_is_500_and_the_server_goes_on(plain):
    r = plain.client.post("/infer", json={"prompt": "boom"})
    assert r.status_code == 500
    assert "the service failed" in r.json()["detail"]
    assert plain.client.post("/infer", json={"prompt": "ok"}).status_code == 200


def test_one_infer_runs_at_a_time(plain):
    threads = [
        threading.Thread(
            target=plain.client.post,
            args=("/infer",),
            kwargs={"json": {"prompt": "x", "wait": 0.2}},
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert plain.client.post("/infer", json={"prompt": "most"}).json()["output"] == {"text": "1"}


# -- §9.6, 9.7: health and /infer while setup() runs --------------------------------------------


def test_health_while_loading_and_infer_held_until_setup_is_done(
    tmp_path, serve_module, sdk_python
):
    folder = service_folder(tmp_path / "slow", SLOW)
    server = serve_module(folder, ready=False)
    r = server.client.get("/healthcheck")
    assert r.status_code == 503
    assert r.json() == {"status": "SETUP_SERVICE"}
    assert server.client.get("/").status_code == 200  # what the FairCompute Space polls
    held = {}
    worker = threading.Thread(
        target=lambda: held.update(
            r=server.client.post("/infer", json={"prompt": {"text": "early"}})
        )
    )
    worker.start()
    client = subprocess.Popen(
        [str(sdk_python), "-c", HEALTH_THEN_INFER, server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warned = False
        for line in client.stderr:  # the SDK client warns when its first health check is a 5xx
            if "may take several minutes" in line:
                warned = True
                break
        assert warned
        assert worker.is_alive()  # the early /infer is still waiting for setup()
        (folder / "gate").write_text("1")
        out, err = client.communicate(timeout=120)
    finally:
        (folder / "gate").write_text("1")
        if client.poll() is None:
            client.kill()
    worker.join(60)
    assert held["r"].status_code == 200
    assert held["r"].json()["output"] == {"text": "echo: early"}
    assert client.returncode == 0, err
    status, reply = out.strip().splitlines()
    assert status == "200"
    assert json.loads(reply)["output"] == {"text": "echo: late"}
    assert server.client.get("/healthcheck").json() == {"status": "READY"}


def test_infer_waits_only_as_long_as_load_wait_s(tmp_path, serve_module):
    folder = service_folder(tmp_path / "slow", SLOW)
    (folder / "config.yaml").write_text("runtime:\n  load_wait_s: 0.3\n")
    server = serve_module(folder, ready=False)
    try:
        r = server.client.post("/infer", json={"prompt": {"text": "early"}})
        assert r.status_code == 503
        assert r.json() == {"status": "SETUP_SERVICE"}
    finally:
        (folder / "gate").write_text("1")


def test_a_failing_setup_never_becomes_healthy(tmp_path, serve_module):
    folder = service_folder(tmp_path / "slow", SLOW)
    (folder / "fail").write_text("1")
    (folder / "gate").write_text("1")
    server = serve_module(folder, ready=False)
    runner = server.server.config.app.state.runner
    for _ in range(3000):
        if runner.state == "failed":
            break
        threading.Event().wait(0.01)
    r = server.client.get("/healthcheck")
    assert (r.status_code, r.json()) == (503, {"status": "SETUP_FAILED"})
    assert server.client.post("/infer", json={"prompt": {"text": "x"}}).status_code == 503


def test_a_failing_setup_stops_impasto_serve(tmp_path):
    folder = service_folder(tmp_path / "slow", SLOW)
    (folder / "fail").write_text("1")
    (folder / "gate").write_text("1")
    server = ProcessServer(folder, log=tmp_path / "serve.log")
    assert server.proc.wait(120) == 6
    assert "setup failed on purpose" in server.logs()
    server.stop()


# -- §9.1, discovery and the SDK modules -----------------------------------------------------------


def test_discovery_picks_the_alphabetically_last_direct_subclass(tmp_path, monkeypatch):
    folder = service_folder(tmp_path / "several", SEVERAL)
    package = load_package(folder)
    assert package.kind == "octoai"
    assert package.spec.cls.service_class.__name__ == "Beta"
    monkeypatch.setenv(SERVICE_CLASS_ENV, "Alpha")
    assert load_package(folder).spec.cls.service_class.__name__ == "Alpha"


def test_start_up_errors_name_the_problem(tmp_path):
    none = service_folder(
        tmp_path / "none", "import octoai.service\n\n\nclass NotAService:\n    pass\n"
    )
    with pytest.raises(PackageError, match=r"no classes extending base 'octoai\.service\.Service'"):
        load_package(none)
    untyped = service_folder(
        tmp_path / "untyped",
        "from octoai.service import Service\n\n\nclass S(Service):\n    def infer(self, prompt):\n        return prompt\n",
    )
    with pytest.raises(PackageError, match="requires type annotations for args"):
        load_package(untyped)


SCOPE_CHECK = """
import json
import sys
from starlette.testclient import TestClient
from impasto import build_app, load_package

def octoai():
    return sorted(n for n in sys.modules if n.split(".")[0] == "octoai")

before = octoai()
package = load_package(sys.argv[1])
after_load = octoai()
with TestClient(build_app(package)) as client:
    while client.get("/healthcheck").status_code != 200:
        pass
    serving = sys.modules["octoai.types"].__name__
    answer = client.post("/infer", json={"prompt": "x"}).json()["output"]
print(json.dumps([before, after_load, serving, answer, octoai()]))
"""


def test_sdk_modules_are_registered_only_while_loading_and_serving(tmp_path):
    folder = service_folder(tmp_path / "svc", PLAIN)
    done = subprocess.run(
        [sys.executable, "-c", SCOPE_CHECK, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    before, after_load, serving, answer, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert (before, after_load, after) == ([], [], [])
    assert serving == "impasto.octoai.compat_types"
    assert answer == {"text": "x 3 1.5 "}


TAKE_OVER = """
import json
import sys

import octoai  # the distribution installed here, already imported by the user's process
from impasto import load_package

package = load_package(sys.argv[1])
kept = sys.modules["octoai"] is octoai
print(json.dumps([package.kind, kept, "octoai.service" in sys.modules]))
"""


@pytest.mark.parametrize(
    "files",
    [
        {"__init__.py": "", "client.py": "class OctoAI:\n    pass\n"},  # octoai 1.x
        {  # octoai-sdk 0.5 and later: no Text
            "__init__.py": "",
            "service.py": "class Service:\n    pass\n",
            "types.py": "class Media:\n    pass\n",
        },
    ],
    ids=["octoai-1.x", "octoai-sdk-0.5"],
)
def test_compat_modules_take_over_from_an_incompatible_octoai(tmp_path, files):
    site = tmp_path / "site"
    (site / "octoai").mkdir(parents=True)
    for name, text in files.items():
        (site / "octoai" / name).write_text(text)
    folder = service_folder(tmp_path / "svc", PLAIN)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", TAKE_OVER, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    kind, kept, leftover = json.loads(done.stdout.strip().splitlines()[-1])
    assert kind == "octoai"  # the service imported Text and Image from impasto's modules
    assert kept  # and the installed package is back in place afterwards
    assert not leftover


def test_an_installed_compatible_sdk_is_used_as_it_is(tmp_path):
    site = tmp_path / "site"  # a stand-in for octoai-sdk 0.4: Service, and Text in types
    (site / "octoai").mkdir(parents=True)
    (site / "octoai" / "__init__.py").write_text("")
    (site / "octoai" / "service.py").write_text(
        "class Service:\n    def setup(self):\n        pass\n"
    )
    (site / "octoai" / "types.py").write_text(
        "from pydantic import BaseModel\n\n\nclass Text(BaseModel):\n    text: str\n"
    )
    folder = service_folder(
        tmp_path / "svc",
        "from octoai.service import Service\nfrom octoai.types import Text\n\n\n"
        "class S(Service):\n    def infer(self, prompt: Text) -> Text:\n        return prompt\n",
    )
    check = (
        "import sys\nfrom impasto import load_package\n"
        "cls = load_package(sys.argv[1]).spec.cls.service_class\n"
        "print(cls.__bases__[0].__module__, sys.modules['octoai.types'].__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", check, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    base, types_file = done.stdout.split()
    assert base == "octoai.service"
    assert types_file.startswith(str(site))


# -- §9.11: build-time setup -----------------------------------------------------------------------


def test_impasto_setup_runs_setup_once_and_exits(tmp_path):
    folder = service_folder(tmp_path / "several", SEVERAL)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "impasto.cli.main",
            "setup",
            str(folder),
            "--service-class",
            "Alpha",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert (folder / "setups").read_text() == "alpha\n"
    failing = service_folder(tmp_path / "slow", SLOW)
    (failing / "fail").write_text("1")
    (failing / "gate").write_text("1")
    done = subprocess.run(
        [sys.executable, "-m", "impasto.cli.main", "setup", str(failing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 6
    assert "setup failed on purpose" in done.stderr


# -- the compat types themselves (§4.1) ------------------------------------------------------------


def test_compat_types_behave_as_the_sdks(tmp_path):
    from impasto.octoai import compat_types as t

    text = t.Text("robot")
    assert text == t.Text(text="robot")
    assert str(text + " dinosaur") == "robot dinosaur"
    assert "bot" in text
    assert text[1:3] == t.Text("ob")
    assert str(text * 2) == "robotrobot"
    assert text.model_dump() == {"text": "robot"}

    pil = Image.new("RGB", (8, 4), (10, 200, 30))
    img = t.Image.from_pil(pil)
    assert img.to_pil().format == "JPEG"
    assert img.is_valid()
    assert t.Image.from_base64(img.image_b64) == img
    img.to_file(tmp_path / "a.jpg")
    assert t.Image.from_file(tmp_path / "a.jpg") == img
    response = {"output": {"image_b64": img.image_b64}, "analytics": {}}
    assert t.Image.from_endpoint_response(response, "output").image_b64 == img.image_b64
    assert not t.Image(t.file_b64encode(b"not an image")).is_valid()
    assert t.file_b64decode(t.file_b64encode(b"\x00\x01")) == b"\x00\x01"

    samples = np.linspace(-0.5, 0.5, 80, dtype=np.float32)
    audio = t.Audio.from_numpy(samples, 16000)
    data, rate = audio.to_numpy()
    assert rate == 16000
    assert np.allclose(data, samples, atol=1e-3)
    assert list(audio.model_dump()) == ["audio_b64"]


URL_SERVICE = """
from octoai.service import Service
from octoai.types import Image


class Fetch(Service):
    def infer(self, url: str) -> Image:
        return Image.from_url(url)
"""


def test_image_from_url_goes_through_the_url_policy(tmp_path, serve_module):
    import http.server

    buf = io.BytesIO()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(buf, format="PNG")
    payload = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/a.png"
    try:
        guarded = serve_module(service_folder(tmp_path / "guarded", URL_SERVICE))
        r = guarded.client.post("/infer", json={"url": url})
        assert r.status_code == 422, r.text  # a private address: refused, naming the field
        assert r.json()["detail"][0]["loc"] == ["body", "url"]
        allowed = service_folder(tmp_path / "allowed", URL_SERVICE)
        (allowed / "config.yaml").write_text("media:\n  allow_private_urls: true\n")
        r = serve_module(allowed).client.post("/infer", json={"url": url})
        assert r.status_code == 200, r.text
        assert base64.b64decode(r.json()["output"]["image_b64"]) == payload
        assert guarded.client.post("/infer", json={"url": url}).status_code == 422  # its own
    finally:
        httpd.shutdown()
