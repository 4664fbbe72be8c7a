"""Continuous batching: Poisson arrivals of mixed step counts and sizes, off vs static vs
continuous, on the tiny diffusion pipeline over HTTP.

``examples/tiny-sd`` is served three times from one model store: batching off, static
batching and continuous batching (``max_batch_size`` 8, ``runtime.predict_concurrency`` left
at its default of 1: a static batch forms while the one before it runs, and continuous
batching lets a batch's worth of requests in by itself). First the unbatched capacity is measured on the ``off`` server (each request
shape alone, back to back); then the same open-loop schedule of Poisson arrivals at 70 % of
that capacity, over four shapes (two sizes x 4 and 12 steps, uniformly mixed), goes to each
server in turn, alternating for every repetition. Latency is from a request's scheduled
arrival to its response; throughput is requests over the time from the first arrival to the
last response (at 70 % load every stable server keeps up, so this is about the arrival
rate). Saturated throughput comes from a burst: 16 requests of the mix sent at once. Then a
short request (4 steps) is sent while a long one (48 steps) is denoising, and the time to
its answer is recorded. Ratios are to static batching.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from .batching import EXAMPLE, start
from .loadgen import Server, median, percentile

TITLE = (
    "Continuous batching: tiny SD over HTTP, Poisson arrivals at 70% of unbatched capacity, "
    "4 and 12 steps, 32 and 64 px"
)
COLUMNS = [
    ("mode", "batching", "{}"),
    ("load", "arrivals", "{}"),
    ("rps", "req/s", "{:.2f}"),
    ("rps_ratio", "req/s x static", "{:.2f}"),
    ("p50_ms", "p50 ms", "{:.0f}"),
    ("p50_ratio", "p50 x static", "{:.2f}"),
    ("p95_ms", "p95 ms", "{:.0f}"),
    ("p95_ratio", "p95 x static", "{:.2f}"),
    ("burst_rps", "burst req/s", "{:.2f}"),
    ("burst_ratio", "burst x static", "{:.2f}"),
    ("short_ms", "short during long ms", "{:.0f}"),
    ("short_ratio", "short x static", "{:.2f}"),
    ("short_first", "short done first", "{}"),
    ("errors", "errors", "{}"),
]
MODES = {
    "off": {"enabled": False},
    "static": {"mode": "static"},
    "continuous": {"mode": "continuous"},
}
SHAPES = [(32, 4), (32, 12), (64, 4), (64, 12)]  # (side, steps), mixed uniformly
LOAD = 0.7  # arrival rate as a share of the unbatched capacity
ACTIVE = 8  # max_batch_size
LONG, SHORT = (64, 48), (64, 4)


def package_copy(dest: Path, batching: dict[str, Any]) -> Path:
    """``examples/tiny-sd`` with the given ``batching`` section (8 images a batch)."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((dest / "config.yaml").read_text()) or {}
    config["batching"] = {"max_batch_size": ACTIVE, "max_wait_ms": 20, **batching}
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def body(side: int, steps: int, seed: int) -> dict[str, Any]:
    return {
        "prompt": "a red cat",
        "seed": seed,
        "width": side,
        "height": side,
        "num_inference_steps": steps,
    }


def schedule(rate: float, count: int, seed: int = 7) -> list[tuple[float, tuple[int, int]]]:
    """``count`` arrivals: (seconds after the start, shape), exponential gaps at ``rate``."""
    rng = random.Random(seed)
    at, out = 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        out.append((at, rng.choice(SHAPES)))
    return out


async def open_loop(url: str, arrivals: list[tuple[float, tuple[int, int]]]) -> dict[str, Any]:
    """Send each request at its time whatever the server is doing; latencies in ms."""
    limits = httpx.Limits(max_connections=len(arrivals), max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        start_at = time.perf_counter()

        async def one(i: int, at: float, shape: tuple[int, int]) -> tuple[float, float, bool]:
            await asyncio.sleep(max(0.0, start_at + at - time.perf_counter()))
            r = await client.post("/text2img", json=body(*shape, seed=i))
            done = time.perf_counter()
            return (done - (start_at + at)) * 1000, done - start_at, r.status_code == 200

        results = await asyncio.gather(*(one(i, at, s) for i, (at, s) in enumerate(arrivals)))
    span = max(done for _, done, _ in results) - min(at for at, _ in arrivals)
    return {
        "latencies_ms": [ms for ms, _, _ in results],
        "rps": len(results) / span,
        "errors": sum(not ok for _, _, ok in results),
    }


async def burst(url: str, count: int = 16) -> float:
    """Requests per second when ``count`` requests of the mix arrive at once."""
    shapes = [SHAPES[i % len(SHAPES)] for i in range(count)]
    arrivals = [(0.0, shape) for shape in shapes]
    result = await open_loop(url, arrivals)
    return result["rps"] if not result["errors"] else float("nan")


async def short_during_long(url: str) -> tuple[float, bool]:
    """Start a long request; once it has done two steps, send a short one. Returns the short
    one's latency (ms) and whether it answered before the long one."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def short() -> float:
            r = await client.post("/text2img", json=body(*SHORT, seed=2))
            r.raise_for_status()
            return time.perf_counter()

        task: asyncio.Task | None = None
        sent = 0.0
        headers = {"Accept": "text/event-stream"}
        async with client.stream(
            "POST", "/text2img", json=body(*LONG, seed=1), headers=headers
        ) as r:
            async for line in r.aiter_lines():
                started = task is not None or not line.startswith("data: ")
                if not started and json.loads(line[6:]).get("step") == 2:
                    sent = time.perf_counter()
                    task = asyncio.create_task(short())
        long_done = time.perf_counter()
        if task is None:
            raise RuntimeError("the long request sent no progress events")
        short_done = await task
        return (short_done - sent) * 1000, short_done < long_done


def capacity(server: Server, reps: int) -> float:
    """Requests per second one unbatched pipeline manages on the uniform shape mix."""
    with httpx.Client(base_url=server.url, timeout=600) as client:
        times = []
        for side, steps in SHAPES:
            runs = []
            for i in range(reps + 1):
                started = time.perf_counter()
                client.post("/text2img", json=body(side, steps, seed=i)).raise_for_status()
                if i:  # the first one of each shape is a warm-up
                    runs.append(time.perf_counter() - started)
            times.append(median(runs))
    return len(times) / sum(times)


def warm(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for side, steps in SHAPES:
            client.post("/text2img", json=body(side, steps, seed=0)).raise_for_status()


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    if not (EXAMPLE / "config.yaml").is_file():
        raise FileNotFoundError(f"{EXAMPLE} is missing; the continuous section serves it")
    count, reps, burst_count = (8, 1, 8) if quick else (40, 2, 16)
    root = workdir / "continuous"
    home = root / "store"
    servers: dict[str, Server] = {}
    loads: dict[str, list[dict[str, Any]]] = {name: [] for name in MODES}
    shorts: dict[str, list[tuple[float, bool]]] = {name: [] for name in MODES}
    bursts: dict[str, list[float]] = {name: [] for name in MODES}
    try:
        for name, batching in MODES.items():  # one at a time: the first fills the store
            package = package_copy(root / name / "tiny-sd", batching)
            servers[name] = start(f"tiny-sd {name}", package, home, root)
            servers[name].wait("/health/ready", timeout=300)
            warm(servers[name])
        rate = LOAD * capacity(servers["off"], 1 if quick else 3)
        arrivals = schedule(rate, count)
        for rep in range(reps):
            order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
            for name in order:
                time.sleep(1.0)  # let the previous run's stragglers settle
                loads[name].append(asyncio.run(open_loop(servers[name].url, arrivals)))
                bursts[name].append(asyncio.run(burst(servers[name].url, burst_count)))
                shorts[name].append(asyncio.run(short_during_long(servers[name].url)))
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for name in MODES:
        latencies = [ms for run_ in loads[name] for ms in run_["latencies_ms"]]
        rows.append(
            {
                "mode": name,
                "load": f"{count} at {rate:.2f}/s",
                "rps": median([r["rps"] for r in loads[name]]),
                "p50_ms": percentile(latencies, 50),
                "p95_ms": percentile(latencies, 95),
                "burst_rps": median(bursts[name]),
                "short_ms": median([ms for ms, _ in shorts[name]]),
                "short_first": f"{sum(first for _, first in shorts[name])}/{len(shorts[name])}",
                "errors": sum(r["errors"] for r in loads[name]),
                "runs": loads[name],
            }
        )
    static = rows[1]
    for row in rows:
        row["rps_ratio"] = row["rps"] / static["rps"]
        row["p50_ratio"] = row["p50_ms"] / static["p50_ms"]
        row["p95_ratio"] = row["p95_ms"] / static["p95_ms"]
        row["burst_ratio"] = row["burst_rps"] / static["burst_rps"]
        row["short_ratio"] = row["short_ms"] / static["short_ms"]
    cont = rows[2]
    targets = [
        {
            "target": "continuous p95 latency <= 0.6 x static's",
            "value": f"{cont['p95_ratio']:.2f} x",
            "met": cont["p95_ratio"] <= 0.6,
        },
        {
            "target": f"continuous throughput >= static's (burst of {burst_count})",
            "value": f"{cont['burst_ratio']:.2f} x",
            "met": cont["burst_ratio"] >= 1.0,
        },
        {
            "target": "a short request sent during a long one finishes first (continuous)",
            "value": cont["short_first"],
            "met": all(first for _, first in shorts["continuous"]),
        },
    ]
    notes = [
        f"unbatched capacity {rate / LOAD:.2f} req/s on the shape mix, measured on `off`; "
        f"arrivals at {LOAD:.0%} of it, the same schedule for every mode, "
        f"{reps} run(s) per mode in alternating order",
        f"short during long: {SHORT[1]} steps sent once a {LONG[1]}-step request has done 2 "
        f"(both {LONG[0]}x{LONG[0]})",
    ]
    return {"rows": rows, "targets": targets, "notes": notes}
