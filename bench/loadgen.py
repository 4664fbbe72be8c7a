"""Servers in their own processes and a load generator in another, all on loopback.

The load generator is ``wrk`` (C, one thread) when it is on ``PATH``: on a small machine it
takes far less CPU from the server than a Python client would. Without it (or with
``BENCH_LOADGEN=httpx``), an asyncio httpx generator runs in a subprocess instead
(``python -m bench.loadgen``), and every result says which one measured it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for every process the benchmark starts: offline, unbuffered, and with
    the repository on ``PYTHONPATH`` so ``bench`` and ``impasto`` import from the checkout."""
    path = os.pathsep.join(p for p in (str(REPO), str(REPO / "src")) if p)
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": path + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


class Server:
    """A server command in a subprocess, its output in a log file, stopped on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name.replace(' ', '_').replace('/', '_')}.log"
        self._log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or bench_env(),
            cwd=str(cwd or REPO),
            start_new_session=True,
        )

    def wait(self, path: str, timeout: float, method: str = "GET", body: Any = None) -> float:
        """Poll ``path`` until it answers 200; seconds since the process started."""
        deadline = time.monotonic() + timeout
        last = ""
        with httpx.Client(base_url=self.url, timeout=max(timeout, 1)) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    r = client.request(method, path, json=body)
                    if r.status_code == 200:
                        return time.monotonic() - self.started
                    last = f"{r.status_code} {r.text[:200]}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(0.02)
        raise RuntimeError(f"{self.name}: {path} not 200 after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Request:
    """One request shape, sent again and again."""

    path: str
    body: bytes = b""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    @classmethod
    def json(cls, path: str, payload: Any, accept: str | None = None) -> Request:
        headers = {"Content-Type": "application/json"}
        if accept:
            headers["Accept"] = accept
        return cls(path, json.dumps(payload).encode(), "POST", headers)


@dataclass(frozen=True)
class Load:
    """What one load run measured."""

    generator: str
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # transport errors, timeouts and non-2xx answers
    error_kinds: dict[str, int] = field(default_factory=dict)  # the same, by kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generator_name() -> str:
    """``wrk`` when it is installed, else ``httpx-asyncio``; ``BENCH_LOADGEN=httpx`` forces
    the fallback."""
    forced = os.environ.get("BENCH_LOADGEN", "").strip().lower()
    if forced == "httpx" or not shutil.which("wrk"):
        return "httpx-asyncio"
    return "wrk"


MAX_WINDOW_S = 16


def run_load(url: str, request: Request, *, connections: int, seconds: int) -> Load:
    """Closed-loop load: ``connections`` clients each send ``request`` back to back.

    A run in which no request finished measured nothing (a short quick-mode window on a busy
    machine): it is run again with a window twice as long, up to ``MAX_WINDOW_S``."""
    measure = _wrk if generator_name() == "wrk" else _httpx_subprocess
    load = measure(url, request, connections, seconds)
    while load.requests == 0 and seconds * 2 <= MAX_WINDOW_S:
        seconds *= 2
        load = measure(url, request, connections, seconds)
    return load


_LUA = """
wrk.method = {method}
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"us":%d,"p50":%d,"p99":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _lua_str(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def _wrk(url: str, request: Request, connections: int, seconds: int) -> Load:
    headers = "\n".join(
        f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in request.headers.items()
    )
    script = _LUA.format(
        method=_lua_str(request.method), body=_lua_str(request.body.decode()), headers=headers
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
        out = subprocess.run(
            [*argv, "-s", f.name, url + request.path],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        os.unlink(f.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    data = json.loads(line[6:])
    secs = data["us"] / 1e6
    kinds = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
    return Load(
        "wrk",
        connections,
        round(secs, 3),
        data["requests"],
        data["requests"] / secs if secs else 0.0,
        data["p50"] / 1000,
        data["p99"] / 1000,
        sum(kinds.values()),
        kinds,
    )


# -- the fallback: an asyncio httpx generator in its own process -----------------------------


def _httpx_subprocess(url: str, request: Request, connections: int, seconds: int) -> Load:
    spec = json.dumps(
        {
            "url": url + request.path,
            "method": request.method,
            "body": request.body.decode(),
            "headers": request.headers,
            "connections": connections,
            "seconds": seconds,
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", spec],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env=bench_env(),
        cwd=str(REPO),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return Load(**json.loads(out.stdout.strip().splitlines()[-1]))


async def _httpx_load(spec: dict[str, Any]) -> Load:
    connections, seconds = spec["connections"], spec["seconds"]
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    kinds: dict[str, int] = {}
    body = spec["body"].encode()
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                kind = None
                try:
                    r = await client.request(
                        spec["method"], spec["url"], content=body, headers=spec["headers"]
                    )
                    kind = "status" if r.status_code >= 400 else None
                except httpx.TimeoutException:
                    kind = "timeout"
                except httpx.HTTPError:
                    kind = "read"
                latencies.append(time.perf_counter() - t0)
                if kind:
                    kinds[kind] = kinds.get(kind, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return Load(
        "httpx-asyncio",
        connections,
        round(elapsed, 3),
        len(latencies),
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        sum(kinds.values()),
        kinds,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0-100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description="asyncio httpx load generator (JSON spec)")
    parser.add_argument("spec", help="JSON: url, method, body, headers, connections, seconds")
    spec = json.loads(parser.parse_args().spec)
    print(json.dumps(asyncio.run(_httpx_load(spec)).to_dict()))


if __name__ == "__main__":
    main()
