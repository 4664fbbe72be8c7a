"""Async jobs: how many jobs a server accepts per second on each job store, and what a job
costs end to end, against a synchronous ``/predict`` of the same no-op model.

Each store gets its own ``impasto serve`` of ``bench/packages/noop`` (SQLite WAL in a fresh
``$IMPASTO_HOME``; PostgreSQL as a throwaway server of the installed packages on
127.0.0.1). The sync baseline is ``POST /predict`` on the SQLite server. A jobs run is
``POST /predictions`` with ``Prefer: respond-async``: each 202 means the job was committed
(the worker runs it meanwhile, as in production); before the next run the queue drains, so
that no run pays for the one before. The end-to-end rows are one client in a loop: a
synchronous ``/predict``, then ``PUT /predictions/{id}`` without ``respond-async`` (submit,
commit, claim, run, commit the result, answer), which is the full cost of durability for
one prediction.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from .loadgen import Load, Request, Server, bench_env, free_port, median, percentile, run_load
from .postgres import LocalPostgres, postgres_bindir

PACKAGES = Path(__file__).resolve().parent / "packages"
TITLE = "Async jobs: accepted per second per store vs a synchronous /predict (no-op model)"
COLUMNS = [
    ("target", "target", "{}"),
    ("concurrency", "conc", "{}"),
    ("rps", "req/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("rps_ratio", "req/s x sync", "{:.2f}"),
    ("p50_added_ms", "p50 added ms", "{:+.2f}"),
    ("errors", "errors", "{}"),
]
CONCURRENCY = (1, 16)
PAYLOAD = {"text": "hello", "n": 1}
SYNC = "sync /predict"
SERVE = [sys.executable, "-m", "impasto.cli.main", "serve"]


def _models_yaml(folder: Path, url: str | None) -> Path:
    jobs: dict[str, Any] = {"max_queued": 1_000_000, "poll_interval_s": 0.2}
    if url:
        jobs["url"] = url
    path = folder / f"models-{uuid.uuid4().hex[:6]}.yaml"
    entry = {"name": "noop", "path": str(PACKAGES / "noop")}
    path.write_text(yaml.safe_dump({"jobs": jobs, "models": [entry]}))
    return path


def _drained(server: Server, timeout: float = 300) -> None:
    """Until no job waits or runs on ``server``'s store."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while time.monotonic() < deadline:
            busy = 0
            for status in ("starting", "processing"):
                page = client.get("/predictions", params={"status": status, "page_size": 1})
                busy += len(page.json()["results"])
            if not busy:
                return
            time.sleep(0.2)
    raise RuntimeError(f"{server.name}: jobs still queued after {timeout} s")


def _round_trips(server: Server, n: int) -> dict[str, list[float]]:
    """``n`` sequential sync predictions and ``n`` jobs waited for (PUT), alternating."""
    times: dict[str, list[float]] = {"sync": [], "job": []}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(n + 3):  # the first three warm up
            started = time.perf_counter()
            r = client.post("/predict", json=PAYLOAD)
            sync = time.perf_counter() - started
            assert r.status_code == 200, r.text
            started = time.perf_counter()
            r = client.put(f"/predictions/rt-{uuid.uuid4().hex}", json={"input": PAYLOAD})
            job = time.perf_counter() - started
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            if i >= 3:
                times["sync"].append(sync * 1000)
                times["job"].append(job * 1000)
    return times


def _row(target: str, conc: int, loads: list[Load], base: dict[str, float]) -> dict[str, Any]:
    row = {
        "target": target,
        "concurrency": conc,
        "rps": median([x.rps for x in loads]),
        "p50_ms": median([x.p50_ms for x in loads]),
        "p99_ms": median([x.p99_ms for x in loads]),
        "errors": sum(x.errors for x in loads),
        "runs": [x.to_dict() for x in loads],
    }
    if base:
        row["rps_ratio"] = row["rps"] / base["rps"]
        row["p50_added_ms"] = row["p50_ms"] - base["p50_ms"]
    return row


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    seconds, reps, trips = (1, 1, 10) if quick else (3, 3, 50)
    notes: list[str] = []
    postgres: LocalPostgres | None = None
    bindir = postgres_bindir()
    if bindir is not None:
        postgres = LocalPostgres(bindir).start()
    else:
        notes.append("PostgreSQL is not installed: its rows are missing")
    servers: dict[str, Server] = {}
    try:
        stores = {"sqlite": None, **({"postgres": postgres.url} if postgres else {})}
        for store, url in stores.items():
            home = workdir / f"jobs-home-{store}"
            port = free_port()
            models = _models_yaml(workdir, url)
            argv = [*SERVE, "--models", str(models), "--port", str(port)]
            env = bench_env(IMPASTO_HOME=str(home), IMPASTO_UI="0")
            servers[store] = Server(f"jobs-{store}", argv, port=port, log_dir=workdir, env=env)
        for server in servers.values():
            server.wait("/health/ready", timeout=120)
        sync = Request.json("/predict", PAYLOAD)
        submit = Request(
            "/predictions",
            json.dumps({"input": PAYLOAD}).encode(),
            "POST",
            {"Content-Type": "application/json", "Prefer": "respond-async"},
        )
        rows: list[dict[str, Any]] = []
        for conc in CONCURRENCY:
            loads: dict[str, list[Load]] = {SYNC: [], **{f"jobs, {s}": [] for s in servers}}
            order = list(loads)
            for rep in range(reps):
                for name in order if rep % 2 == 0 else order[::-1]:
                    store = "sqlite" if name == SYNC else name.split(", ")[1]
                    server = servers[store]
                    request = sync if name == SYNC else submit
                    loads[name].append(
                        run_load(server.url, request, connections=conc, seconds=seconds)
                    )
                    _drained(server)
            base = _row(SYNC, conc, loads[SYNC], {})
            rows.append({**base, "rps_ratio": 1.0, "p50_added_ms": 0.0})
            rows += [_row(name, conc, loads[name], base) for name in order[1:]]
        for store, server in servers.items():
            times = _round_trips(server, trips)
            sync_p50, job_p50 = median(times["sync"]), median(times["job"])
            rows.append(
                {
                    "target": f"one job waited for (PUT), {store}",
                    "concurrency": 1,
                    "rps": 1000 / median(times["job"]),
                    "p50_ms": job_p50,
                    "p99_ms": percentile(times["job"], 99),
                    "rps_ratio": sync_p50 / job_p50,
                    "p50_added_ms": job_p50 - sync_p50,
                    "errors": 0,
                }
            )
    finally:
        for server in servers.values():
            server.stop()
        if postgres is not None:
            postgres.stop()
    notes.append(
        "jobs rows: 202 answers per second (each job committed before its answer); "
        "'one job waited for': submit, run and result in one request, vs /predict alone"
    )
    return {"rows": rows, "targets": [], "notes": notes}
