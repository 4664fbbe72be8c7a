"""Jobs survive what servers go through, against `impasto serve` processes:

- ``kill -9`` while a job runs (the tiny diffusers pipeline on SQLite, the gate model on
  PostgreSQL): after a restart every accepted job ends, none ran twice, and the one that
  was running is retried, or failed once it has had ``max_attempts``;
- two servers on one PostgreSQL queue split the jobs and never run one twice;
- SIGTERM: no new job starts, the running one finishes within the grace period (or goes
  back to the queue past it), queued ones stay queued for the next server;
- a canceled diffusers job stops within one denoising step (the server's step counter).

Ground truth for "ran" is the servers' own words (their logs) and the model's (the gate
model appends each run's id to a file), not only the store's record.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from conftest import PACKAGES, REPO, metric
from jobs_fixtures import (
    job_settings,
    painter_entry,
    store_urls,
    thread_server,
    until,
    write_models_yaml,
)

pytestmark = pytest.mark.timeout(900)
TERMINAL = ("succeeded", "failed", "canceled")


def _client(server):
    from impasto import Client

    return Client(server.url, timeout=60)


def _started(*servers) -> Counter:
    """How many attempts each job started, from the servers' logs."""
    runs: Counter = Counter()
    for server in servers:
        for line in server.logs().splitlines():
            if ": attempt " in line and " started on " in line:
                runs[line.split("job ", 1)[1].split(":", 1)[0]] += 1
    return runs


# kill -9 ----------------------------------------------------------------------------------------
def _assert_recovered(final, ids, attempts, runs):
    """After the restart: all ended; the interrupted job retried or failed as configured;
    every other job ran once."""
    assert all(job["status"] in TERMINAL for job in final.values())
    interrupted = final[ids[0]]
    lost = interrupted["attempts"][0]
    assert lost["outcome"] == "lost" and "lease expired" in lost["error"], interrupted
    if attempts == 2:  # retried on the new server, and finished there
        assert interrupted["status"] == "succeeded", interrupted
        assert [a["n"] for a in interrupted["attempts"]] == [1, 2]
    else:  # out of attempts: failed, saying why
        assert interrupted["status"] == "failed"
        assert "jobs.max_attempts=1" in interrupted["error"]
        assert "stopped without finishing it" in interrupted["error"]
    for ident in ids[1:]:
        assert final[ident]["status"] == "succeeded", final[ident]
        assert len(final[ident]["attempts"]) == 1
    assert runs[ids[0]] == attempts  # once per attempt, never two at once
    assert all(runs[ident] == 1 for ident in ids[1:]), runs


def test_kill_9_while_a_diffusers_job_runs_then_restart(
    tmp_path, request, serve_process, three_models
):
    """The tiny pipeline on SQLite: the job under the kill is retried on the new server."""
    url = store_urls("sqlite", tmp_path, request)
    settings = job_settings(url, tmp_path, concurrency=1, lease_s=2, max_attempts=2)
    sd = {"name": "sd", "path": str(REPO / "examples" / "tiny-sd")}
    models = write_models_yaml(tmp_path, settings, [sd])
    env = {"IMPASTO_HOME": str(three_models.home)}  # the weights are built already
    first = serve_process(None, "--models", str(models), env=env)
    first.wait_ready(300)
    client = _client(first)
    slow = {"prompt": "slow", "num_inference_steps": 20}
    fast = {"prompt": "fast", "num_inference_steps": 1}
    ids = [client.submit(slow, model="sd", endpoint="text2img")["id"]]
    ids += [
        client.submit({**fast, "seed": i}, model="sd", endpoint="text2img")["id"] for i in range(5)
    ]
    for event in client.stream(ids[0], timeout=300):
        if event.kind == "progress":
            break  # the slow job is running: kill the server under it
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)
    client.close()
    second = serve_process(None, "--models", str(models), env=env)
    second.wait_ready(300)
    with _client(second) as again:
        final = {ident: again.wait(ident, timeout=300) for ident in ids}
    _assert_recovered(final, ids, 2, _started(first, second))


def test_kill_9_on_postgres_fails_the_job_past_max_attempts(tmp_path, request, serve_process):
    """The gate model on PostgreSQL, ``max_attempts: 1``: the job under the kill fails with
    the reason; the model's own record says which jobs ran, and how often."""
    url = store_urls("postgres", tmp_path, request)
    settings = job_settings(url, tmp_path, concurrency=1, lease_s=2, max_attempts=1)
    models = write_models_yaml(
        tmp_path, settings, [{"name": "gate", "path": str(PACKAGES / "jobs_gate")}]
    )
    ran = tmp_path / "runs.txt"
    env = {"GATE_RUNS": str(ran)}
    first = serve_process(None, "--models", str(models), env=env)
    first.wait_ready()
    gate = tmp_path / "open"
    with _client(first) as client:
        ids = [client.submit({"steps": 2, "gate": str(gate)})["id"]]
        ids += [client.submit({"steps": 1})["id"] for _ in range(5)]
        until(lambda: client.get(ids[0])["status"] == "processing")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)
    gate.touch()
    second = serve_process(None, "--models", str(models), env=env)
    second.wait_ready()
    with _client(second) as again:
        final = {ident: again.wait(ident, timeout=120) for ident in ids}
    _assert_recovered(final, ids, 1, _started(first, second))
    assert Counter(ran.read_text().split()) == dict.fromkeys(ids, 1)  # the model agrees


# two servers, one queue -------------------------------------------------------------------------
def test_two_servers_on_one_postgres_queue_split_the_jobs(tmp_path, request, serve_process):
    url = store_urls("postgres", tmp_path, request)
    models = write_models_yaml(
        tmp_path,
        job_settings(url, tmp_path),
        [{"name": "gate", "path": str(PACKAGES / "jobs_gate")}],
    )
    marks = [tmp_path / "runs-a.txt", tmp_path / "runs-b.txt"]
    servers = [
        serve_process(None, "--models", str(models), env={"GATE_RUNS": str(mark)}) for mark in marks
    ]
    for server in servers:
        server.wait_ready()
    gate = tmp_path / "open"
    with _client(servers[0]) as client:
        ids = [client.submit({"steps": 2, "gate": str(gate)})["id"] for _ in range(6)]

        def both_busy():
            running = list(client.list(status="processing"))
            workers = {job["attempts"][-1]["worker"] for job in running}
            return len(running) == 2 and len(workers) == 2

        until(both_busy)  # one job on each server, each held at its gate
        gate.touch()
        final = [client.wait(ident, timeout=120) for ident in ids]
    assert [job["status"] for job in final] == ["succeeded"] * 6
    assert all(len(job["attempts"]) == 1 for job in final)
    ran = [mark.read_text().split() for mark in marks]
    assert all(ran), ran  # both servers worked
    assert sorted(ran[0] + ran[1]) == sorted(ids)  # every job ran, none twice


# SIGTERM ----------------------------------------------------------------------------------------
def _gate_server(serve_process, tmp_path, grace: float, url: str):
    entry = {
        "name": "gate",
        "path": str(PACKAGES / "jobs_gate"),
        "overrides": {"runtime": {"shutdown_grace_s": grace}},
    }
    models = write_models_yaml(tmp_path, job_settings(url, tmp_path), [entry])
    server = serve_process(None, "--models", str(models))
    server.wait_ready()
    return server, models


def _store(url: str):
    from impasto.jobs.store import open_store

    return open_store(url)


def test_sigterm_finishes_the_running_job_and_leaves_the_queue(tmp_path, serve_process):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server, _ = _gate_server(serve_process, tmp_path, 60, url)
    gate = tmp_path / "open"
    with _client(server) as client:
        running = client.submit({"steps": 2, "gate": str(gate)})["id"]
        queued = [client.submit({"steps": 1})["id"] for _ in range(2)]
        until(lambda: client.get(running)["status"] == "processing")
        server.proc.send_signal(signal.SIGTERM)
        until(lambda: "shutting down" in server.logs())
        gate.touch()  # within the grace period: it finishes
    assert server.proc.wait(60) == 0
    store = _store(url)
    try:
        assert store.get(running).status == "succeeded"
        for ident in queued:
            job = store.get(ident)
            assert job.status == "queued" and job.attempts == ()
    finally:
        store.close()


def test_past_the_grace_period_a_running_job_goes_back_to_the_queue(tmp_path, serve_process):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server, models = _gate_server(serve_process, tmp_path, 0.5, url)
    gate = tmp_path / "open"
    with _client(server) as client:
        held = client.submit({"steps": 2, "gate": str(gate)})["id"]
        until(lambda: client.get(held)["status"] == "processing")
        server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    store = _store(url)
    try:
        job = store.get(held)
    finally:
        store.close()
    assert job.status == "queued"
    assert [a.outcome for a in job.attempts] == ["interrupted"]
    gate.touch()
    again = serve_process(None, "--models", str(models))
    again.wait_ready()
    with _client(again) as client:
        done = client.wait(held, timeout=120)
    assert done["status"] == "succeeded" and [a["n"] for a in done["attempts"]] == [1, 2]


# cancel within a denoising step -------------------------------------------------------------------
def test_canceling_a_diffusers_job_stops_it_within_a_step(three_models):
    steps = "impasto_progress_steps_total"
    labels = {"model": "sd", "endpoint": "text2img"}
    client = _client(three_models)
    before = metric(three_models.client.get("/metrics").text, steps, **labels)
    payload = {"prompt": "x", "seed": 1, "num_inference_steps": 50, "width": 128, "height": 128}
    job = client.submit(payload, model="sd", endpoint="text2img")
    for event in client.stream(job["id"], timeout=300):
        if event.kind == "progress" and event.data["step"] >= 2:
            break
    client.cancel(job["id"])
    final = client.wait(job["id"], timeout=300)
    assert final["status"] == "canceled" and final["attempts"][-1]["outcome"] == "canceled"
    # one more one-step job runs only once the canceled call has left the pipeline
    one = client.submit({"prompt": "x", "num_inference_steps": 1}, model="sd", endpoint="text2img")
    assert client.wait(one["id"], timeout=300)["status"] == "succeeded"
    ran = metric(three_models.client.get("/metrics").text, steps, **labels) - before - 1
    assert 2 <= ran < 50, ran  # the server stopped computing well before the last step
    assert final["progress"]["step"] < 50
    client.close()


# webhooks across a restart ------------------------------------------------------------------------
def test_a_restart_resumes_the_delivery_of_a_terminal_webhook(tmp_path, receiver):
    """The receiver is down while the first server tries; the next server on the same store
    delivers the same message (same ``webhook-id``), its tries counted across both."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    settings = job_settings(url, tmp_path, webhooks={"timeout_s": 2})
    models = write_models_yaml(tmp_path, settings, [painter_entry()])
    name = f"resume-{tmp_path.name}"
    receiver.fail(name, 10**6)
    first = thread_server(models, tmp_path / "home")
    body = {
        "input": {"prompt": "resume"},
        "webhook": receiver.url(name),
        "webhook_events_filter": ["completed"],
    }
    r = first.client.post("/predictions", json=body, headers={"Prefer": "respond-async"})
    job = r.json()
    receiver.wait(name, lambda calls: len(calls) >= 2)  # refused twice
    first.stop()
    receiver.fail(name, 0)
    second = thread_server(models, tmp_path / "home")
    try:
        calls = receiver.wait(name, lambda _: 200 in receiver.answers.get(name, []))
        store = _store(url)
        try:
            delivery = until(lambda: _delivered(store, job["id"]))
        finally:
            store.close()
    finally:
        second.stop()
    assert len({headers["webhook-id"] for headers, _ in calls}) == 1
    answers = receiver.answers[name]
    assert answers[-1] == 200 and answers.count(200) == 1 and len(answers) >= 3
    # the first server recorded at least its first try (the second waited for that record);
    # a try it was making when it stopped may have reached the receiver unrecorded
    assert 2 <= delivery["attempts"] <= len(answers)


def _delivered(store, job_id):
    [delivery] = store.deliveries_of(job_id)
    return delivery if delivery["status"] == "delivered" else None
