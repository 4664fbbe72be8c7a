"""Batching: the tiny diffusion pipeline at concurrency 8, batching on vs off.

``examples/tiny-sd`` is copied twice into a work folder, one copy with ``batching.enabled:
true`` and one with ``false``, and both are served from a fresh model store. The baseline
is batching off: every request is its own pipeline call. Eight clients send the same request
shape (64x64, 4 steps) back to back; runs alternate and medians are reported. Then eight
concurrent requests with seeds 0-7 go to each server and the decoded images are compared
pixel by pixel, and the responses' ``timings.inference_s`` tell how many pipeline calls
served them (requests batched together share one call's time).
"""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image

from .loadgen import REPO, Request, Server, bench_env, free_port, median
from .overhead import impasto_argv, interleaved

TITLE = "Batching: tiny diffusion pipeline, 8 concurrent clients, batching on vs off"
COLUMNS = [
    ("batching", "batching", "{}"),
    ("shape", "request", "{}"),
    ("rps", "req/s", "{:.2f}"),
    ("rps_ratio", "req/s x off", "{:.2f}"),
    ("p50_ms", "p50 ms", "{:.0f}"),
    ("p50_ratio", "p50 x off", "{:.2f}"),
    ("calls", "calls/8 req", "{}"),
    ("max_pixel_diff", "max px diff", "{}"),
    ("errors", "errors", "{}"),
]
EXAMPLE = REPO / "examples" / "tiny-sd"
CLIENTS = 8
SHAPE = {"width": 64, "height": 64, "num_inference_steps": 4}


def package_copy(dest: Path, enabled: bool) -> Path:
    """``examples/tiny-sd`` with ``batching.enabled`` set."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((dest / "config.yaml").read_text()) or {}
    config.setdefault("batching", {})["enabled"] = enabled
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def body(seed: int) -> dict[str, Any]:
    return {"prompt": "a red cat", "seed": seed, "output_format": "png", **SHAPE}


def decode(response: dict[str, Any]) -> np.ndarray:
    data = base64.b64decode(response["images"][0]["data"])
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


async def concurrent_batch(url: str, seeds: list[int]) -> list[dict[str, Any]]:
    """Send one request per seed at once; the JSON answers in seed order."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        responses = await asyncio.gather(*(client.post("/text2img", json=body(s)) for s in seeds))
    for r in responses:
        r.raise_for_status()
    return [r.json() for r in responses]


def start(name: str, package: Path, home: Path, workdir: Path) -> Server:
    port = free_port()
    env = bench_env(IMPASTO_HOME=str(home))
    return Server(name, impasto_argv(package, port), port=port, log_dir=workdir, env=env)


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    if not (EXAMPLE / "config.yaml").is_file():
        raise FileNotFoundError(f"{EXAMPLE} is missing; the batching section serves it")
    seconds, reps, warmup = (2, 1, 0) if quick else (10, 3, 3)
    root = workdir / "batching"
    home = root / "store"
    packages = {
        "off": package_copy(root / "off" / "tiny-sd", enabled=False),
        "on": package_copy(root / "on" / "tiny-sd", enabled=True),
    }
    servers: dict[str, Server] = {}
    try:
        for name, package in packages.items():  # one at a time: the first fills the store
            servers[name] = start(f"tiny-sd batching {name}", package, home, workdir)
            servers[name].wait("/health/ready", timeout=300)
        request = Request.json("/text2img", body(1))
        targets = {name: (server, request) for name, server in servers.items()}
        loads = interleaved(targets, connections=CLIENTS, seconds=seconds, reps=reps, warmup=warmup)
        seeds = list(range(CLIENTS))
        answers = {name: asyncio.run(concurrent_batch(s.url, seeds)) for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    images = {name: [decode(a) for a in answers[name]] for name in answers}
    diff = max(int(np.abs(a - b).max()) for a, b in zip(images["on"], images["off"], strict=True))
    seeds_ignored = any(
        np.array_equal(images["off"][0], img) for img in images["off"][1:]
    )  # a sanity check that the seeds matter at all
    rows = []
    for name in servers:
        runs = loads[name]
        calls = len({a["timings"]["inference_s"] for a in answers[name]})
        rows.append(
            {
                "batching": name,
                "shape": f"{SHAPE['width']}x{SHAPE['height']}, {SHAPE['num_inference_steps']} steps",
                "rps": median([x.rps for x in runs]),
                "p50_ms": median([x.p50_ms for x in runs]),
                "p99_ms": median([x.p99_ms for x in runs]),
                "calls": calls,
                "max_pixel_diff": diff if name == "on" else 0,
                "errors": sum(x.errors for x in runs),
                "runs": [x.to_dict() for x in runs],
            }
        )
    off = rows[0]
    for row in rows:
        row["rps_ratio"] = row["rps"] / off["rps"]
        row["p50_ratio"] = row["p50_ms"] / off["p50_ms"]
    notes = [
        "max px diff: the largest absolute difference of any channel of any pixel between the "
        f"batched and unbatched image for the same seed, over seeds 0-{CLIENTS - 1} (0-255)"
    ]
    if seeds_ignored:
        notes.append("two different seeds gave the same image: the comparison is not meaningful")
    on = rows[1]
    targets = [
        {
            "target": "batching on: more req/s than off at concurrency 8",
            "value": f"{on['rps_ratio']:.2f} x",
            "met": on["rps_ratio"] > 1.0,
        },
        {
            "target": "batched images match unbatched ones (max px diff <= 1)",
            "value": str(diff),
            "met": diff <= 1,
        },
    ]
    return {"rows": rows, "targets": targets, "notes": notes}
