"""Cog's container API (synchronous predictions, SSE, health-check) over httpx, as Cog's
tools and Replicate-style clients send it, against real servers on loopback. The
asynchronous checks (``Prefer: respond-async``, webhooks, ``PUT``, cancel) belong to the job
store; ``/openapi.json`` and uploads are exempt (see docs/protocols.md)."""

from __future__ import annotations

import base64
import io
import json
import threading

import httpx
import pytest
from PIL import Image

from conftest import PACKAGES, ThreadServer

pytestmark = pytest.mark.timeout(600)


def _painter(**overrides) -> tuple[ThreadServer, type]:
    from impasto import build_app, load_package

    package = load_package(PACKAGES / "painter", overrides=overrides or None)
    return ThreadServer(build_app(package)), package.spec.cls


def _data_uri_image(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# 5.9 check 1 ---------------------------------------------------------------------------------
def test_health_check_starting_then_ready_and_503_during_setup():
    server, cls = _painter()
    cls.load_gate = gate = threading.Event()
    server.start()
    try:
        health = server.client.get("/health-check")
        assert health.status_code == 200 and health.json()["status"] == "STARTING"
        assert health.json()["setup"]["status"] == "starting"
        early = server.client.post("/predictions", json={"input": {"prompt": "a cat"}})
        assert early.status_code == 503
        assert early.json() == {
            "error": "Setup has not finished yet. Wait until it has finished, or GET "
            "/health-check for status.",
            "status": "failed",
        }
        gate.set()
        server.wait_ready()
        ready = server.client.get("/health-check").json()
        assert ready["status"] == "READY" and ready["setup"]["status"] == "succeeded"
        assert ready["setup"]["completed_at"] >= ready["setup"]["started_at"]
    finally:
        gate.set()
        server.stop()


# check 2 -------------------------------------------------------------------------------------
def test_a_synchronous_prediction(three_models):
    r = three_models.client.post(
        "/predictions", json={"input": {"prompt": "a cat", "seed": 1, "unknown": "dropped"}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded" and body["error"] is None
    assert body["id"] and isinstance(body["logs"], str)
    assert body["metrics"]["predict_time"] > 0
    assert _data_uri_image(body["output"]).size == (64, 64)
    assert body["started_at"] >= body["created_at"]


def test_each_model_by_name(three_models):
    http = three_models.client
    painter = http.post(
        "/models/painter/predictions",
        json={"id": "mine", "input": {"prompt": "fox", "num_images": 2}},
    ).json()
    assert painter["id"] == "mine" and painter["status"] == "succeeded"
    assert [_data_uri_image(u).size for u in painter["output"]] == [(16, 16), (16, 16)]
    assert "painting 'fox'" in painter["logs"]
    typed = http.post("/models/typed/predictions", json={"input": {"prompt": "hi", "times": 2}})
    assert typed.json()["output"] == {"result": "hi hi", "length": 5}
    assert http.get("/models/typed/health-check").json()["status"] == "READY"
    unknown = http.post("/models/nope/predictions", json={"input": {}})
    assert unknown.status_code == 404 and unknown.json()["status"] == "failed"


def test_input_null_is_empty_and_content_type_and_json_are_required(three_models):
    http = three_models.client
    empty = http.post("/models/painter:tokens/predictions", json={"input": None})
    assert empty.status_code == 422  # prompt is required
    no_type = http.post("/predictions", content=b'{"input": {}}')
    assert no_type.status_code == 415
    assert no_type.text == "Expected request with `Content-Type: application/json`"
    bad = http.post("/predictions", content=b"{bad", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    assert bad.text.startswith("Failed to parse the request body as JSON: ")


# check 6 -------------------------------------------------------------------------------------
def test_invalid_input_is_a_422_with_cogs_detail(three_models):
    http = three_models.client
    steps = http.post("/predictions", json={"input": {"prompt": "x", "num_inference_steps": 99}})
    assert steps.status_code == 422
    (detail,) = steps.json()["detail"]
    assert detail["loc"] == ["body", "input", "num_inference_steps"]
    assert "50" in detail["msg"] and detail["type"] == "value_error"
    missing = http.post("/predictions", json={"input": {"seed": 1}})
    assert missing.json()["detail"][0]["loc"] == ["body", "input", "prompt"]


# check 7 -------------------------------------------------------------------------------------
def test_a_model_error_is_a_200_with_status_failed(three_models):
    r = three_models.client.post(
        "/models/painter/predictions", json={"input": {"prompt": "x", "fail": True}}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed" and "dropped its brush" in body["error"]
    assert body["error"].startswith("Prediction failed: ") and body["output"] is None
    assert "painting 'x'" in body["logs"]


# check 8 -------------------------------------------------------------------------------------
def test_at_capacity_is_a_409_and_health_check_says_busy():
    server, cls = _painter(runtime={"max_queue": 0})  # Cog's model: no queue
    server.start()
    server.wait_ready()
    results = {}
    try:

        def first() -> None:
            results["first"] = httpx.post(
                server.url + "/predictions",
                json={"input": {"prompt": "slow", "hold": True}},
                timeout=60,
            )

        thread = threading.Thread(target=first)
        thread.start()
        assert cls.hold.wait(30)  # the first prediction holds the only slot
        busy = server.client.post("/predictions", json={"input": {"prompt": "x"}})
        assert busy.status_code == 409
        assert busy.json() == {
            "error": "At capacity - all prediction slots busy",
            "status": "failed",
        }
        assert server.client.get("/health-check").json()["status"] == "BUSY"
        cls.release.set()
        thread.join(30)
        assert results["first"].json()["status"] == "succeeded"
        assert server.client.get("/health-check").json()["status"] == "READY"
    finally:
        cls.release.set()
        server.stop()


# check 9 -------------------------------------------------------------------------------------
def test_sse_streams_start_output_log_completed(three_models):
    r = three_models.client.post(
        "/models/painter:tokens/predictions",
        json={"id": "s1", "input": {"prompt": "fox", "n": 2}},
        headers={"Accept": "text/event-stream"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "completed"
    assert events[0][1] == {"id": "s1", "status": "processing"}
    outputs = [data for kind, data in events if kind == "output"]
    assert outputs == [{"chunk": "fox-0", "index": 0}, {"chunk": "fox-1", "index": 1}]
    logs = [data for kind, data in events if kind == "log"]
    assert {"data": "WARNING painter: token 0\n", "source": "stdout"} in logs
    final = events[-1][1]
    assert final["status"] == "succeeded" and final["output"] == ["fox-0", "fox-1"]
    assert final["id"] == "s1" and "token 1" in final["logs"]


def test_sse_on_a_model_that_does_not_stream_is_a_406(three_models):
    r = three_models.client.post(
        "/predictions", json={"input": {"prompt": "x"}}, headers={"Accept": "text/event-stream"}
    )
    assert r.status_code == 406 and r.json()["status"] == "failed"


def test_a_generator_without_sse_gathers_its_chunks(three_models):
    r = three_models.client.post(
        "/models/painter:tokens/predictions", json={"input": {"prompt": "a", "n": 3}}
    )
    assert r.json()["output"] == ["a-0", "a-1", "a-2"]


def test_asynchronous_predictions_say_they_need_the_job_store():
    """With jobs off, respond-async is refused with the reason (docs/jobs.md covers them on)."""
    server, _ = _painter(jobs={"enabled": False})
    server.start()
    try:
        r = server.client.post(
            "/predictions", json={"input": {"prompt": "x"}}, headers={"Prefer": "respond-async"}
        )
    finally:
        server.stop()
    assert r.status_code == 501 and "job store" in r.json()["error"]


def test_the_shared_root_stays_truss_true(three_models):
    assert httpx.get(three_models.url + "/").json() is True
