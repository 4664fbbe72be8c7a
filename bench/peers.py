"""Peers (opt-in, ``--peers``): the no-op and image workloads on LitServe and BentoML.

Each peer is installed from PyPI into its own virtualenv under ``bench/.peers/`` (once; the
folder is a cache) and serves minimal apps written as its docs show
(``bench/packages/peers/``). impasto serves the same workloads from the same packages as the
other sections, and the runs alternate with the peer's. A peer that cannot be installed or
started is reported as skipped, with the reason.

Workloads: the no-op (JSON in, the same JSON out) at concurrency 1, 16 and 64; a prepared
512 and 1024 px image at concurrency 1, answered the way each peer does it: LitServe as
base64 PNG in JSON (compared with impasto's JSON answer), BentoML as raw PNG bytes
(compared with impasto's ``Accept: image/png`` answer). Both peers encode with Pillow's PNG
defaults (level 6); impasto is measured with its default PNG settings and again with
``media.png_compress_level: 6`` (the ``image_png6`` package), which isolates the serving
path from the encoder choice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from .encoders import photo_like
from .loadgen import REPO, Request, Server, bench_env, free_port
from .overhead import CONCURRENCY, PACKAGES, PAYLOAD, impasto_argv, interleaved, summarize

TITLE = "Peers: impasto's ratio to each peer on the same workloads, same run"
COLUMNS = [
    ("peer", "peer", "{}"),
    ("workload", "workload", "{}"),
    ("peer_rps", "peer req/s", "{:,.1f}"),
    ("impasto_rps", "impasto req/s", "{:,.1f}"),
    ("rps_ratio", "req/s impasto/peer", "{:.2f}"),
    ("peer_p50_ms", "peer p50 ms", "{:.2f}"),
    ("impasto_p50_ms", "impasto p50 ms", "{:.2f}"),
    ("p50_ratio", "p50 impasto/peer", "{:.2f}"),
    ("skipped", "skipped", "{}"),
]
CACHE = REPO / "bench" / ".peers"
APPS = PACKAGES / "peers"
SIZES = (512, 1024)
PEERS = {
    "litserve": ["litserve", "pillow", "numpy"],
    "bentoml": ["bentoml", "pillow", "numpy"],
}
INSTALL_TIMEOUT = 900
# The peers' servers fork workers the benchmark never reaps, so their CPU time cannot be told
# from other processes': the "other processes" share is not reported for this section.
COUNTS_OWN_CPU = False


def ensure_venv(name: str, requirements: list[str]) -> Path:
    """The Python of ``bench/.peers/<name>``, creating and installing it the first time."""
    venv = CACHE / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file() and python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *requirements],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("WARNING: Location")]
        raise RuntimeError(f"pip install {' '.join(requirements)} failed: {' '.join(lines[-3:])}")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    marker.write_text(freeze.stdout)
    return python


def version(python: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)  # fmt: skip
    return out.stdout.strip() or "?"


def prepared_images() -> Path:
    """The benchmark's photo-like pictures as lossless PNG files the peer apps load."""
    folder = CACHE / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        path = folder / f"{size}.png"
        if not path.is_file():
            Image.fromarray(photo_like(size)).save(path)
    return folder


def peer_server(peer: str, python: Path, workload: str, workdir: Path) -> tuple[Server, str]:
    """A peer serving ``workload`` (noop or image), and the path its readiness answers on."""
    port = free_port()
    images = prepared_images()
    if peer == "litserve":
        argv = [str(python), str(APPS / "litserve_app.py"), workload, str(port), str(images)]
        env = bench_env()
        ready = "/health"
    else:
        service = "bentoml_service:Noop" if workload == "noop" else "bentoml_service:Picture"
        bentoml = str(python.parent / "bentoml")
        argv = [bentoml, "serve", service, "--host", "127.0.0.1", "--port", str(port)]
        env = bench_env(
            BENCH_IMAGES=str(images),
            BENTOML_HOME=str(CACHE / "bentoml-home"),
            BENTOML_DO_NOT_TRACK="True",
        )
        ready = "/readyz"
    server = Server(f"{peer} {workload}", argv, port=port, log_dir=workdir, env=env, cwd=APPS)
    return server, ready


def impasto_server(package: str, workdir: Path) -> Server:
    port = free_port()
    argv = impasto_argv(PACKAGES / package, port)
    return Server(f"impasto {package} (peers)", argv, port=port, log_dir=workdir)


# workload -> (the peer's request, which impasto package answers it, impasto's request)
Plan = dict[str, tuple[Request, str, Request]]


def compare(
    peer: str,
    peer_srv: Server,
    impasto: dict[str, Server],
    plan: Plan,
    timing: tuple[int, int, int],
) -> list[dict[str, Any]]:
    """Alternate the peer and impasto on each workload; one row per workload."""
    seconds, reps, warmup = timing
    rows = []
    for workload, (peer_req, package, impasto_req) in plan.items():
        conc = int(workload.rsplit(" ", 1)[1]) if "concurrency" in workload else 1
        targets = {"peer": (peer_srv, peer_req), "impasto": (impasto[package], impasto_req)}
        loads = interleaved(targets, connections=conc, seconds=seconds, reps=reps, warmup=warmup)
        p, i = summarize(loads["peer"]), summarize(loads["impasto"])
        rows.append(
            {
                "peer": peer,
                "workload": workload,
                "peer_rps": p["rps"],
                "impasto_rps": i["rps"],
                "rps_ratio": i["rps"] / p["rps"] if p["rps"] else None,
                "peer_p50_ms": p["p50_ms"],
                "impasto_p50_ms": i["p50_ms"],
                "p50_ratio": i["p50_ms"] / p["p50_ms"] if p["p50_ms"] else None,
                "peer_p99_ms": p["p99_ms"],
                "impasto_p99_ms": i["p99_ms"],
                "errors": {"peer": p["errors"], "impasto": i["errors"]},
                "runs": {"peer": p["runs"], "impasto": i["runs"]},
            }
        )
    return rows


def plans(peer: str) -> list[tuple[str, Plan]]:
    """(the peer app's workload, what to measure on it), no-op first."""
    noop = Request.json("/predict", PAYLOAD)
    noop_plan: Plan = {f"no-op, concurrency {c}": (noop, "noop", noop) for c in CONCURRENCY}
    image_plan: Plan = {}
    for size in SIZES:
        body = {"size": size}
        peer_req = Request.json("/predict", body)
        if peer == "litserve":
            name, impasto_req = "JSON base64 PNG", Request.json("/predict", body)
        else:
            name, impasto_req = "raw PNG", Request.json("/predict", body, accept="image/png")
        image_plan[f"image {size}px, {name}"] = (peer_req, "image", impasto_req)
        image_plan[f"image {size}px, {name}, impasto at PNG level 6"] = (
            peer_req, "image_png6", impasto_req,
        )  # fmt: skip
    return [("noop", noop_plan), ("image", image_plan)]


def run_peer(peer: str, python: Path, quick: bool, workdir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    full = {"noop": (5, 5, 2), "image": (3, 3, 1)}  # seconds, reps, warm-up seconds
    for workload, plan in plans(peer):
        timing = (1, 1, 0) if quick else full[workload]
        peer_srv, ready = peer_server(peer, python, workload, workdir)
        packages = sorted({package for _, package, _ in plan.values()})
        impasto = {package: impasto_server(package, workdir) for package in packages}
        try:
            peer_srv.wait(ready, timeout=180)
            for server in impasto.values():
                server.wait("/health/ready", timeout=60)
            rows += compare(peer, peer_srv, impasto, plan, timing)
        finally:
            peer_srv.stop()
            for server in impasto.values():
                server.stop()
    return rows


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    notes = []
    for peer, requirements in PEERS.items():
        try:
            python = ensure_venv(peer, requirements)
        except Exception as exc:
            rows.append({"peer": peer, "workload": "all", "skipped": f"install failed: {exc}"})
            continue
        notes.append(f"{peer} {version(python, peer)} in {python.parent.parent}")
        try:
            rows += run_peer(peer, python, quick, workdir)
        except Exception as exc:
            rows.append(
                {"peer": peer, "workload": "all", "skipped": f"{type(exc).__name__}: {exc}"}
            )
    return {"rows": rows, "targets": [], "notes": notes}
