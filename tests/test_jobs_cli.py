"""The guards around jobs (private webhook targets refused, a per-job timeout) and the
command line: ``impasto predict --async/--wait`` and ``impasto jobs list|show|cancel|prune``
against a running server (``--url``) and the local store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from jobs_fixtures import job_settings, painter_entry, thread_server, write_models_yaml

pytestmark = pytest.mark.timeout(300)
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Private webhook targets refused (the default), jobs time out after 1 s."""
    tmp = tmp_path_factory.mktemp("jobs-guarded")
    settings = job_settings(
        f"sqlite:///{tmp / 'jobs.db'}", tmp, timeout_s=1, webhooks={"allow_private_urls": False}
    )
    srv = thread_server(write_models_yaml(tmp, settings, [painter_entry()]), tmp / "home")
    srv.tmp = tmp
    srv.painter = srv.app.state.packages[0].spec.cls
    yield srv
    srv.painter.release.set()
    srv.stop()


def _cli(*args: str) -> tuple[int, str]:
    from impasto.cli.main import app

    result = CliRunner().invoke(app, list(args))
    # what a command prints is on stdout; log lines and errors go to stderr
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "http://10.0.0.7/hook",
        "ftp://example.com/hook",
    ],
)
def test_private_webhook_targets_are_refused(guarded, url):
    r = guarded.client.post(
        "/predictions", json={"input": {"prompt": "x"}, "webhook": url}, headers=ASYNC
    )
    assert r.status_code == 422, r.text
    [detail] = r.json()["detail"]
    assert detail["loc"] == ["body", "webhook"]
    assert "allow_private_urls" in detail["msg"] or "http(s)" in detail["msg"]


def test_a_job_past_its_timeout_fails_with_the_reason(guarded):
    from impasto import Client

    cls = guarded.painter
    cls.hold.clear()
    cls.release.clear()
    with Client(guarded.url) as client:
        job = client.submit({"prompt": "slow", "hold": True})
        done = client.wait(job["id"], timeout=60)
        cls.release.set()
    assert done["status"] == "failed"
    assert done["error"] == "the job ran past its timeout of 1.0 s (jobs.timeout_s)"


def test_predict_async_and_wait_then_jobs_list_show_cancel(guarded, tmp_path):
    code, out = _cli(
        "predict", "--url", guarded.url, "--async", "-d", '{"prompt": "a cli job", "seed": 3}'
    )
    assert code == 0, out
    ident = out.strip()
    code, out = _cli("jobs", "show", ident, "--url", guarded.url)
    assert code == 0 and json.loads(out)["id"] == ident
    png = tmp_path / "out.png"
    code, out = _cli(
        "predict", "--url", guarded.url, "--wait", "-d", '{"prompt": "wait"}', "-o", str(png)
    )
    assert code == 0, out
    assert Image.open(png).size == (16, 16)
    code, out = _cli("jobs", "list", "--url", guarded.url, "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and ident in [j["id"] for j in listed]
    code, out = _cli("jobs", "cancel", "nope", "--url", guarded.url)
    assert code == 5 and "404" in out
    code, out = _cli("predict", "--async", "-d", "{}")
    assert code == 2 and "--url" in out


def test_jobs_in_the_local_store_and_prune(guarded):
    store = f"sqlite:///{guarded.tmp / 'jobs.db'}"
    results = str(guarded.tmp / "results")
    code, out = _cli("jobs", "list", "--store", store, "--results", results, "--json")
    jobs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and jobs
    done = next(j for j in jobs if j["status"] == "succeeded" and j["output"])
    code, out = _cli("jobs", "show", done["id"], "--store", store, "--results", results)
    shown = json.loads(out)
    assert shown["output"].startswith("file://")  # where the result lives in the store
    assert Path(shown["output"].removeprefix("file://")).is_file()
    code, out = _cli("jobs", "prune", "--older-than", "0", "--store", store, "--results", results)
    assert code == 0 and "pruned" in out
    assert not Path(shown["output"].removeprefix("file://")).exists()
    code, out = _cli("jobs", "show", done["id"], "--store", store)
    assert code == 5
    code, out = _cli("jobs", "prune", "--older-than", "soon", "--store", store)
    assert code == 2 and "duration" in out
