"""The HTTP server over real sockets: routes, errors, streaming, lifecycle and limits."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from conftest import PACKAGES, metric

ERROR_KEYS = {"type", "message", "field"}


@pytest.fixture
def echo(serve_thread):
    return serve_thread(PACKAGES / "echo")


def test_predict_runs_every_stage_without_content_type(echo):
    r = echo.client.post("/predict", content=b'{"text": "hi"}')
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["stages"] == ["preprocess", "predict", "postprocess"]
    assert out["shout"] == "HI"
    assert out["suffix"] == "(from an external package dir)"
    assert out["greeting"] == "greetings from data"
    assert out["loads"] == 1
    assert out["env_var"] == "loud"
    assert out["thread"].startswith("impasto-model")  # sync code runs off the event loop


def test_model_route_accepts_any_name_and_readiness(echo):
    r = echo.client.post("/v1/models/anything:predict", json={"text": "x"})
    assert r.status_code == 200 and r.json()["text"] == "x"
    assert echo.client.get("/v1/models/echo").json() == {}
    assert echo.client.get("/v1/models/whatever").status_code == 200
    assert echo.client.get("/health/live").json() == {"status": "alive"}
    assert echo.client.get("/health/ready").status_code == 200
    assert echo.client.get("/").json() is True


def test_request_id_is_echoed_or_generated(echo):
    r = echo.client.post("/predict", json={}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = echo.client.post("/predict", json={}).headers["x-request-id"]
    assert len(generated) == 32
    bad = echo.client.post("/predict", content=b"{oops")
    assert bad.headers["x-request-id"]


def test_malformed_json_is_400_with_error_shape(echo):
    r = echo.client.post("/predict", content=b"{bad")
    assert r.status_code == 400
    body = r.json()["error"]
    assert set(body) == ERROR_KEYS
    assert body["type"] == "malformed_input"
    assert "invalid JSON" in body["message"]
    assert body["field"] == "body"


def test_unknown_route_is_json_404(echo):
    r = echo.client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"


def test_body_limit_is_413(serve_thread, tmp_path):
    import shutil

    pkg = tmp_path / "echo"
    shutil.copytree(PACKAGES / "echo", pkg)
    (tmp_path / "shared_lib").symlink_to(PACKAGES / "shared_lib")
    cfg = (pkg / "config.yaml").read_text() + "runtime:\n  max_body_bytes: 100\n"
    (pkg / "config.yaml").write_text(cfg)
    server = serve_thread(pkg)
    r = server.client.post("/predict", json={"text": "x" * 200})
    assert r.status_code == 413
    assert r.json()["error"]["field"] == "body"
    assert "runtime.max_body_bytes" in r.json()["error"]["message"]


def test_typed_input_422_names_field_and_openapi_has_schemas(serve_thread):
    server = serve_thread(PACKAGES / "typed")
    ok = server.client.post("/predict", json={"prompt": "ab", "times": 2, "style": "upper"})
    assert ok.json() == {"result": "AB AB", "length": 5}
    bad = server.client.post("/predict", json={"prompt": "ab", "times": 9})
    assert bad.status_code == 422
    err = bad.json()["error"]
    assert err["field"] == "times"
    assert "less than or equal to 5" in err["message"]
    missing = server.client.post("/predict", json={})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "prompt"
    not_object = server.client.post("/predict", json=[1, 2])
    assert not_object.status_code == 422 and not_object.json()["error"]["field"] == "body"
    spec = server.client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Request"}
    request_schema = spec["components"]["schemas"]["Request"]
    assert request_schema["properties"]["times"]["maximum"] == 5
    ok_schema = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    assert ok_schema["application/json"]["schema"] == {"$ref": "#/components/schemas/Response"}
    assert "swagger-ui" in server.client.get("/docs").text
    schema = server.client.get("/v1/models/typed/schema").json()
    assert schema["input_schema"]["properties"]["times"]["maximum"] == 5
    assert schema["output_schema"]["required"] == ["result", "length"]


def test_generator_streams_chunks_as_produced(serve_thread):
    server = serve_thread(PACKAGES / "stream")
    model = server.server.config.app.state.runner.model
    chunks = []
    with server.client.stream("POST", "/predict", json={"n": 3, "gated": True}) as r:
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers.get("transfer-encoding") == "chunked"
        for chunk in r.iter_raw():
            chunks.append(chunk)
            model.gate.set()  # the rest is produced only after the first chunk arrived
    assert b"".join(chunks) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert chunks[0] == b"chunk 0\n"
    assert model.waited == [True]  # the model really waited for the client to see chunk 0


def test_generator_sse_and_gathered_json(serve_thread):
    server = serve_thread(PACKAGES / "stream")
    r = server.client.post("/events", json={"n": 2}, headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text == 'data: {"step":0}\n\ndata: {"step":1}\n\n'
    gathered = server.client.post("/predict", json={"n": 2}, headers={"Accept": "application/json"})
    assert gathered.json() == "chunk 0\nchunk 1\n"
    ndjson = server.client.post("/v1/models/stream/events", json={"n": 2})
    assert [json.loads(line) for line in ndjson.text.splitlines()] == [{"step": 0}, {"step": 1}]


def test_slow_load_is_503_until_ready(serve_thread, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_LOAD_SECONDS", "1.5")
    server = serve_thread(PACKAGES / "lifecycle", ready=False)
    assert server.client.get("/health/live").status_code == 200
    ready = server.client.get("/health/ready")
    assert ready.status_code == 503
    assert "not ready" in ready.json()["error"]["message"]
    assert server.client.get("/v1/models/lifecycle").status_code == 503
    early = server.client.post("/predict", json={})
    assert early.status_code == 503
    assert early.json()["error"]["type"] == "not_ready"
    assert "still loading" in early.json()["error"]["message"]
    server.wait_ready()
    r = server.client.post("/predict", json={})
    assert r.status_code == 200 and r.json()["loaded"] is True


def test_raising_predict_is_500_without_traceback(serve_process):
    server = serve_process(PACKAGES / "lifecycle")
    server.wait_ready()
    r = server.client.post("/predict", json={"raise": "x"}, headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "model_error"
    assert err["message"] == "ValueError: bad value: x"
    assert "Traceback" not in r.text
    assert _eventually(lambda: "bad value: x" in server.logs())
    logs = server.logs()
    assert "req-42" in logs and "Traceback" in logs
    again = server.client.post("/predict", json={})
    assert again.status_code == 200  # the server keeps serving


def test_failing_load_exits_non_zero(serve_process):
    server = serve_process(PACKAGES / "lifecycle", env={"LIFECYCLE_LOAD_FAIL": "1"}, live=False)
    assert server.proc.wait(timeout=60) == 6
    logs = server.logs()
    assert "weights are missing" in logs and "Traceback" in logs


def test_failing_load_with_stay_up_keeps_readiness_failed(serve_process):
    server = serve_process(PACKAGES / "lifecycle", "--stay-up", env={"LIFECYCLE_LOAD_FAIL": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = server.client.get("/health/ready")
        if "failed" in r.text:
            break
        time.sleep(0.1)
    assert r.status_code == 503 and "weights are missing" in r.text
    p = server.client.post("/predict", json={})
    assert p.status_code == 503 and "failed to load" in p.json()["error"]["message"]
    assert server.proc.poll() is None


def test_timeout_504_keeps_the_slot_until_the_thread_returns(serve_thread):
    # (the 429 of a full queue is tested with gates in test_callpath.py)
    server = serve_thread(PACKAGES / "lifecycle")  # concurrency 1, max_queue 1, timeout 2 s
    runner = server.server.config.app.state.runner
    slow = server.client.post("/predict", json={"sleep": 3})
    assert slow.status_code == 504
    assert "runtime.predict_timeout_s" in slow.json()["error"]["message"]
    # the slot stays held until the thread finishes, then the server is usable again
    assert runner.stats()["running"] == 1
    assert _eventually(lambda: runner.stats()["running"] == 0)
    assert server.client.post("/predict", json={}).status_code == 200


def _eventually(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_metrics_count_by_endpoint(echo):
    echo.client.post("/predict", json={})
    text = echo.client.get("/metrics").text
    assert metric(text, "impasto_requests_total", model="echo", endpoint="predict", outcome="ok")


def test_async_stages_run_concurrently_on_the_loop(serve_thread):
    server = serve_thread(PACKAGES / "async_stages")  # predict_concurrency: 4

    def call(x):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return c.post("/predict", json={"x": x, "meet": 4}).json()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(4)))
    # each prediction waited until all four ran at once: serial ones would time out
    assert [r["y"] for r in results] == [0, 2, 4, 6]
    assert results[0]["trail"] == ["pre", "predict", "post"]
    assert results[0]["model"] == "async-stages"
    assert server.server.config.app.state.runner.model.max_active == 4


def test_wait_for_load_holds_requests_instead_of_503(serve_thread, tmp_path, monkeypatch):
    import shutil

    pkg = tmp_path / "lifecycle"
    shutil.copytree(PACKAGES / "lifecycle", pkg)
    text = (
        (pkg / "config.yaml").read_text().replace("runtime:\n", "runtime:\n  wait_for_load: true\n")
    )
    (pkg / "config.yaml").write_text(text.replace("predict_timeout_s: 2", "predict_timeout_s: 10"))
    monkeypatch.setenv("LIFECYCLE_LOAD_SECONDS", "1")
    server = serve_thread(pkg, ready=False)
    assert server.client.get("/health/ready").status_code == 503
    r = server.client.post("/predict", json={})
    assert r.status_code == 200 and r.json()["loaded"] is True


def test_predict_batch_merges_concurrent_requests(serve_thread):
    server = serve_thread(PACKAGES / "batcher")  # max_batch_size 4, max_wait_ms 200

    def call(payload):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return c.post("/predict", json=payload)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, [{"x": i} for i in range(8)]))
    bodies = [r.json() for r in results]
    assert [b["y"] for b in bodies] == [i * i for i in range(8)]  # each caller gets its own
    assert max(b["batch"] for b in bodies) > 1
    assert all(b["batch"] <= 4 for b in bodies)
    metrics = server.client.get("/metrics").text
    assert metric(metrics, "impasto_batch_size_sum", endpoint="predict") == 8.0
    broken = server.client.post("/predict", json={"x": 1, "short": True})
    assert broken.status_code == 500
    assert "returned 0 outputs for 1 inputs" in broken.json()["error"]["message"]


def test_wait_for_load_past_the_deadline_is_504(serve_thread, tmp_path, monkeypatch):
    import shutil

    pkg = tmp_path / "lifecycle"
    shutil.copytree(PACKAGES / "lifecycle", pkg)
    text = (
        (pkg / "config.yaml").read_text().replace("runtime:\n", "runtime:\n  wait_for_load: true\n")
    )
    (pkg / "config.yaml").write_text(text.replace("predict_timeout_s: 2", "predict_timeout_s: 0.5"))
    monkeypatch.setenv("LIFECYCLE_LOAD_SECONDS", "3")
    server = serve_thread(pkg, ready=False)
    r = server.client.post("/predict", json={})
    assert r.status_code == 504
    assert "while the model was loading" in r.json()["error"]["message"]


def test_a_load_that_fails_while_requests_wait_answers_them_with_its_error(
    serve_thread, tmp_path, monkeypatch
):
    import shutil

    pkg = tmp_path / "lifecycle"
    shutil.copytree(PACKAGES / "lifecycle", pkg)
    text = (pkg / "config.yaml").read_text()
    text = text.replace("runtime:\n", "runtime:\n  wait_for_load: true\n")
    (pkg / "config.yaml").write_text(text.replace("predict_timeout_s: 2", "predict_timeout_s: 30"))
    monkeypatch.setenv("LIFECYCLE_LOAD_SECONDS", "0.5")
    monkeypatch.setenv("LIFECYCLE_LOAD_FAIL", "1")
    server = serve_thread(pkg, ready=False)
    r = server.client.post("/predict", json={})  # held while loading, then the load fails
    assert r.status_code == 503, r.text
    message = r.json()["error"]["message"]
    assert "failed to load" in message and "weights are missing" in message


def test_the_openapi_document_is_built_once(echo, monkeypatch):
    import impasto.server.app as app_module

    first = echo.client.get("/openapi.json")
    monkeypatch.setattr(app_module, "build_openapi", lambda *a, **k: 1 / 0)  # never again
    second = echo.client.get("/openapi.json")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
