"""Image responses over HTTP: impasto's encoders and envelopes vs the naive path.

A model returns a prepared photo-like PIL image (512 or 1024 px, so only the response is
timed). impasto answers it as JSON base64 (``output_format`` png, jpeg, webp) and as raw
bytes (``Accept: image/png|jpeg|webp``). The baseline is the naive path in a minimal
Starlette app: Pillow PNG at its default compression (level 6), base64 in a JSON body.
Everything runs at concurrency 1: the p50 latency is the time per response; bytes are the
response body. Runs alternate between all variants and the medians are reported.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .encoders import photo_like
from .encoders import run as run_encoders
from .loadgen import Request, Server, free_port, median
from .overhead import PACKAGES, impasto_argv, interleaved, uvicorn_argv

TITLE = "Image responses (concurrency 1) vs the naive path: PNG level 6, base64 JSON"
COLUMNS = [
    ("size", "image", "{}"),
    ("variant", "response", "{}"),
    ("p50_ms", "ms/resp", "{:.1f}"),
    ("ms_ratio", "ms x base", "{:.2f}"),
    ("bytes", "bytes", "{:,}"),
    ("bytes_ratio", "bytes x base", "{:.2f}"),
    ("rps", "req/s", "{:.1f}"),
]
SIZES = (512, 1024)
NAIVE = "baseline: PNG level 6, JSON base64"
FORMATS = ("png", "jpeg", "webp")


def naive_app() -> Starlette:
    """The naive path (``uvicorn --factory`` entry): Pillow PNG at its default level in JSON."""
    images = {size: Image.fromarray(photo_like(size)) for size in SIZES}

    async def predict(request: StarletteRequest) -> Response:
        body = await request.json()
        buf = io.BytesIO()
        images[int(body.get("size", 512))].save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return JSONResponse({"output": {"data": data, "content_type": "image/png"}})

    async def health(request: StarletteRequest) -> Response:
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health/ready", health, methods=["GET"]),
        ]
    )


def variants(size: int) -> dict[str, tuple[str, Request]]:
    """Name -> (which server, the request)."""
    out = {NAIVE: ("baseline", Request.json("/predict", {"size": size}))}
    for fmt in FORMATS:
        body = {"size": size, "output_format": fmt}
        out[f"impasto {fmt}, JSON base64"] = ("impasto", Request.json("/predict", body))
    for fmt in FORMATS:
        accept = f"image/{fmt}"
        out[f"impasto {fmt}, raw bytes"] = (
            "impasto",
            Request.json("/predict", {"size": size}, accept),
        )
    return out


def check_image(body: bytes, ctype: str, size: int) -> None:
    """Raise unless ``body`` holds a ``size`` x ``size`` image (raw, or base64 in JSON)."""
    if ctype.startswith("application/json"):
        doc = json.loads(body)
        doc = doc.get("output", doc)
        data = base64.b64decode(doc["data"])
    else:
        data = body
    with Image.open(io.BytesIO(data)) as img:
        if img.size != (size, size):
            raise RuntimeError(f"expected a {size}x{size} image, got {img.size}")


def start_servers(workdir: Path) -> dict[str, Server]:
    ports = {"baseline": free_port(), "impasto": free_port()}
    return {
        "baseline": Server(
            "naive image",
            uvicorn_argv("bench.images:naive_app", ports["baseline"]),
            port=ports["baseline"],
            log_dir=workdir,
        ),
        "impasto": Server(
            "impasto image",
            impasto_argv(PACKAGES / "image", ports["impasto"]),
            port=ports["impasto"],
            log_dir=workdir,
        ),
    }


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    seconds, reps, warmup = (1, 1, 0) if quick else (3, 3, 1)
    servers = start_servers(workdir)
    rows: list[dict[str, Any]] = []
    try:
        for server in servers.values():
            server.wait("/health/ready", timeout=60)
        for size in SIZES:
            rows += measure_size(servers, size, seconds=seconds, reps=reps, warmup=warmup)
    finally:
        for server in servers.values():
            server.stop()
    return {"rows": rows, "targets": targets(rows), "notes": []}


def measure_size(
    servers: dict[str, Server], size: int, *, seconds: int, reps: int, warmup: int
) -> list[dict[str, Any]]:
    plan = variants(size)
    sizes: dict[str, int] = {}
    for name, (server, request) in plan.items():  # the body size, checked once
        body, ctype = fetch_body(servers[server].url, request)
        check_image(body, ctype, size)
        sizes[name] = len(body)
    by_name = {name: (servers[server], request) for name, (server, request) in plan.items()}
    loads = interleaved(by_name, connections=1, seconds=seconds, reps=reps, warmup=warmup)
    names = list(plan)
    rows = []
    for name in names:
        p50 = median([x.p50_ms for x in loads[name]])
        rows.append(
            {
                "size": f"{size}x{size}",
                "variant": name,
                "p50_ms": p50,
                "rps": median([x.rps for x in loads[name]]),
                "bytes": sizes[name],
                "errors": sum(x.errors for x in loads[name]),
                "runs": [x.to_dict() for x in loads[name]],
            }
        )
    base = rows[0]
    for row in rows:
        row["ms_ratio"] = row["p50_ms"] / base["p50_ms"]
        row["bytes_ratio"] = row["bytes"] / base["bytes"]
    return rows


def fetch_body(url: str, request: Request) -> tuple[bytes, str]:
    r = httpx.request(
        request.method, url + request.path, content=request.body, headers=request.headers,
        timeout=60,
    )  # fmt: skip
    r.raise_for_status()
    return r.content, r.headers["content-type"]


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shipped default (PNG in JSON) must beat the naive path in time per response."""
    out = []
    for row in rows:
        if row["variant"] == "impasto png, JSON base64":
            out.append(
                {
                    "target": f"{row['size']}: default PNG JSON faster than the naive path",
                    "value": f"{row['ms_ratio']:.2f} x",
                    "met": row["ms_ratio"] < 1.0,
                }
            )
    return out


class Encoders:
    """The encoders section: :func:`bench.encoders.run` as it is, no HTTP."""

    TITLE = "Encoders alone (no HTTP): time and JSON bytes vs Pillow PNG level 6"
    COLUMNS = [
        ("group", "group", "{}"),
        ("name", "encoder", "{}"),
        ("ms", "ms", "{:.2f}"),
        ("ms_ratio", "ms x base", "{:.2f}"),
        ("json_bytes", "JSON bytes", "{:,}"),
        ("bytes_ratio", "bytes x base", "{:.2f}"),
    ]

    @staticmethod
    def run(quick: bool, workdir: Path) -> dict[str, Any]:
        return {"rows": run_encoders(quick), "targets": [], "notes": []}
