"""Regression tests from a review of the core: slots, streams, load failures, CLI contracts."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import PACKAGES
from impasto import PackageConfig, PackageError, Runner, build_app, inspect_model
from impasto.config import EndpointConfig

SLOTS = PACKAGES / "review_slots"  # predict_concurrency 1, predict_timeout_s 1
API_KEY = "sk-live-0123456789abcdef"


def _runner_of(server):
    return server.server.config.app.state.runner


def _eventually(check, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_timed_out_sync_predict_keeps_its_slot_until_the_thread_returns(serve_thread):
    server = serve_thread(SLOTS)
    runner = _runner_of(server)
    model = runner.model
    try:
        late = server.client.post("/predict", json={"block": True})
        assert late.status_code == 504
        # the thread cannot be stopped, so it must still count against predict_concurrency
        assert runner.stats()["running"] == 1
        second = server.client.post("/predict", json={})
        assert second.status_code == 504, second.text  # waited for the slot, never ran beside it
        assert model.max_active == 1
    finally:
        model.gate.set()
    assert _eventually(lambda: runner.stats()["running"] == 0)
    assert server.client.post("/predict", json={}).json() == {"max_active": 1}


def test_stream_timeout_keeps_the_slot_until_the_thread_returns(serve_thread):
    server = serve_thread(SLOTS)
    runner = _runner_of(server)
    model = runner.model
    try:
        with (
            pytest.raises(httpx.HTTPError),  # the deadline cuts the stream after "first"
            server.client.stream("POST", "/chunks", json={"block": True}) as r,
        ):
            for _ in r.iter_raw():
                pass
        assert runner.stats()["running"] == 1  # next() still runs in its thread
        assert server.client.post("/predict", json={}).status_code == 504
        assert model.max_active == 1
    finally:
        model.gate.set()
    assert _eventually(lambda: runner.stats()["running"] == 0 and model.closed == 1)


def test_generator_failing_before_its_first_chunk_is_a_500(serve_thread):
    server = serve_thread(SLOTS)
    r = server.client.post("/chunks", json={"fail": True})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "model_error"
    assert r.json()["error"]["message"] == "ValueError: no chunks today"
    ok = server.client.post("/chunks", json={"more": 2})
    assert ok.text == "first\nmore 0\nmore 1\n"
    assert _runner_of(server).stats()["running"] == 0


@pytest.mark.parametrize("route", ["/predict", "/chunks"])
def test_a_model_raising_timeout_error_is_a_model_error_not_a_504(serve_thread, route):
    server = serve_thread(SLOTS)
    r = server.client.post(route, json={"raise_timeout": True})
    assert r.status_code == 500, r.text
    assert r.json()["error"] == {
        "type": "model_error",
        "message": "TimeoutError: the feature store timed out",
        "field": None,
    }
    assert _runner_of(server).stats()["running"] == 0


def test_preprocess_is_bound_by_the_request_deadline(serve_thread):
    server = serve_thread(SLOTS)
    model = _runner_of(server).model
    try:
        # predict_timeout_s is 1: the answer comes then, not when the gate opens (30 s)
        r = server.client.post("/predict", json={"block_pre": True}, timeout=10)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["type"] == "timeout"
    finally:
        model.gate.set()


def test_an_endpoint_route_without_a_leading_slash_is_a_package_error():
    class Model:
        def predict(self, model_input):
            return model_input

        def other(self, model_input):
            return model_input

    with pytest.raises(PackageError, match="other-route"):
        inspect_model(Model, [EndpointConfig(method="other", route="other-route")])


def _scope(path: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def test_stream_whose_client_stopped_reading_frees_its_slot_when_the_response_ends():
    app = build_app(SLOTS)
    runner = app.state.runner

    async def scenario() -> tuple[int, int]:
        assert await runner.load()
        writing = asyncio.Event()
        messages = [{"type": "http.request", "body": b'{"more": 3}', "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await writing.wait()
            return {"type": "http.disconnect"}  # the client leaves while a write is stuck

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                writing.set()
                await asyncio.Event().wait()  # a client that stopped reading

        try:
            await app(_scope("/chunks"), receive, send)
            for _ in range(3):
                await asyncio.sleep(0)
            return runner.stats()["running"], runner.model.closed
        finally:
            await runner.aclose()

    gc.disable()  # the slot must not wait for the cycle collector to finalize the generator
    try:
        assert asyncio.run(scenario()) == (0, 1)
    finally:
        gc.enable()


def test_a_client_that_leaves_gets_a_499_with_the_error_shape():
    app = build_app(SLOTS)
    runner = app.state.runner

    async def scenario() -> list[dict]:
        assert await runner.load()
        messages = [{"type": "http.request", "body": b'{"block": true}', "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(0.2)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        try:
            await app(_scope("/predict"), receive, send)
            return sent
        finally:
            runner.model.gate.set()
            await runner.aclose()

    start, body = asyncio.run(scenario())
    assert start["status"] == 499
    assert json.loads(body["body"])["error"]["type"] == "canceled"


def test_gathered_stream_is_canceled_when_the_client_leaves(serve_thread, tmp_path):
    pkg = tmp_path / "slots"
    shutil.copytree(SLOTS, pkg)
    config = pkg / "config.yaml"
    config.write_text(config.read_text().replace("predict_timeout_s: 1", "predict_timeout_s: 60"))
    server = serve_thread(pkg)
    model = _runner_of(server).model
    try:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=server.url) as client:
            client.post(
                "/chunks",
                json={"block": True, "more": 50},
                headers={"Accept": "application/json"},
                timeout=httpx.Timeout(30, read=0.5),
            )
        assert _eventually(lambda: model.last_context is not None and model.last_context.cancelled)
        assert model.last_context.cancel_reason == "disconnected"
    finally:
        model.gate.set()
    assert _eventually(lambda: model.closed == 1)
    assert model.produced < 50  # the generator was closed, not drained for nobody


class _TimesOutInInit:
    def __init__(self):
        raise TimeoutError("the weights server timed out")

    def predict(self, model_input):
        return model_input


class _TimesOutInLoad:
    def load(self):
        raise TimeoutError("the weights server timed out")

    def predict(self, model_input):
        return model_input


@pytest.mark.parametrize("cls", [_TimesOutInInit, _TimesOutInLoad])
def test_a_model_raising_timeout_error_fails_its_load_cleanly(cls):
    runner = Runner(inspect_model(cls), cls, PackageConfig())

    async def scenario() -> bool:
        try:
            loaded = await runner.load()
            assert await asyncio.wait_for(runner.wait_loaded(), 5) is False  # nobody hangs
            return loaded
        finally:
            await runner.aclose()

    assert asyncio.run(scenario()) is False
    assert runner.state == "failed"
    assert runner.load_error == "TimeoutError: the weights server timed out"


def impasto(*args: str, env: dict[str, str] | None = None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "impasto.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_predict_url_exits_with_the_code_of_the_server_error(serve_thread):
    server = serve_thread(PACKAGES / "typed")
    ok = impasto("predict", "--url", server.url, "-d", '{"prompt": "x"}')
    assert ok.returncode == 0, ok.stderr
    invalid = impasto("predict", "--url", server.url, "-d", '{"prompt": "x", "times": 30}')
    assert invalid.returncode == 2 and "422" in invalid.stderr and "times" in invalid.stderr
    missing = impasto("predict", "--url", f"{server.url}/nope", "-d", "{}")
    assert missing.returncode == 5 and "404" in missing.stderr


def test_predict_cli_redacts_secrets_from_the_model_logs():
    r = impasto(
        "predict", str(PACKAGES / "secrets"), "-d", "{}", env={"IMPASTO_SECRET_API_KEY": API_KEY}
    )
    assert r.returncode == 0, r.stderr
    assert "loaded with secrets" in r.stderr  # the model logged it...
    assert API_KEY not in r.stderr + r.stdout  # ...but the value never shows


def test_serve_reload_redacts_secrets_from_the_model_logs(serve_process, tmp_path: Path):
    pkg = tmp_path / "secrets"
    shutil.copytree(PACKAGES / "secrets", pkg)
    server = serve_process(pkg, "--reload", env={"IMPASTO_SECRET_API_KEY": API_KEY})
    server.wait_ready()
    assert server.client.post("/predict", json={}).json()["api_key_length"] == len(API_KEY)
    server.stop()
    logs = server.logs()
    assert "loaded with secrets" in logs
    assert API_KEY not in logs
