"""The job API against a real server, once per job store (SQLite, PostgreSQL): Cog's async
routes, the envelope, idempotent PUT, validation at submit, failures as data, the list,
reconnecting SSE, cancel (queued and running), the bounded queue, a streaming endpoint as a
job, signed webhooks with retries, and impasto.Client. Gates (the painter's ``hold``, the
steps model's ``gate``) hold jobs where a test needs them; nothing waits on a clock."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from conftest import PACKAGES, metric
from jobs_fixtures import (
    SECRET,
    job_settings,
    painter_entry,
    store_urls,
    thread_server,
    until,
    wait_status,
    write_models_yaml,
)

pytestmark = pytest.mark.timeout(300)
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"jobs-api-{request.param}")
    store = store_urls(request.param, tmp, request)
    models = [painter_entry(), {"name": "steps", "path": str(PACKAGES / "steps")}]
    srv = thread_server(
        write_models_yaml(tmp, job_settings(store, tmp, max_queued=6), models), tmp / "home"
    )
    srv.store_url = store
    srv.painter = next(p for p in srv.app.state.packages if p.name == "painter").spec.cls
    srv.steps = srv.app.state.models.get("steps")
    yield srv
    srv.painter.release.set()
    srv.stop()


def _submit(server, body, path="/predictions", headers=ASYNC):
    r = server.client.post(path, json=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def _png(server, url):
    r = httpx.get(url)
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))


# submit, run, envelope ------------------------------------------------------------------------
def test_a_job_is_committed_then_runs_and_its_images_are_urls(server):
    job = _submit(server, {"input": {"prompt": "a cat", "num_images": 2, "seed": 1}})
    assert job["status"] == "starting" and job["model"] == "painter"
    assert job["input"] == {"prompt": "a cat", "num_images": 2, "seed": 1}
    assert job["urls"]["get"].endswith(f"/predictions/{job['id']}")
    # accepted means committed: the store has it, whatever the worker did meanwhile
    assert server.client.get(f"/predictions/{job['id']}").status_code == 200
    done = wait_status(server.client, job["id"])
    assert done["status"] == "succeeded" and done["error"] is None, done
    assert [_png(server, url).size for url in done["output"]] == [(16, 16), (16, 16)]
    assert done["progress"] == {"step": 4, "total": 4}
    assert "painting 'a cat'" in done["logs"]
    assert done["metrics"]["predict_time"] > 0 and done["metrics"]["queue_time"] >= 0
    assert done["completed_at"] >= done["started_at"] >= done["created_at"]
    [attempt] = done["attempts"]
    assert attempt["n"] == 1 and attempt["outcome"] == "succeeded"
    # the result URLs are signed: another path or expiry is refused
    url = httpx.URL(done["output"][0])
    forged = url.copy_set_param("expires", str(int(url.params["expires"]) + 1))
    assert httpx.get(forged).status_code == 403
    assert httpx.get(url.copy_remove_param("sig")).status_code == 403


def test_put_is_idempotent_and_a_retry_never_runs_twice(server):
    cls = server.painter
    cls.hold.clear()
    cls.release.clear()
    ident = f"put-{server.store_url[:6]}"
    runs = {"model": "painter", "endpoint": "paint", "outcome": "ok"}
    before = metric(server.client.get("/metrics").text, "impasto_requests_total", **runs)
    body = {"input": {"prompt": "held", "hold": True}}
    first = server.client.put(f"/predictions/{ident}", json=body, headers=ASYNC)
    assert first.status_code == 202 and first.json()["id"] == ident
    assert cls.hold.wait(30)  # it runs now
    again = server.client.put(f"/predictions/{ident}", json=body, headers=ASYNC)
    assert again.status_code == 202 and again.json()["status"] == "processing"
    assert again.json()["id"] == ident
    cls.release.set()
    done = wait_status(server.client, ident)
    assert done["status"] == "succeeded" and len(done["attempts"]) == 1
    after = metric(server.client.get("/metrics").text, "impasto_requests_total", **runs)
    assert after - before == 1
    mismatch = server.client.put("/predictions/a", json={"id": "b", "input": {"prompt": "x"}})
    assert mismatch.status_code == 422
    assert mismatch.json()["detail"][0]["loc"] == ["body", "id"]
    # without respond-async, PUT waits for the result as Cog's does
    waited = server.client.put(f"/predictions/{ident}-w", json={"input": {"prompt": "w"}})
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded"


def test_bad_input_is_refused_at_submit_and_nothing_is_queued(server):
    count = len(list(_client(server).list()))
    r = server.client.post("/predictions", json={"input": {"prompt": ""}}, headers=ASYNC)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "input", "prompt"]
    r = server.client.post(
        "/predictions", json={"input": {"prompt": "x", "width": 5000}}, headers=ASYNC
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input", "width"]
    r = server.client.post(
        "/predictions",
        json={"input": {"prompt": "x"}, "webhook_events_filter": ["start", "bogus"]},
        headers=ASYNC,
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "webhook_events_filter"]
    r = server.client.post(
        "/predictions",
        content=b"{nope",
        headers={**ASYNC, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.text.startswith("Failed to parse the request body")
    r = server.client.put("/predictions/x", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert server.client.get("/predictions/unknown").status_code == 404
    assert server.client.post("/predictions/unknown/cancel").status_code == 404
    assert len(list(_client(server).list())) == count


def test_a_model_failure_is_data_not_an_http_error(server):
    job = _submit(server, {"input": {"prompt": "x", "fail": True}})
    done = wait_status(server.client, job["id"])
    assert done["status"] == "failed" and "dropped its brush" in done["error"]
    assert server.client.get(f"/predictions/{job['id']}").status_code == 200
    assert done["attempts"][0]["outcome"] == "failed"  # a model error is not retried


# the list -------------------------------------------------------------------------------------
def test_the_list_pages_newest_first_and_filters(server):
    client = _client(server)
    ids = [client.submit({"n": 1}, model="steps:count")["id"] for _ in range(5)]
    for ident in ids:
        client.wait(ident, timeout=120)
    page = server.client.get("/predictions", params={"model": "steps", "page_size": 2}).json()
    assert [j["id"] for j in page["results"]] == ids[::-1][:2]
    assert page["previous"] is None and page["next"]
    second = server.client.get(page["next"]).json()
    assert [j["id"] for j in second["results"]] == ids[::-1][2:4]
    back = server.client.get(second["previous"]).json()
    assert [j["id"] for j in back["results"]] == ids[::-1][:2]
    listed = [j["id"] for j in client.list(model="steps", page_size=2)]
    assert listed[:5] == ids[::-1]
    failed = server.client.get("/predictions", params={"status": "failed"}).json()["results"]
    assert failed and all(j["status"] == "failed" for j in failed)
    bad = server.client.get("/predictions", params={"status": "done"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "status"


# events ---------------------------------------------------------------------------------------
def test_the_event_stream_resumes_where_a_client_left_off(server):
    cls = server.painter
    cls.hold.clear()
    cls.release.clear()
    client = _client(server)
    job = client.submit(
        {"prompt": "resume", "hold": True, "num_inference_steps": 6}, model="painter"
    )
    seen = []
    for event in client.stream(job["id"], timeout=120):
        seen.append(event)
        if event.kind == "log":
            break  # the client goes away while the job is held, before its steps
    assert [e.kind for e in seen] == ["start", "log"]
    cls.release.set()
    with server.client.stream(
        "GET",
        f"/predictions/{job['id']}",
        headers={"Accept": "text/event-stream", "Last-Event-ID": seen[-1].id},
    ) as r:
        from impasto.client import _parse

        rest = list(_parse(r.iter_lines()))
    kinds = [e.kind for e in rest]
    assert "start" not in kinds and "log" not in kinds  # nothing seen before comes again
    steps = [e.data["step"] for e in rest if e.kind == "progress"]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    assert kinds[-2:] == ["output", "completed"] and rest[-1].data["status"] == "succeeded"
    assert rest[-2].data["output"].startswith("http")  # one image: one URL, as Cog does
    ids = [e.id for e in seen + rest]
    assert len(ids) == len(set(ids))


def test_a_streaming_endpoint_as_a_job(server):
    client = _client(server)
    job = client.submit({"prompt": "fox", "n": 3}, model="painter", endpoint="tokens")
    events = list(client.stream(job["id"], timeout=120))
    chunks = [e.data for e in events if e.kind == "output"]
    assert chunks == [{"chunk": f"fox-{i}", "index": i} for i in range(3)]
    assert events[-1].data["output"] == ["fox-0", "fox-1", "fox-2"]


# cancel ---------------------------------------------------------------------------------------
def test_a_canceled_queued_job_never_starts(server):
    cls = server.painter
    cls.hold.clear()
    cls.release.clear()
    client = _client(server)
    running = client.submit({"prompt": "held", "hold": True}, model="painter")
    assert cls.hold.wait(30)
    queued = client.submit({"prompt": "never"}, model="painter")
    assert client.get(queued["id"])["status"] == "starting"
    canceled = client.cancel(queued["id"])
    assert canceled["status"] == "canceled"
    cls.release.set()
    assert client.wait(running["id"], timeout=120)["status"] == "succeeded"
    final = client.get(queued["id"])
    assert final["status"] == "canceled" and final["started_at"] is None
    assert final["attempts"] == []


def test_a_canceled_running_job_stops_at_its_next_step(server):
    model = server.steps.model
    model.gate.clear()
    model.blocked.clear()
    client = _client(server)
    done_before = model.steps_done
    job = client.submit({"n": 5, "block_at": 1}, model="steps:count")
    assert model.blocked.wait(30)  # it ran one step and waits before the second
    assert client.cancel(job["id"])["status"] in ("processing", "canceled")
    model.gate.set()
    final = client.wait(job["id"], timeout=120)
    assert final["status"] == "canceled" and final["error"] is None
    assert model.steps_done - done_before == 1  # the step after the cancel never ran
    assert final["attempts"][-1]["outcome"] == "canceled"


def test_the_queue_is_bounded(server):
    cls = server.painter
    cls.hold.clear()
    cls.release.clear()
    client = _client(server)
    running = client.submit({"prompt": "held", "hold": True}, model="painter")
    assert cls.hold.wait(30)
    queued = [client.submit({"prompt": f"q{i}"}, model="painter")["id"] for i in range(6)]
    r = server.client.post(
        "/predictions", json={"input": {"prompt": "one too many"}}, headers=ASYNC
    )
    assert r.status_code == 429 and r.headers["retry-after"]
    assert "jobs.max_queued" in r.json()["error"]
    for ident in queued:
        client.cancel(ident)
    cls.release.set()
    client.wait(running["id"], timeout=120)


# webhooks -------------------------------------------------------------------------------------
def test_webhooks_are_signed_and_filtered(server, receiver):
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    name = f"all-{server.store_url[:6]}"
    job = _submit(server, {"input": {"prompt": "hook", "seed": 2}, "webhook": receiver.url(name)})
    calls = receiver.wait(name, lambda c: any(b'"succeeded"' in body for _, body in c))
    hook = Webhook(SECRET)
    bodies = [hook.verify(body, headers) for headers, body in calls]  # raises if forged
    assert all(b["id"] == job["id"] for b in bodies)
    assert any(b["status"] == "processing" and b["output"] is None for b in bodies)  # start
    [done] = [b for b in bodies if b["status"] == "succeeded"]  # completed, once
    assert done["output"].startswith("http") and done["metrics"]["predict_time"] > 0
    only = f"done-{server.store_url[:6]}"
    job = _submit(
        server,
        {
            "input": {"prompt": "hook"},
            "webhook": receiver.url(only),
            "webhook_events_filter": ["completed"],
        },
    )
    wait_status(server.client, job["id"])
    calls = receiver.wait(only, lambda c: len(c) >= 1)
    assert [json.loads(body)["status"] for _, body in calls] == ["succeeded"]
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(calls[0][1], calls[0][0])


def test_a_terminal_webhook_is_retried_until_delivered(server, receiver):
    from impasto.jobs.store import open_store

    name = f"retry-{server.store_url[:6]}"
    receiver.fail(name, 2)
    job = _submit(
        server,
        {
            "input": {"prompt": "retry"},
            "webhook": receiver.url(name),
            "webhook_events_filter": ["completed"],
        },
    )
    receiver.wait(name, lambda c: len(c) >= 3)
    assert receiver.answers[name] == [503, 503, 200]
    ids = {headers["webhook-id"] for headers, _ in receiver.calls[name]}
    assert len(ids) == 1  # the same message each time: receivers can dedupe
    store = open_store(server.store_url)
    try:  # the store records each try (the third is recorded just after it was answered)
        delivery = until(lambda: _delivered(store, job["id"]))
    finally:
        store.close()
    assert delivery["attempts"] == 3 and delivery["last_error"] is None


def _delivered(store, job_id):
    [delivery] = store.deliveries_of(job_id)
    return delivery if delivery["status"] == "delivered" else None


def _client(server):
    from impasto import Client

    return Client(server.url, timeout=120)
