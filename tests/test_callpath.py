"""The one call path: admission before the body, bounded decoding, the prediction lifecycle,
true cancel reasons, log capture and stream outcomes, over a real server on loopback."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import time

import httpx
import pytest
from PIL import Image

from conftest import PACKAGES, metric

CALLPATH = PACKAGES / "callpath"


def _png(size=(64, 64), color=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _eventually(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture
def served(serve_thread):
    server = serve_thread(CALLPATH)
    runner = server.server.config.app.state.runner
    yield server, runner
    runner.model.gate.set()


def _post(server, path, **kwargs):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.post(path, **kwargs)


# -- admission ------------------------------------------------------------------------------


def test_a_full_queue_answers_429_before_reading_the_body(served):
    server, runner = served
    capacity = 1 + 3  # one running, max_queue 3 waiting
    with concurrent.futures.ThreadPoolExecutor(capacity) as pool:
        first = pool.submit(_post, server, "/predict", json={"block": True})
        assert runner.model.blocked.wait(30)
        waiting = [pool.submit(_post, server, "/predict", json={"x": i}) for i in range(3)]
        assert _eventually(lambda: runner.stats()["in_flight"] == capacity)
        # not JSON and not an image: a 429 proves neither was parsed or decoded
        junk = server.client.post("/predict", content=b"{not json")
        assert junk.status_code == 429, junk.text
        assert junk.headers["retry-after"] == "1"
        assert junk.json()["error"]["type"] == "overloaded"
        picture = server.client.post("/picture", json={"image": "not an image"})
        assert picture.status_code == 429
        runner.model.gate.set()
        assert first.result().status_code == 200
        assert [w.result().json() for w in waiting] == [{"echo": i} for i in range(3)]
    refused = metric(
        server.client.get("/metrics").text,
        "impasto_requests_total",
        endpoint="predict",
        outcome="overloaded",
    )
    assert refused == 2 - 1  # /picture's refusal counts against its own endpoint


def test_requests_waiting_far_back_hold_no_decoded_media(served):
    server, runner = served
    body = {"image": _png()}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = pool.submit(_post, server, "/picture", json={**body, "block": True})
        assert runner.model.blocked.wait(30)
        later = [pool.submit(_post, server, "/picture", json=body) for _ in range(3)]
        assert _eventually(lambda: runner.stats()["in_flight"] == 4)
        # one slot plus one input worker may hold decoded images; the other two wait raw
        assert _eventually(lambda: runner.stats()["decoded"] == 2)
        assert runner.stats()["decoded"] == 2
        runner.model.gate.set()
        assert running.result().json() == {"size": [64, 64]}
        assert all(f.result().json() == {"size": [64, 64]} for f in later)
    assert runner.stats()["decoded"] == 0
    assert set(runner.model.validated_on) == {"impasto-input_0"}  # never a model thread


# -- decoding bounds ------------------------------------------------------------------------


def test_the_decode_budget_spans_every_media_field_of_a_request(served):
    server, _ = served
    three = server.client.post("/pictures", json={"images": [_png()] * 3})
    assert three.json() == {"count": 3}
    bigger = server.client.post("/pictures", json={"images": [_png((64, 80))] * 3})
    assert bigger.status_code == 413, bigger.text
    error = bigger.json()["error"]
    assert error["field"] == "images" and "media.max_decoded_bytes" in error["message"]
    four = server.client.post("/pictures", json={"images": [_png((8, 8))] * 4})
    assert four.status_code == 413
    assert four.json()["error"]["field"] == "images"
    assert "media.max_list_items" in four.json()["error"]["message"]


def test_deep_json_is_a_400_naming_the_limit(served):
    server, _ = served
    for depth in (17, 5000, 200_000):
        body = b"[" * depth + b"]" * depth
        r = server.client.post("/predict", content=body)
        assert r.status_code == 400, (depth, r.text)
        assert "runtime.max_json_depth" in r.json()["error"]["message"]
    ok = server.client.post("/predict", content=b'{"x": ' + b"[" * 15 + b"]" * 15 + b"}")
    assert ok.status_code == 200


def test_a_chunked_body_past_the_limit_is_413(serve_thread, tmp_path):
    import shutil

    pkg = tmp_path / "callpath"
    shutil.copytree(CALLPATH, pkg)
    config = pkg / "config.yaml"
    config.write_text(
        config.read_text().replace("runtime:\n", "runtime:\n  max_body_bytes: 1000\n")
    )
    server = serve_thread(pkg)

    def chunks():  # no Content-Length: the server must count as it reads
        yield b'{"x": "'
        for _ in range(100):
            yield b"a" * 100
        yield b'"}'

    r = server.client.post("/predict", content=chunks())
    assert r.status_code == 413 and "runtime.max_body_bytes" in r.json()["error"]["message"]
    small = server.client.post("/predict", content=iter([b'{"x": ', b"1}"]))
    assert small.json() == {"echo": 1}


# -- the lifecycle --------------------------------------------------------------------------


def test_events_and_logs_of_a_prediction(caplog):
    import asyncio
    import logging

    from impasto import load_package
    from impasto.logs import install
    from impasto.serving import runner_for

    runner = runner_for(load_package(CALLPATH))
    events = []

    async def scenario():
        undo = install()
        try:
            assert await runner.load()
            result = await runner.predict(
                {"n": 2}, "chatty", request_id="req-7", on_event=events.append
            )
            return result
        finally:
            await runner.aclose()
            undo()

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) == {"said": 2}
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["output", "completed"]
    assert [e.data["step"] for e in events if e.kind == "progress"] == [1, 2]
    logs = [e.data["message"] for e in events if e.kind == "log"]
    assert logs == [
        "INFO callpath.model: step 1 of 2",
        "printed 1",
        "INFO callpath.model: step 2 of 2",
        "printed 2",
    ]
    times = [e.at for e in events]
    assert times == sorted(times) and abs(times[0] - time.time()) < 60  # wall clock
    assert events[-1].data == {"status": "succeeded", "outcome": "ok"}
    # the same lines still reach the server log, tagged with the request id
    records = [r for r in caplog.records if r.name == "callpath.model"]
    assert [r.request_id for r in records] == ["req-7", "req-7"]


def test_prints_are_captured_after_someone_else_replaced_stdout():
    """The hooks were installed first (a server), then sys.stdout was replaced (a test
    runner's capture, an embedding app): a later prediction's prints are still captured."""
    import asyncio
    import io
    import sys

    from impasto import load_package
    from impasto.logs import install
    from impasto.serving import runner_for

    runner = runner_for(load_package(CALLPATH))
    events = []
    first = install()
    saved, sys.stdout = sys.stdout, io.StringIO()
    replaced = sys.stdout

    async def scenario():
        undo = install()
        try:
            assert await runner.load()
            return await runner.predict({"n": 1}, "chatty", on_event=events.append)
        finally:
            await runner.aclose()
            undo()

    try:
        assert asyncio.run(scenario()) == {"said": 1}
    finally:
        sys.stdout = saved
        first()
    assert "printed 1" in [e.data["message"] for e in events if e.kind == "log"]
    assert "printed 1" in replaced.getvalue()  # and it still reached the stream it replaced


def test_a_slow_subscriber_never_stalls_the_model():
    import asyncio
    import threading

    from impasto import inspect_model
    from impasto.config import PackageConfig
    from impasto.runner import Runner

    finished = threading.Event()

    class Model:
        def predict(self, data, context):
            for step in range(1, 6):
                context.progress(step, 5)
            finished.set()
            return {"done": True}

    waited = []

    def subscriber(event):
        if event.kind == "progress" and not waited:
            # blocks the event loop until the model is done: were subscribers called on
            # the model's thread, the model could never finish and this would time out
            waited.append(finished.wait(10))
        if event.kind == "progress" and event.data["step"] == 3:
            raise RuntimeError("a broken subscriber")

    runner = Runner(inspect_model(Model), Model, PackageConfig())

    async def scenario():
        try:
            assert await runner.load()
            return await runner.predict({}, on_event=subscriber)
        finally:
            await runner.aclose()

    assert asyncio.run(scenario()) == {"done": True}
    assert waited == [True]


# -- cancel reasons -------------------------------------------------------------------------


def test_a_timed_out_async_predict_stops_running(serve_thread, tmp_path):
    import shutil

    pkg = tmp_path / "callpath"
    shutil.copytree(CALLPATH, pkg)
    config = pkg / "config.yaml"
    text = config.read_text().replace("runtime:\n", "runtime:\n  predict_timeout_s: 0.3\n")
    config.write_text(text)
    server = serve_thread(pkg)
    model = server.server.config.app.state.runner.model
    r = server.client.post("/ticks", json={"n": 100_000})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    assert "runtime.predict_timeout_s" in r.json()["error"]["message"]
    assert _eventually(lambda: model.async_cancelled.is_set())
    ticks = model.ticks
    ok = server.client.post("/predict", json={"x": 1})  # the loop went on without it
    assert ok.json() == {"echo": 1} and model.ticks == ticks
    reasons = server.client.get("/metrics").text
    assert metric(reasons, "impasto_canceled_total", endpoint="ticks", reason="timeout") == 1


def test_shutdown_cancels_what_is_left_with_503(served):
    import asyncio

    server, runner = served
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ticking = pool.submit(_post, server, "/ticks", json={"n": 100_000})
        assert _eventually(lambda: runner.model.ticks > 0)
        aborted = asyncio.run_coroutine_threadsafe(runner.drain(0), server.loop).result(30)
        r = ticking.result()
    assert aborted == 1
    assert r.status_code == 503 and r.json()["error"]["type"] == "shutting_down"
    assert r.headers["retry-after"] == "1"
    again = server.client.post("/predict", json={})
    assert again.status_code == 503 and again.json()["error"]["type"] == "shutting_down"
    assert server.client.get("/health/ready").status_code == 503
    text = server.client.get("/metrics").text
    assert metric(text, "impasto_canceled_total", endpoint="ticks", reason="shutdown") == 1


# -- streams and outputs --------------------------------------------------------------------


def test_a_stream_failing_midway_is_a_failure_with_an_sse_error_event(served):
    server, _ = served
    with server.client.stream(
        "POST", "/broken_stream", json={}, headers={"Accept": "text/event-stream"}
    ) as r:
        text = r.read().decode()
    assert text.startswith("data: chunk 0\n\n")
    assert "event: error" in text and "chunk 1 broke" in text
    with (
        pytest.raises(httpx.HTTPError),
        server.client.stream("POST", "/broken_stream", json={}) as r,
    ):
        for _ in r.iter_raw():  # raw chunks: the stream breaks instead of ending cleanly
            pass
    text = server.client.get("/metrics").text
    failed = metric(text, "impasto_requests_total", endpoint="broken_stream", outcome="model_error")
    assert failed == 2
    assert server.client.post("/predict", json={"x": 2}).json() == {"echo": 2}


def test_an_output_json_cannot_hold_is_a_model_error(served):
    server, _ = served
    for kind in ("nan", "object"):
        r = server.client.post("/nan", json={"kind": kind})
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert error["type"] == "model_error" and "cannot be sent as JSON" in error["message"]


def test_progress_events_over_sse_include_the_models_log_lines(serve_process):
    server = serve_process(CALLPATH)  # `impasto serve`: its own stdout and logging setup
    server.wait_ready()
    r = server.client.post(
        "/chatty",
        json={"n": 2},
        headers={"Accept": "text/event-stream", "X-Request-ID": "sse-1"},
    )
    frames = [f for f in r.text.split("\n\n") if f]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds == ["log", "log", "progress", "log", "log", "progress", "result"]
    first = json.loads(frames[0].split("data: ", 1)[1])
    assert first == {"message": "INFO callpath.model: step 1 of 2"}
    assert json.loads(frames[-1].split("data: ", 1)[1]) == {"said": 2}
    server.stop()
    logs = server.logs()
    assert "printed 1" in logs  # still in the server log...
    assert "INFO callpath.model: step 2 of 2 [request sse-1]" in logs  # ...with the request


def test_a_context_parameter_with_a_data_type_is_an_input_field(served):
    server, _ = served
    r = server.client.post("/typed_context", json={"context": "about cats", "ctx": 3})
    assert r.json() == {"context": "about cats", "ctx": 3}
    missing = server.client.post("/typed_context", json={})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "context"


def test_accept_with_q_zero_is_not_an_ask(serve_thread):
    server = serve_thread(PACKAGES / "media_io")
    r = server.client.post("/image", json={}, headers={"Accept": "image/png;q=0, */*"})
    assert r.headers["content-type"] == "application/json"
    png = server.client.post("/image", json={}, headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"


# -- batches --------------------------------------------------------------------------------


def test_a_batched_endpoint_queues_counts_and_refuses_like_any_other(serve_thread):
    server = serve_thread(PACKAGES / "gated_batch")  # 1 slot x batches of 2, max_queue 1
    runner = server.server.config.app.state.runner
    model = runner.model
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(_post, server, "/predict", json={"x": 0})
            assert model.in_batch.wait(30)  # a batch of one holds the only slot
            waiting = [pool.submit(_post, server, "/predict", json={"x": i}) for i in (1, 2)]
            assert _eventually(lambda: runner.stats()["batch_pending"].get("predict") == 2)
            depth = metric(server.client.get("/metrics").text, "impasto_queue_depth")
            assert depth == 2 == runner.stats()["waiting"]  # batched waiters count too
            # 1 slot x batch of 2 + max_queue 1 = 3 in flight: the fourth is refused at once
            assert server.client.post("/predict", content=b"{junk").status_code == 429
            model.gate.set()
            assert first.result().json() == {"y": 0}
            assert sorted(w.result().json()["y"] for w in waiting) == [1, 2]
    finally:
        model.gate.set()
    assert [sorted(batch) for batch in model.batches] == [[0], [1, 2]]  # (either order)


def test_a_batch_never_runs_items_canceled_while_they_waited():
    import asyncio

    from impasto.batching import BatchQueue
    from impasto.context import RequestContext
    from impasto.errors import Canceled
    from impasto.prediction import Prediction

    ran: list[list[int]] = []

    async def scenario():
        slot = asyncio.Semaphore(1)
        await slot.acquire()  # the model is busy: items queue up

        async def run(values, predictions):
            ran.append(values)
            return values

        queue = BatchQueue(
            run,
            max_batch_size=4,
            max_wait_ms=0,
            max_batch_pixels=10**9,
            acquire=slot.acquire,
            release=slot.release,
        )
        predictions = [
            Prediction(RequestContext(f"r{i}"), model="m", endpoint="e") for i in range(3)
        ]
        waits = [asyncio.create_task(queue.submit(i, p)) for i, p in enumerate(predictions)]
        await asyncio.sleep(0)
        predictions[1].abort("canceled")  # canceled while queued, its waiter not canceled
        slot.release()
        results = await asyncio.gather(*waits, return_exceptions=True)
        await queue.aclose()
        return results

    results = asyncio.run(scenario())
    assert ran == [[0, 2]]
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], Canceled)


def test_a_predictions_cancellation_tells_an_abort_from_a_teardown() -> None:
    """``Prediction.cancellation``, the one place every owner (HTTP, in-process, jobs, Ray,
    the playground) turns a task cancellation into how the prediction ends: an abort is
    raised as the prediction's own error and the task carries on; a teardown nobody asked
    for propagates and ends it as disconnected (unless the owner settles it itself)."""
    import asyncio

    from impasto.context import RequestContext
    from impasto.errors import Canceled, PredictTimeout
    from impasto.prediction import Prediction

    async def scenario(abort: str | None, end_on_teardown: bool = True):
        p = Prediction(RequestContext("r"), model="m", endpoint="e")
        started = asyncio.Event()

        async def work():
            p.bind(asyncio.current_task())
            with p.cancellation(end_on_teardown=end_on_teardown):
                started.set()
                await asyncio.Event().wait()  # until canceled

        task = asyncio.create_task(work())
        await started.wait()
        if abort:
            p.abort(abort)
        else:
            task.cancel()  # the server tearing the task down
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        still_canceling = task.cancelling() if hasattr(task, "cancelling") else 0
        return p, outcome, still_canceling

    p, outcome, still = asyncio.run(scenario("canceled"))
    assert isinstance(outcome, Canceled) and still == 0 and not p.done  # the owner writes it
    p, outcome, still = asyncio.run(scenario("timeout"))
    assert isinstance(outcome, PredictTimeout) and still == 0
    p, outcome, _ = asyncio.run(scenario(None))
    assert isinstance(outcome, asyncio.CancelledError)
    assert p.status == "canceled" and p.ctx.cancel_reason == "disconnected"
    p, outcome, _ = asyncio.run(scenario(None, end_on_teardown=False))
    assert isinstance(outcome, asyncio.CancelledError)
    assert not p.done and p.ctx.cancel_reason == "disconnected"
