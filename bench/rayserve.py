"""Ray Serve: the ingress's overhead on a no-op model, and replicas of a CPU-bound model.

Two comparisons, each against a baseline measured in the same run:

- **overhead**: the no-op model (``bench/packages/noop``) behind ``impasto serve`` (the
  baseline) and deployed with ``impasto deploy ray`` (one ingress, one replica), at
  concurrency 1 and 16: req/s ratio and p50 added. The Ray path adds the proxy hop and the
  ingress-to-replica hop through Ray's object store.
- **replicas**: a CPU-bound model (a pure-Python loop that holds the GIL) at concurrency
  16, deployed with 1 replica (the baseline) and 2: the req/s ratio. On a machine with
  fewer free cores than replicas the ratio is bounded by the cores, not by impasto.

A local Ray instance is started in this process (4 logical CPUs) and shut down at the end.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from .loadgen import Request, Server, free_port
from .overhead import PACKAGES, PAYLOAD, impasto_argv, interleaved, summarize

TITLE = "Ray Serve: ingress overhead (no-op) and replicas (CPU-bound, concurrency 16)"
COLUMNS = [
    ("case", "case", "{}"),
    ("server", "server", "{}"),
    ("concurrency", "conc", "{}"),
    ("rps", "req/s", "{:,.1f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("rps_ratio", "req/s x base", "{:.2f}"),
    ("p50_added_ms", "p50 added ms", "{:+.2f}"),
    ("errors", "errors", "{}"),
]


class _Target:
    """A Ray Serve application's URL, shaped like a Server for ``interleaved``."""

    def __init__(self, url: str) -> None:
        self.url = url


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    import ray
    from ray import serve

    from impasto.ray.deploy import DeployOptions, deploy

    seconds, reps, warmup = (1, 1, 0) if quick else (5, 3, 2)
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp, logging_level=logging.WARNING)
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    proxy = f"http://127.0.0.1:{http_port}"
    port = free_port()
    baseline = Server(
        "impasto serve", impasto_argv(PACKAGES / "noop", port), port=port, log_dir=workdir
    )
    rows: list[dict[str, Any]] = []
    try:
        deploy(
            [PACKAGES / "noop"],
            DeployOptions(),
            name="noop",
            http_port=http_port,
            route_prefix="/noop",
        )
        for n in (1, 2):
            deploy(
                [PACKAGES / "cpu_bound"],
                DeployOptions(replicas=n),
                name=f"cpu{n}",
                http_port=http_port,
                route_prefix=f"/cpu{n}",
            )
        baseline.wait("/health/ready", timeout=60)
        noop = Request.json("/predict", PAYLOAD)
        for conc in (1, 16):
            targets = {"impasto serve": (baseline, noop), "ray": (_Target(f"{proxy}/noop"), noop)}
            loads = interleaved(
                targets, connections=conc, seconds=seconds, reps=reps, warmup=warmup
            )
            base = summarize(loads["impasto serve"])
            for name, runs in loads.items():
                row = {"case": "overhead", "server": name, "concurrency": conc, **summarize(runs)}
                row["rps_ratio"] = row["rps"] / base["rps"]
                row["p50_added_ms"] = row["p50_ms"] - base["p50_ms"]
                rows.append(row)
        cpu = Request.json("/predict", {"n": 200_000})
        targets = {f"{n} replica(s)": (_Target(f"{proxy}/cpu{n}"), cpu) for n in (1, 2)}
        loads = interleaved(targets, connections=16, seconds=seconds * 2, reps=reps, warmup=warmup)
        base = summarize(loads["1 replica(s)"])
        for name, runs in loads.items():
            row = {"case": "replicas", "server": name, "concurrency": 16, **summarize(runs)}
            row["rps_ratio"] = row["rps"] / base["rps"]
            row["p50_added_ms"] = row["p50_ms"] - base["p50_ms"]
            rows.append(row)
    finally:
        baseline.stop()
        serve.shutdown()
        ray.shutdown()
    return {"rows": rows, "targets": [], "notes": [f"load generator runs against {proxy}"]}


if __name__ == "__main__":
    import json

    out = run("--quick" in sys.argv, Path(tempfile.mkdtemp(prefix="bench-ray-")))
    for row in out["rows"]:
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}))
