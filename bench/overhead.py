"""Serving overhead: a no-op model behind ``impasto serve`` vs a minimal Starlette app.

The baseline is the floor for a Python ASGI server: one Starlette route that parses the
JSON body and answers it back, on uvicorn with the same settings ``impasto serve`` uses
(uvicorn's defaults: uvloop and httptools when installed, access log on). Each server is its
own process and the load generator another; at each concurrency every target gets a warm-up
run, then the measured runs alternate (A B, B A, ...) and the medians are reported.

Two impasto rows: the no-op with an ``async def predict`` (called on the event loop) and
with a plain ``def predict`` (called in a worker thread, as most models are). The
targets compare both with the baseline; a second baseline, the same app calling its no-op
in Starlette's thread pool, is the floor for the threaded kind, and the ``req/s x threaded``
column compares ``impasto sync`` with it. The ``quiet`` pair runs both without the access log
(``--no-access-log``), so the ratio shows impasto's own work with nothing else per request.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .loadgen import Load, Request, Server, free_port, median, run_load

PACKAGES = Path(__file__).resolve().parent / "packages"
TITLE = "Serving overhead: no-op model vs minimal Starlette on uvicorn"
COLUMNS = [
    ("server", "server", "{}"),
    ("concurrency", "conc", "{}"),
    ("rps", "req/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("rps_ratio", "req/s x base", "{:.2f}"),
    ("p50_added_ms", "p50 added ms", "{:+.2f}"),
    ("threaded_ratio", "req/s x threaded", "{:.2f}"),
    ("errors", "errors", "{}"),
]
CONCURRENCY = (1, 16, 64)
PAYLOAD = {"text": "hello", "n": 1}
BASELINE = "baseline"
SETTLE_S = 0.3
THREADED = "baseline, threaded"
QUIET_BASELINE = "baseline, quiet"


def _noop(value: Any) -> Any:
    return value


def baseline_app(threaded: bool = False) -> Starlette:
    """The floor: parse the JSON body, answer it back (``uvicorn --factory`` entry); with
    ``threaded`` the no-op runs in Starlette's thread pool, as a sync model would."""

    async def predict(request: StarletteRequest) -> Response:
        body = await request.json()
        if threaded:
            body = await run_in_threadpool(_noop, body)
        return JSONResponse(body)

    async def health(request: StarletteRequest) -> Response:
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health/ready", health, methods=["GET"]),
        ]
    )


def threaded_baseline_app() -> Starlette:
    """The floor for a sync model (``uvicorn --factory`` entry)."""
    return baseline_app(threaded=True)


def uvicorn_argv(factory: str, port: int, *, quiet: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", "--factory", factory, "--port", str(port)]
    return argv + (["--no-access-log"] if quiet else [])


def impasto_argv(package: Path, port: int, *, quiet: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "impasto.cli.main", "serve", str(package), "--port", str(port)]
    return argv + (["--no-access-log"] if quiet else [])


def interleaved(
    targets: dict[str, tuple[Server, Request]],
    *,
    connections: int,
    seconds: int,
    reps: int,
    warmup: int,
) -> dict[str, list[Load]]:
    """Warm every target (a server and the request it gets) up with ``warmup`` seconds of the
    same load (0 skips it), then measure them all ``reps`` times in alternating order.

    Each run starts ``SETTLE_S`` after the previous one: wrk ends a run by dropping its
    connections with requests in flight, and a server counts those against its queue until
    it notices the disconnects."""
    names = list(targets)
    if warmup:
        for server, request in targets.values():
            run_load(server.url, request, connections=connections, seconds=warmup)
    results: dict[str, list[Load]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            server, request = targets[name]
            time.sleep(SETTLE_S)
            results[name].append(
                run_load(server.url, request, connections=connections, seconds=seconds)
            )
    return results


def summarize(loads: list[Load]) -> dict[str, Any]:
    return {
        "rps": median([x.rps for x in loads]),
        "p50_ms": median([x.p50_ms for x in loads]),
        "p99_ms": median([x.p99_ms for x in loads]),
        "errors": sum(x.errors for x in loads),
        "runs": [x.to_dict() for x in loads],
    }


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    seconds, reps, warmup = (1, 1, 0) if quick else (5, 5, 2)
    commands = {
        BASELINE: lambda port: uvicorn_argv("bench.overhead:baseline_app", port),
        THREADED: lambda port: uvicorn_argv("bench.overhead:threaded_baseline_app", port),
        "impasto": lambda port: impasto_argv(PACKAGES / "noop", port),
        "impasto sync": lambda port: impasto_argv(PACKAGES / "noop_sync", port),
        QUIET_BASELINE: lambda port: uvicorn_argv("bench.overhead:baseline_app", port, quiet=True),
        "impasto, quiet": lambda port: impasto_argv(PACKAGES / "noop", port, quiet=True),
    }
    servers: dict[str, Server] = {}
    for name, argv in commands.items():
        port = free_port()
        servers[name] = Server(name, argv(port), port=port, log_dir=workdir)
    rows: list[dict[str, Any]] = []
    try:
        for server in servers.values():
            server.wait("/health/ready", timeout=60)
        request = Request.json("/predict", PAYLOAD)
        for conc in CONCURRENCY:
            by_name = {name: (server, request) for name, server in servers.items()}
            loads = interleaved(
                by_name, connections=conc, seconds=seconds, reps=reps, warmup=warmup
            )
            threaded = summarize(loads[THREADED])
            bases = {False: summarize(loads[BASELINE]), True: summarize(loads[QUIET_BASELINE])}
            for name, runs in loads.items():
                base = bases["quiet" in name]
                row = {"server": name, "concurrency": conc, **summarize(runs)}
                row["rps_ratio"] = row["rps"] / base["rps"]
                row["p50_added_ms"] = row["p50_ms"] - base["p50_ms"]
                if name == "impasto sync":
                    row["threaded_ratio"] = row["rps"] / threaded["rps"]
                    row["threaded_p50_added_ms"] = row["p50_ms"] - threaded["p50_ms"]
                rows.append(row)
    finally:
        for server in servers.values():
            server.stop()
    return {"rows": rows, "targets": targets(rows), "notes": []}


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets: >= 70% of the baseline's req/s (the quiet baseline for the quiet row) and
    < 1 ms added at p50."""
    out = []
    for row in rows:
        if not row["server"].startswith("impasto"):
            continue
        where = f"{row['server']}, concurrency {row['concurrency']}"
        out.append(
            {
                "target": f"{where}: req/s >= 0.70 x baseline",
                "value": f"{row['rps_ratio']:.2f}",
                "met": row["rps_ratio"] >= 0.70,
            }
        )
        out.append(
            {
                "target": f"{where}: p50 added < 1 ms",
                "value": f"{row['p50_added_ms']:+.2f} ms",
                "met": row["p50_added_ms"] < 1.0,
            }
        )
    return out
