"""`impasto deploy ray` on a real local Ray instance, requests over HTTP through Ray Serve's
proxy: replicas that name themselves, one queue (429 when every replica is full), events
and streams from a replica, a killed replica replaced, secrets that never reach Ray's logs,
autoscaling on queue depth, --status and --delete, and jobs on a shared PostgreSQL queue.
Gates (files the model waits for) hold requests on replicas; nothing waits on a clock."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import pytest
from PIL import Image

from jobs_fixtures import until
from ray_fixtures import TINY_SD, RayInstance, package_copy, retrying, start_ray

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
SECRET = "s3cr3t-v4lue-for-ray"
REPLICA = "X-Impasto-Replica"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[RayInstance]:
    yield from start_ray()


@pytest.fixture(scope="module")
def gate(ray_instance, tmp_path_factory):
    """The gate package with two replicas (one slot, no queue each) at /gate."""
    folder = package_copy(tmp_path_factory.mktemp("ray-gate"))
    url = ray_instance.deploy(folder, "gate", env={"IMPASTO_SECRET_TOKEN": SECRET})
    with httpx.Client(base_url=url, timeout=120) as client:
        # the proxy's router learns of the replicas after the deployment is up: quick
        # requests until both have answered, so the tests start with both routable
        seen: set[str] = set()

        def both_answered() -> bool:
            seen.add(client.post("/work", json={"steps": 1}).headers.get(REPLICA, ""))
            return len(seen - {""}) == 2

        until(both_answered, timeout=120)
        yield client


def arrivals(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_two_replicas_both_serve_and_one_queue_refuses_the_rest(gate, tmp_path):
    held, arrived = tmp_path / "open", tmp_path / "arrived"
    body = {"gate": str(held), "arrived": str(arrived)}
    with ThreadPoolExecutor(4) as pool:
        try:
            first = [pool.submit(gate.post, "/work", json=body) for _ in range(2)]
            until(lambda: len(arrivals(arrived)) == 2)  # one on each replica (one slot each)
            # Every replica's runner is full (max_queue 0): Ray's router holds one more
            # (max_queued_requests: at least 1) and refuses the next with impasto's 429.
            more = [pool.submit(gate.post, "/work", json={"steps": 1}) for _ in range(2)]
            done, _ = wait(more, return_when=FIRST_COMPLETED)
            refused = next(iter(done)).result()
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["type"] == "overloaded"
        finally:
            held.touch()
        answers = [f.result() for f in first]
        later = [f.result() for f in more if f not in done]
    assert [a.status_code for a in answers + later] == [200, 200, 200], [a.text for a in answers]
    replicas = {a.headers[REPLICA] for a in answers}
    assert len(replicas) == 2, replicas
    assert {a.json()["pid"] for a in answers} == {int(p) for p in arrivals(arrived)}
    assert len(set(arrivals(arrived))) == 2  # two processes
    assert len(answers[0].headers.get_list("X-Request-ID")) == 1


def test_validation_errors_and_events_come_from_the_replica(gate):
    bad = gate.post("/work", json={"steps": "many"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "steps", bad.text
    assert bad.headers["X-Request-ID"]
    # progress events of a run on a replica reach an SSE client of the ingress
    with gate.stream(
        "POST", "/work", json={"steps": 3}, headers={"Accept": "text/event-stream"}
    ) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert text.count("event: progress") == 3, text
    assert '"steps": 3' in text or '"steps":3' in text
    # a streaming endpoint's chunks, as they come
    chunks = gate.post("/count", json={"n": 4})
    assert chunks.status_code == 200, chunks.text
    assert [json.loads(line)["i"] for line in chunks.text.split()] == [0, 1, 2, 3]


def test_secrets_reach_replicas_but_never_rays_logs_or_status(gate, ray_instance):
    assert gate.post("/secret", json={}).json() == {"length": len(SECRET)}
    status = ray_instance.impasto("deploy", "ray", "--status")
    assert status.returncode == 0 and SECRET not in status.stdout
    for path in Path(ray_instance.temp_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_killed_replica_is_replaced_and_requests_keep_succeeding(gate, ray_instance):
    import ray

    names = [  # Ray Serve's replica actors of the model deployment
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::gate#model-gate#")
    ]
    assert len(names) == 2, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    served = [retrying(lambda: gate.post("/work", json={"steps": 1})) for _ in range(6)]
    assert [r.status_code for r in served] == [200] * 6, [r.text for r in served]
    until(lambda: ray_instance.replicas("gate", "model-gate") == {"RUNNING": 2}, timeout=120)
    now = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert names[0] not in now and names[1] in now  # a new replica took the killed one's place


def test_autoscaling_adds_a_replica_when_requests_queue(ray_instance, tmp_path):
    folder = package_copy(
        tmp_path,
        runtime={"predict_concurrency": 1, "max_queue": 4},
        ray={
            "num_replicas": None,
            "autoscaling_config": {
                "min_replicas": 1,
                "max_replicas": 2,
                "upscale_delay_s": 0,
                "downscale_delay_s": 600,
                "look_back_period_s": 0.5,
            },
        },
    )
    url = ray_instance.deploy_here([folder], "auto")
    held, arrived = tmp_path / "open", tmp_path / "arrived"
    with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(3) as pool:
        body = {"gate": str(held), "arrived": str(arrived)}
        queued = [pool.submit(client.post, "/work", json=body) for _ in range(3)]
        until(lambda: len(arrivals(arrived)) == 1)  # one runs, two wait in its runner
        until(lambda: ray_instance.replicas("auto", "model-gate") == {"RUNNING": 2}, timeout=120)
        fresh = client.post("/work", json={"steps": 1})  # the new replica is free
        held.touch()
        answers = [f.result() for f in queued]
    assert fresh.status_code == 200
    assert [a.status_code for a in answers] == [200] * 3
    first = {a.headers[REPLICA] for a in answers}
    assert len(first) == 1 and fresh.headers[REPLICA] not in first


def test_jobs_from_any_ingress_run_on_the_shared_postgres_queue(ray_instance, tmp_path, request):
    from jobs_fixtures import job_settings, store_urls, wait_status

    store = store_urls("postgres", tmp_path, request)
    folder = package_copy(
        tmp_path,
        ray={"num_replicas": 2, "ingress_replicas": 2},
        jobs=job_settings(store, tmp_path),
    )
    # two packages: the gate (default) and the tiny Stable Diffusion, a deployment each
    url = ray_instance.deploy_here([folder, TINY_SD], "jobs")
    with httpx.Client(base_url=url, timeout=60) as client:
        submitted = client.post(
            "/predictions",
            json={"input": {"steps": 2}},
            headers={"Prefer": "respond-async"},
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        done = wait_status(client, job["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"] == {"step": 2, "total": 2}
        # every ingress replica sees it, progress events included: the store is shared
        from impasto.client import _parse

        seen: dict[str, list[str]] = {}

        def both_ingresses() -> bool:
            sse = {"Accept": "text/event-stream"}
            with client.stream("GET", f"/predictions/{job['id']}", headers=sse) as r:
                seen[r.headers[REPLICA]] = [e.kind for e in _parse(r.iter_lines())]
            return len(seen) == 2

        until(both_ingresses, every=0)
        for kinds in seen.values():
            assert kinds[0] == "start" and "progress" in kinds and kinds[-1] == "completed", kinds
        # the second package's replica draws through the same ingress
        image = client.post(
            "/v1/models/tiny-sd/text2img",
            json={"prompt": "a red cat", "width": 64, "height": 64, "num_inference_steps": 2},
            headers={"Accept": "image/png"},
        )
        assert image.status_code == 200, image.text
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)
        assert image.headers[REPLICA] not in seen  # a model replica, not an ingress


def test_status_and_delete(gate, ray_instance):
    shown = ray_instance.status("gate")
    assert shown["status"] == "RUNNING", shown
    assert shown["deployments"]["model-gate"]["replicas"] == {"RUNNING": 2}
    assert shown["deployments"]["ingress"]["status"] == "HEALTHY"
    assert gate.get("/health/ready").status_code == 200
    gone = ray_instance.impasto("deploy", "ray", "--delete", "--name", "gate")
    assert gone.returncode == 0, gone.stderr
    from ray import serve

    assert "gate" not in serve.status().applications
    assert gate.get("/health/ready").status_code == 404
