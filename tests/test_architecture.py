"""docs/architecture.md's example adapter, run as written: progress, streams, errors and a
client that leaves, with nothing but the adapter's own reading and writing."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from conftest import PACKAGES, REPO, ThreadServer

DOC = (REPO / "docs" / "architecture.md").read_text()
ADAPTER, SERVE = re.findall(r"```python\n(.*?)```", DOC, re.S)


def _adapter_namespace() -> dict:
    namespace: dict = {"__name__": "docs_architecture"}
    exec(compile(ADAPTER, "docs/architecture.md adapter", "exec"), namespace)
    return namespace


@pytest.fixture
def steps():
    from impasto import load_package
    from impasto.metrics import Metrics
    from impasto.server import ServerSettings, create_app
    from impasto.serving import runner_for

    adapter = _adapter_namespace()["NDJSONAdapter"]
    runner = runner_for(load_package(PACKAGES / "steps"), Metrics())
    server = ThreadServer(create_app(runner, ServerSettings(adapters=(adapter,)))).start()
    server.wait_ready()
    yield server, runner
    runner.model.gate.set()
    server.stop()


def _lines(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


def _eventually(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_progress_lines_then_the_result(steps):
    server, _ = steps
    r = server.client.post("/ndjson/count", json={"n": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert _lines(r) == [
        {"step": 1, "total": 3},
        {"step": 2, "total": 3},
        {"step": 3, "total": 3},
        {"result": {"counted": 3}},
    ]


def test_a_streaming_endpoint_streams_a_line_per_chunk(steps):
    server, _ = steps
    r = server.client.post("/ndjson/chunks", json={"n": 2})
    assert _lines(r) == [{"chunk": {"i": 0}}, {"chunk": {"i": 1}}]


def test_errors_in_the_adapters_shape(steps):
    server, _ = steps
    bad = server.client.post("/ndjson/count", json={"n": "many"})
    assert bad.status_code == 422 and "n" in bad.json()["error"]
    malformed = server.client.post("/ndjson/count", content=b"{nope")
    assert malformed.status_code == 400 and "invalid JSON" in malformed.json()["error"]
    missing = server.client.post("/ndjson/nothing", json={})
    assert missing.status_code == 404 and "count" in missing.json()["error"]


def test_a_client_that_leaves_cancels_the_prediction(steps):
    server, runner = steps
    model = runner.model
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/ndjson/count", json={"n": 5, "block_at": 2}) as r,
    ):
        lines = r.iter_lines()
        assert json.loads(next(lines)) == {"step": 1, "total": 5}
        assert json.loads(next(lines)) == {"step": 2, "total": 5}
        assert model.blocked.wait(30)
    # the connection is closed: the core aborts the prediction with its true reason...
    ctx = model.contexts[-1]
    assert _eventually(lambda: ctx.cancelled)
    assert ctx.cancel_reason == "disconnected"
    model.gate.set()
    # ...and the model stops at its next step, freeing its slot
    assert _eventually(lambda: runner.stats()["running"] == 0)
    assert model.steps_done == 2


def test_the_serving_snippet_runs_the_tiny_diffusers_example(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    namespace = _adapter_namespace()
    exec(compile(SERVE, "docs/architecture.md serve", "exec"), namespace)
    server = ThreadServer(namespace["app"]).start()
    try:
        server.wait_ready(timeout=180)
        r = server.client.post(
            "/ndjson/text2img", json={"prompt": "x", "seed": 1, "num_inference_steps": 2}
        )
        lines = _lines(r)
        assert lines[:2] == [{"step": 1, "total": 2}, {"step": 2, "total": 2}]
        result = lines[-1]["result"]
        assert result["images"][0]["format"] == "png" and result["seeds"] == [1]
    finally:
        server.stop()
