"""docs/protocols.md's client snippets, run as written against the models.yaml it shows."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from conftest import REPO, ThreadServer

pytestmark = pytest.mark.timeout(600)

DOC = (REPO / "docs" / "protocols.md").read_text()
PYTHON = re.findall(r"```python\n(.*?)```", DOC, re.S)
(MODELS_YAML, *_) = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    from impasto import build_app
    from impasto.models_file import load_models_file

    root = tmp_path_factory.mktemp("docs")
    spec = root / "models.yaml"
    spec.write_text(MODELS_YAML.replace("path: examples/", f"path: {REPO}/examples/"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPASTO_HOME", str(root / "home"))
        server = ThreadServer(build_app(load_models_file(spec))).start()
        server.wait_ready(300)
    yield server
    server.stop()


def _run(snippet: str, server: ThreadServer) -> dict:
    code = snippet.replace(URL, server.url).replace("127.0.0.1:8080", server.url[7:])
    namespace: dict = {"__name__": "docs_protocols"}
    exec(compile(code, "docs/protocols.md", "exec"), namespace)
    return namespace


def _snippet(marker: str) -> str:
    return next(s for s in PYTHON if marker in s)


def test_the_doc_has_one_snippet_per_protocol():
    markers = ("from openai import", "tritonclient", ":predict", "/predictions")
    assert all(sum(m in s for s in PYTHON) == 1 for m in markers)
    assert len(PYTHON) == len(markers)


def test_openai_snippet(docs_server):
    ns = _run(_snippet("from openai import"), docs_server)
    assert len(ns["result"].data) == 2
    assert Image.open(io.BytesIO(ns["png"])).size == (64, 64)
    assert ns["kinds"] == ["image_generation.partial_image", "image_generation.completed"]
    assert ns["models"] == ["sd", "tools"]


def test_tritonclient_snippet(docs_server):
    ns = _run(_snippet("tritonclient"), docs_server)
    jpegs = ns["jpegs"]
    assert jpegs.shape == (2,)
    assert all(Image.open(io.BytesIO(j)).format == "JPEG" for j in jpegs)


def test_kserve_v1_snippet(docs_server):
    ns = _run(_snippet(":predict"), docs_server)
    assert len(ns["predictions"]) == 2
    assert ns["predictions"][1]["seeds"] == [1]


def test_cog_snippet(docs_server):
    ns = _run(_snippet("/predictions"), docs_server)
    assert ns["prediction"]["status"] == "succeeded" and ns["status"] == "READY"
    for uri in (ns["image"], ns["banner"]):
        head, data = uri.split(",", 1)
        assert head == "data:image/png;base64"
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    # the lazy model loaded on that request
    states = docs_server.client.get("/health/ready").json()["models"]
    assert states == {"sd": "ready", "tools": "ready"}
