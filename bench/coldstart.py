"""Cold start: process start to the first successful prediction, and store vs folder loads.

Every start is timed from ``subprocess.Popen`` to the first 200 answer to a prediction
(polled every 20 ms; a loading server answers 503 at once):

- the tiny diffusion package (``examples/tiny-sd``) with its weights already in the store,
  vs a bare Python script that imports torch and diffusers, loads the same folder with
  ``DiffusionPipeline.from_pretrained``, makes one image and encodes it (no server at all);
- the same package on an empty store, so ``load()`` first builds the weights and imports
  them (a first ever start);
- the no-op package vs the minimal Starlette app on uvicorn (what impasto itself adds).

Loads are timed in a separate process: impasto's ``load_pipelines`` with ``diffusers.model``
set to the store ref vs to the original folder, alternating, after one warm-up each (so both
read from the page cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .batching import EXAMPLE, body, package_copy
from .loadgen import Server, bench_env, free_port, median
from .overhead import PACKAGES, PAYLOAD, impasto_argv, uvicorn_argv

TITLE = "Cold start: process start to first successful prediction; store vs folder load"
COLUMNS = [
    ("what", "what", "{}"),
    ("baseline", "baseline", "{}"),
    ("seconds", "seconds", "{:.2f}"),
    ("baseline_seconds", "baseline s", "{:.2f}"),
    ("ratio", "x base", "{:.2f}"),
    ("ready_seconds", "ready s", "{:.2f}"),
]
REF = "tiny-sd:latest"
FIRST = "FIRST-PREDICTION"


def time_server(name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str],
                path: str, payload: dict[str, Any], timeout: float) -> dict[str, float]:  # fmt: skip
    """Seconds from Popen to ``/health/ready`` answering 200, and to the first 200 answer
    to ``payload`` (asked right after)."""
    with Server(name, argv, port=port, log_dir=workdir, env=env) as server:
        ready = server.wait("/health/ready", timeout)
        first = server.wait(path, timeout, method="POST", body=payload)
    return {"ready": ready, "seconds": first}


def time_script(argv: list[str], env: dict[str, str], timeout: float) -> float:
    """Seconds from Popen until the script prints the first-prediction marker."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(FIRST):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                break
        raise RuntimeError(f"{argv} did not print {FIRST} (exit {proc.poll()})")
    finally:
        proc.kill()
        proc.wait(timeout=30)


def helper(*args: str, env: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    """Run a step of this module in a fresh interpreter; its last output line is JSON."""
    out = subprocess.run([sys.executable, "-m", "bench.coldstart", *args], capture_output=True,
                         text=True, env=env, timeout=timeout, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"bench.coldstart {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    if not (EXAMPLE / "config.yaml").is_file():
        raise FileNotFoundError(f"{EXAMPLE} is missing; the cold start section serves it")
    reps, load_reps = (1, 2) if quick else (3, 15)
    root = workdir / "coldstart"
    root.mkdir(parents=True)
    folder, store = root / "original" / "tiny-sd", root / "store"
    env = bench_env(IMPASTO_HOME=str(store))
    loads = helper("loads", str(folder), str(load_reps), env=env)
    package = package_copy(root / "package" / "tiny-sd", enabled=True)
    request = body(1)

    ready: dict[str, list[float]] = {k: [] for k in ("sd", "noop", "starlette", "fresh")}

    def impasto_sd(home: Path, key: str) -> float:
        port = free_port()
        t = time_server(
            "coldstart tiny-sd", impasto_argv(package, port), port, workdir,
            bench_env(IMPASTO_HOME=str(home)), "/text2img", request, timeout=600,
        )  # fmt: skip
        ready[key].append(t["ready"])
        return t["seconds"]

    def bare_sd() -> float:
        argv = [sys.executable, "-m", "bench.coldstart", "bare", str(folder)]
        return time_script(argv, env, timeout=600)

    def impasto_noop() -> float:
        port = free_port()
        argv = impasto_argv(PACKAGES / "noop", port)
        t = time_server("coldstart noop", argv, port, workdir, env, "/predict", PAYLOAD,
                        timeout=120)  # fmt: skip
        ready["noop"].append(t["ready"])
        return t["seconds"]

    def starlette_noop() -> float:
        port = free_port()
        argv = uvicorn_argv("bench.overhead:baseline_app", port)
        t = time_server("coldstart baseline", argv, port, workdir, env, "/predict", PAYLOAD,
                        timeout=120)  # fmt: skip
        ready["starlette"].append(t["ready"])
        return t["seconds"]

    times: dict[str, list[float]] = {k: [] for k in ("sd", "bare", "noop", "starlette", "fresh")}
    for rep in range(reps):
        pairs = [("sd", lambda: impasto_sd(store, "sd")), ("bare", bare_sd),
                 ("noop", impasto_noop), ("starlette", starlette_noop)]  # fmt: skip
        if rep % 2:
            pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
        for key, fn in pairs:
            times[key].append(fn())
        empty = root / f"empty-store-{rep}"
        times["fresh"].append(impasto_sd(empty, "fresh"))
        shutil.rmtree(empty, ignore_errors=True)
    sd, bare = median(times["sd"]), median(times["bare"])
    noop, starlette = median(times["noop"]), median(times["starlette"])
    fresh = median(times["fresh"])
    rows = [
        {"what": "tiny-sd, weights in the store", "baseline": "bare diffusers script",
         "seconds": sd, "baseline_seconds": bare, "ratio": sd / bare},
        {"what": "tiny-sd, empty store (builds + imports)", "baseline": "bare diffusers script",
         "seconds": fresh, "baseline_seconds": bare, "ratio": fresh / bare},
        {"what": "no-op package", "baseline": "minimal Starlette app",
         "seconds": noop, "baseline_seconds": starlette, "ratio": noop / starlette},
        {"what": "load_pipelines from the store ref", "baseline": "from the original folder",
         "seconds": loads["store"], "baseline_seconds": loads["folder"],
         "ratio": loads["store"] / loads["folder"]},
    ]  # fmt: skip
    for row, key in zip(rows, ("sd", "fresh", "noop", None), strict=True):
        row["runs"] = times[key] if key else loads["runs"]
        if key:
            row["ready_seconds"] = median(ready[key])
    notes = [
        "impasto's start includes the package's warm-up shape (64x64, 2 steps) before ready; "
        "the bare script makes one 64x64, 4-step image and PNG-encodes it",
        f"load times: median of {load_reps} alternating loads each after one warm-up "
        f"(file cache warm); resolving the store ref alone took {loads['resolve'] * 1000:.1f} ms",
    ]
    return {"rows": rows, "targets": [], "notes": notes}


# -- steps run in a fresh interpreter -----------------------------------------------------------


def _loads(folder: Path, reps: int) -> dict[str, Any]:
    """Build the tiny pipeline into ``folder``, import it into the store, then time loads."""
    from impasto.config import DiffusersConfig
    from impasto.diffusers import build_tiny_sd
    from impasto.diffusers.pipelines import load_pipelines
    from impasto.store import ModelStore

    build_tiny_sd(folder, seed=0)
    store = ModelStore()
    store.import_folder(REF.split(":")[0], folder)
    configs = {
        "store": DiffusersConfig(model=REF, tasks=["text2img"]),
        "folder": DiffusersConfig(model=str(folder), tasks=["text2img"]),
    }
    runs: dict[str, list[float]] = {name: [] for name in configs}
    for cfg in configs.values():  # warm-up: imports, page cache
        load_pipelines(cfg, ["text2img"], store=store)
    names = list(configs)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            load_pipelines(configs[name], ["text2img"], store=store)
            runs[name].append(time.perf_counter() - started)
    resolve = []
    for _ in range(max(reps, 3)):
        started = time.perf_counter()
        store.resolve(REF)
        resolve.append(time.perf_counter() - started)
    return {
        "store": median(runs["store"]),
        "folder": median(runs["folder"]),
        "resolve": median(resolve),
        "runs": runs,
    }


def _bare(folder: Path) -> None:
    """The floor for a process that makes one image: import, load, one call, encode."""
    import io

    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a red cat", width=64, height=64, num_inference_steps=4,
        generator=torch.Generator().manual_seed(1),
    ).images[0]  # fmt: skip
    image.save(io.BytesIO(), format="PNG")
    print(FIRST, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="cold start steps run in a fresh interpreter")
    parser.add_argument("step", choices=["loads", "bare"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("reps", type=int, nargs="?", default=5)
    args = parser.parse_args()
    if args.step == "bare":
        _bare(args.folder)
    else:
        print(json.dumps(_loads(args.folder, args.reps)))


if __name__ == "__main__":
    main()
