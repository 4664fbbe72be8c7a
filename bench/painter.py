"""The tiny painter: request time of a trained model vs the random tiny-sd of the same size.

``examples/tiny-painter`` (a trained pipeline) and ``examples/tiny-sd`` (random weights)
are served side by side from a fresh model store. One client sends the same 64x64
text2img request back to back (no batching can help it); runs alternate and medians are
reported. The baseline is tiny-sd at its default steps; the painter is measured at its own
default steps (what a README user gets) and at tiny-sd's step count (the same work per
step, so the ratio shows what its bigger UNet and CFG cost per step). The absolute p50 is
the figure the README quotes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from .loadgen import REPO, Request, Server, bench_env, free_port, median
from .overhead import impasto_argv, interleaved

TITLE = "Tiny painter: one 64x64 text2img request at a time, trained painter vs random tiny-sd"
COLUMNS = [
    ("model", "model", "{}"),
    ("shape", "request", "{}"),
    ("p50_ms", "p50 ms", "{:.0f}"),
    ("p50_ratio", "p50 x tiny-sd", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.0f}"),
    ("rps", "req/s", "{:.2f}"),
    ("errors", "errors", "{}"),
]
EXAMPLES = REPO / "examples"
PROMPT = "a red circle"


def default_steps(package: Path) -> int:
    config = yaml.safe_load((package / "config.yaml").read_text())
    return int(config["diffusers"]["default_steps"])


def body(steps: int) -> dict[str, Any]:
    return {"prompt": PROMPT, "seed": 1, "width": 64, "height": 64, "num_inference_steps": steps}


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    # A request takes about a second on a busy 2-core machine: a run of 2 s may finish none.
    seconds, reps, warmup = (6, 1, 2) if quick else (10, 3, 3)
    root = workdir / "painter"
    home = root / "store"
    packages = {}
    for name in ("tiny-sd", "tiny-painter"):
        if not (EXAMPLES / name / "config.yaml").is_file():
            raise FileNotFoundError(f"{EXAMPLES / name} is missing; the painter section serves it")
        packages[name] = shutil.copytree(EXAMPLES / name, root / name,
                                         ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    steps = {name: default_steps(path) for name, path in packages.items()}
    servers: dict[str, Server] = {}
    try:
        for name, package in packages.items():
            port = free_port()
            env = bench_env(IMPASTO_HOME=str(home))
            servers[name] = Server(name, impasto_argv(package, port), port=port,
                                   log_dir=workdir, env=env)  # fmt: skip
            servers[name].wait("/health/ready", timeout=300)
        shapes = {
            "tiny-sd": ("tiny-sd", steps["tiny-sd"]),
            "tiny-painter": ("tiny-painter", steps["tiny-painter"]),
            "tiny-painter same steps": ("tiny-painter", steps["tiny-sd"]),
        }
        targets = {
            label: (servers[model], Request.json("/text2img", body(n)))
            for label, (model, n) in shapes.items()
        }
        loads = interleaved(targets, connections=1, seconds=seconds, reps=reps, warmup=warmup)
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for label, (model, n) in shapes.items():
        runs = loads[label]
        rows.append(
            {
                "model": model,
                "shape": f"64x64, {n} steps" + (" (default)" if n == steps[model] else ""),
                "p50_ms": median([x.p50_ms for x in runs]),
                "p99_ms": median([x.p99_ms for x in runs]),
                "rps": median([x.rps for x in runs]),
                "errors": sum(x.errors for x in runs),
                "runs": [x.to_dict() for x in runs],
            }
        )
    base = rows[0]["p50_ms"]
    if not base:
        raise RuntimeError("no tiny-sd request finished in a run; run without --quick")
    for row in rows:
        row["p50_ratio"] = row["p50_ms"] / base
    painter = rows[1]
    targets_met = [
        {
            "target": "a painter request at its default steps takes under 1 s (p50)",
            "value": f"{painter['p50_ms']:.0f} ms",
            "met": painter["p50_ms"] < 1000,
        }
    ]
    notes = [
        f"prompt {PROMPT!r}, seed 1, one connection; both models run classifier-free guidance "
        "(two UNet passes per step)"
    ]
    return {"rows": rows, "targets": targets_met, "notes": notes}
