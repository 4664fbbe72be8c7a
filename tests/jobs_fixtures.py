"""Fixtures for the job tests: a PostgreSQL database per test module, S3 on loopback
(moto's server), a webhook receiver, and servers with a job store of either kind.

PostgreSQL is a throwaway cluster of the installed server (Debian's ``postgresql``
package, which ``.ci/run`` installs) started on 127.0.0.1 for the session, or the server at
``IMPASTO_TEST_POSTGRES_URL``. Without either the PostgreSQL cases skip, except in CI
(``IMPASTO_CI=1``), where they fail.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import PACKAGES, REPO, ThreadServer, free_port

sys.path.insert(0, str(REPO))

from bench.postgres import LocalPostgres, postgres_bindir

# A server of your own (the tests create and drop databases on it); default: a throwaway one
PG_URL: str | None = os.environ.get("IMPASTO_TEST_POSTGRES_URL") or None
IN_CI = bool(os.environ.get("IMPASTO_CI"))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TERMINAL = ("succeeded", "failed", "canceled")


# PostgreSQL -----------------------------------------------------------------------------------
def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; .ci/run installs PostgreSQL from Debian's packages")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    """An AUTOCOMMIT engine on a PostgreSQL server the tests may create databases on: the
    one at ``IMPASTO_TEST_POSTGRES_URL``, else a throwaway cluster of the installed
    PostgreSQL on 127.0.0.1."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    global PG_URL
    local: LocalPostgres | None = None
    if PG_URL is None:
        bindir = postgres_bindir()
        if bindir is None:
            _unavailable("no PostgreSQL installed (apt-get install postgresql)")
        local = LocalPostgres(bindir).start()
        PG_URL = local.url
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        if local is not None:
            local.stop()
        _unavailable(f"no PostgreSQL at {PG_URL} ({str(exc.orig).strip().splitlines()[0]})")
    yield engine
    engine.dispose()
    if local is not None:
        local.stop()


def new_database(admin: Any) -> Callable[[], None] | Any:
    """A fresh database on the server; returns (url, drop)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"impasto_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return url, drop


def store_urls(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    """A fresh job store of ``kind`` (``sqlite`` or ``postgres``), dropped after the test
    or module that asked for it."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'jobs.db'}"
    admin = request.getfixturevalue("postgres_admin")
    url, drop = new_database(admin)
    request.addfinalizer(drop)
    return url


# S3 -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3 on loopback; the AWS settings point every client (boto3, s3fs) at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _AWS}
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


_AWS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# webhooks -------------------------------------------------------------------------------------
class Receiver:
    """A webhook receiver on loopback: records every POST to ``/hook/{name}``; can answer
    the first few with an error. Tests wait on its condition, not on a clock."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.calls: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.failures: dict[str, int] = {}
        self.answers: dict[str, list[int]] = {}
        self.cond = threading.Condition()

        async def hook(request: Request) -> Response:
            name = request.path_params["name"]
            body = await request.body()
            with self.cond:
                left = self.failures.get(name, 0)
                status = 503 if left > 0 else 200
                if left > 0:
                    self.failures[name] = left - 1
                self.calls.setdefault(name, []).append((dict(request.headers), body))
                self.answers.setdefault(name, []).append(status)
                self.cond.notify_all()
            return Response(status_code=status)

        self.server = ThreadServer(
            Starlette(routes=[Route("/hook/{name}", hook, methods=["POST"])])
        )

    def url(self, name: str) -> str:
        return f"{self.server.url}/hook/{name}"

    def fail(self, name: str, times: int) -> None:
        with self.cond:
            self.failures[name] = times

    def wait(self, name: str, check: Callable[[list[Any]], bool], timeout: float = 60) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check(self.calls.get(name, [])):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhook {name}: got {self.calls.get(name)}")
                self.cond.wait(left)
            return list(self.calls.get(name, []))


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.server.start()
    yield r
    r.server.stop()


# servers --------------------------------------------------------------------------------------
def write_models_yaml(
    folder: Path, jobs: dict[str, Any], models: list[dict[str, Any]], **top: Any
) -> Path:
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"jobs": jobs, "models": models, **top}))
    return path


def job_settings(store: str, folder: Path, **more: Any) -> dict[str, Any]:
    """Jobs settings for a test server: fast polls and leases, private webhooks allowed."""
    settings: dict[str, Any] = {
        "url": store,
        "poll_interval_s": 0.2,
        "progress_interval_s": 0.05,
        "lease_s": 3,
        "results": {"url": str(folder / "results")},
        "webhooks": {"allow_private_urls": True, "backoff_s": 0.05, "max_backoff_s": 0.2},
    }
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


def thread_server(models_yaml: Path, home: Path) -> ThreadServer:
    """``build_app`` of a models.yaml in this process (so tests can open the painter's
    gates); ``IMPASTO_HOME`` is ``home`` while it is built."""
    from impasto import build_app
    from impasto.models_file import load_models_file

    saved = os.environ.get("IMPASTO_HOME")
    os.environ["IMPASTO_HOME"] = str(home)
    os.environ["IMPASTO_SECRET_WEBHOOK_SECRET"] = SECRET
    try:
        app = build_app(load_models_file(models_yaml))
        server = ThreadServer(app).start()
        server.app = app  # type: ignore[attr-defined]
        server.client.timeout = 120
        server.wait_ready(120)
    finally:
        if saved is None:
            os.environ.pop("IMPASTO_HOME", None)
        else:
            os.environ["IMPASTO_HOME"] = saved
    return server


def painter_entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "painter", "path": str(PACKAGES / "painter")}
    if overrides:
        entry["overrides"] = overrides
    return entry


def wait_status(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120
) -> dict[str, Any]:
    """The job once its status is one of ``statuses`` (followed over its event stream)."""
    from impasto import Client

    with Client(str(client.base_url)) as c:
        deadline = time.monotonic() + timeout
        job = c.get(job_id)
        while job["status"] not in statuses:
            if "processing" in statuses or "starting" in statuses:
                for event in c.stream(job_id, timeout=timeout):
                    if event.kind in ("start", "progress", "log", "completed"):
                        break
            else:
                c.wait(job_id, timeout=timeout)
            job = c.get(job_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is still {job['status']}")
        return job


def until(check: Callable[[], Any], timeout: float = 60, every: float = 0.05) -> Any:
    """``check()``'s first truthy value: for state that has no event to wait on (a row
    another process writes); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {check}")
        time.sleep(every)
