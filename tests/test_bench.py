"""The benchmark entry point keeps working (tiny counts; nothing here asserts on timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))

from bench import loadgen, run


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile([3.0], 99) == 3


def test_lua_strings_survive_brackets() -> None:
    text = 'a]]b]=]c"'
    quoted = loadgen._lua_str(text)
    level = quoted.index("[", 1)
    assert quoted[level + 1 : -level - 1] == text


def test_sections_render_as_text_and_markdown() -> None:
    section = {
        "title": "t",
        "rows": [{"server": "baseline", "rps": 1000.0, "p50_ms": float("nan")}],
        "targets": [{"target": "x", "value": "0.9", "met": False}],
        "notes": ["n"],
    }
    columns = [("server", "server", "{}"), ("rps", "req/s", "{:,.0f}"), ("p50_ms", "p50", "{:.2f}")]
    text = run.render_section(section, columns, markdown=False)
    assert "1,000" in text and "[MISSED] x: 0.9" in text and " -" in text
    md = run.render_section(section, columns, markdown=True)
    assert "| server | req/s | p50 |" in md


def test_unknown_section_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--only", "nope"]) == 2
    assert "unknown sections: nope" in capsys.readouterr().out


def test_fallback_generator_measures_a_server(tmp_path, monkeypatch) -> None:
    from bench.overhead import PAYLOAD, uvicorn_argv

    monkeypatch.setenv("BENCH_LOADGEN", "httpx")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{REPO / 'src'}")
    port = loadgen.free_port()
    argv = uvicorn_argv("bench.overhead:baseline_app", port)
    with loadgen.Server("baseline", argv, port=port, log_dir=tmp_path) as server:
        server.wait("/health/ready", timeout=60)
        load = loadgen.run_load(
            server.url, loadgen.Request.json("/predict", PAYLOAD), connections=4, seconds=1
        )
    assert load.generator == "httpx-asyncio"
    assert load.requests > 0 and load.errors == 0
    assert 0 < load.p50_ms <= load.p99_ms


@pytest.mark.timeout(240)
def test_quick_run_writes_ratios(tmp_path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "overhead,images", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1
    overhead = report["sections"]["overhead"]
    assert {(r["server"], r["concurrency"]) for r in overhead["rows"]} >= {
        ("baseline", 1),
        ("impasto", 64),
        ("impasto, quiet", 16),
    }
    # the quiet row is compared with the quiet baseline of the same concurrency
    by = {(r["server"], r["concurrency"]): r for r in overhead["rows"]}
    quiet, quiet_base = by[("impasto, quiet", 16)], by[("baseline, quiet", 16)]
    assert quiet["rps_ratio"] == quiet["rps"] / quiet_base["rps"]
    for row in overhead["rows"]:
        assert row["rps"] > 0 and row["rps_ratio"] > 0
        assert row["errors"] == 0
        assert row["runs"][0]["generator"] == loadgen.generator_name()
    images = report["sections"]["images"]["rows"]
    assert len(images) == 14
    assert all(r["bytes"] > 0 and r["ms_ratio"] > 0 for r in images)
    assert "Serving overhead" in proc.stdout


def test_continuous_schedule_is_poisson_and_reproducible() -> None:
    from bench import continuous

    arrivals = continuous.schedule(rate=4.0, count=400)
    assert arrivals == continuous.schedule(rate=4.0, count=400)  # one schedule for every mode
    times = [at for at, _ in arrivals]
    assert times == sorted(times) and times[0] > 0
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert 0.2 < sum(gaps) / len(gaps) < 0.3  # mean gap 1/rate
    assert {shape for _, shape in arrivals} == set(continuous.SHAPES)
    assert "continuous" in run.SECTIONS
