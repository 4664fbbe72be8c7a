"""The first hour with impasto: shutdown, startup, errors a newcomer meets, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import PACKAGES, REPO, metric

CALLPATH = PACKAGES / "callpath"


def impasto(*args: str, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "impasto.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "IMPASTO_UI": "0", **(env or {})},  # no playground: fast
    )


def _eventually(check, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _package(tmp_path: Path, extra_runtime: str) -> Path:
    pkg = tmp_path / "callpath"
    shutil.copytree(CALLPATH, pkg)
    config = pkg / "config.yaml"
    text = config.read_text().replace("predict_concurrency: 1", "predict_concurrency: 2")
    config.write_text(text.replace("runtime:\n", f"runtime:\n{extra_runtime}"))
    return pkg


# -- lifecycle ------------------------------------------------------------------------------


def test_sigterm_drains_then_cancels_what_is_left_and_exits_0(serve_process, tmp_path):
    server = serve_process(_package(tmp_path, "  shutdown_grace_s: 1\n"))
    server.wait_ready()
    results: dict[str, object] = {}
    first_progress = threading.Event()

    def json_client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            results["json"] = client.post("/long", json={"n": 100_000})

    def sse_client() -> None:
        frames = []
        with (
            httpx.Client(base_url=server.url, timeout=60) as client,
            client.stream(
                "POST", "/long", json={"n": 100_000}, headers={"Accept": "text/event-stream"}
            ) as r,
        ):
            for line in r.iter_lines():
                frames.append(line)
                if line == "event: progress":
                    first_progress.set()
        results["sse"] = frames

    threads = [threading.Thread(target=f) for f in (json_client, sse_client)]
    for t in threads:
        t.start()
    assert first_progress.wait(60)
    assert _eventually(lambda: _in_flight(server) == 2)
    server.proc.send_signal(signal.SIGTERM)
    # no new work from now on, but the port stays open so probes see why
    assert _eventually(lambda: server.client.get("/health/ready").status_code == 503)
    refused = server.client.post("/predict", json={})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "shutting_down"
    for t in threads:
        t.join(60)
    answer = results["json"]
    assert answer.status_code == 503 and answer.json()["error"]["type"] == "shutting_down"
    frames = results["sse"]
    assert "event: error" in frames and any("shutting_down" in f for f in frames)
    assert server.proc.wait(60) == 0
    logs = server.logs()
    assert "Traceback" not in logs and "canceled 2 request(s)" in logs


def _in_flight(server) -> int:
    return int(metric(server.client.get("/metrics").text, "impasto_in_flight"))


def test_a_second_signal_exits_at_once(serve_process, tmp_path):
    server = serve_process(_package(tmp_path, "  shutdown_grace_s: 600\n"))
    server.wait_ready()
    gone = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            try:
                c.post("/long", json={"n": 100_000})
            except httpx.HTTPError:
                pass
        gone.set()

    threading.Thread(target=client, daemon=True).start()
    assert _eventually(lambda: _in_flight(server) > 0)
    server.proc.send_signal(signal.SIGINT)
    assert _eventually(lambda: server.client.get("/health/ready").status_code == 503)
    server.proc.send_signal(signal.SIGINT)  # the grace period is 600 s: only this ends it
    assert server.proc.wait(30) == 130
    assert "Traceback" not in server.logs()


def test_an_idle_server_exits_at_once_on_sigterm(serve_process):
    server = serve_process(PACKAGES / "echo")
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert "Traceback" not in server.logs()


def test_a_taken_port_is_one_line_and_its_own_exit_code():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = impasto("serve", str(PACKAGES / "lifecycle"), "--port", str(port))
    assert r.returncode == 12, r.stderr
    assert r.stderr.strip() == f"error: port {port} is in use; pass --port"
    assert "Traceback" not in r.stderr and "load()" not in r.stderr


def test_an_unreachable_hub_model_fails_fast_with_what_to_do(tmp_path):
    pkg = tmp_path / "hubbed"
    pkg.mkdir()
    (pkg / "config.yaml").write_text(
        "model_name: hubbed\ndiffusers:\n  model: some-org/some-model\n  tasks: [text2img]\n"
    )
    r = impasto(
        "serve",
        str(pkg),
        "--port",
        "0",
        env={"HF_HUB_OFFLINE": "1", "IMPASTO_HOME": str(tmp_path / "home")},
    )
    assert r.returncode == 6, r.stderr
    assert "impasto models import NAME some-org/some-model" in r.stderr
    assert "Traceback" not in r.stderr
    failed = [line for line in r.stderr.splitlines() if "failed to load" in line]
    assert len(failed) == 1


def test_reload_serves_a_syntax_error_as_503_until_it_is_fixed(serve_process, tmp_path):
    pkg = tmp_path / "echo"
    shutil.copytree(PACKAGES / "echo", pkg)
    shutil.copytree(PACKAGES / "shared_lib", tmp_path / "shared_lib")
    model = pkg / "model" / "model.py"
    good = model.read_text()
    model.write_text(good + "\ndef broken(:\n")
    server = serve_process(pkg, "--reload", live=False)

    def answer():
        try:
            return server.client.post("/predict", json={"text": "hi"}, timeout=10)
        except httpx.TransportError:
            return None

    assert _eventually(lambda: (r := answer()) is not None and r.status_code == 503, 120)
    error = answer().json()["error"]
    assert "model.py" in error["message"] and "line" in error["message"]
    model.write_text(good)
    assert _eventually(lambda: (r := answer()) is not None and r.status_code == 200, 120)


def test_startup_says_what_happens_and_probes_are_not_access_logged(serve_process, tmp_path):
    home = tmp_path / "home"
    server = serve_process(REPO / "examples" / "tiny-sd", env={"IMPASTO_HOME": str(home)})
    server.wait_ready(timeout=300)
    server.client.get("/health/ready")
    server.client.get("/metrics")
    server.client.post("/text2img", json={"prompt": "x", "num_inference_steps": 1})
    server.stop()
    logs = server.logs()
    assert "building tiny-sd into the model store" in logs
    assert "loading tiny-sd:latest" in logs
    ready = [line for line in logs.splitlines() if "ready in" in line]
    assert len(ready) == 1
    assert f"http://127.0.0.1:{server.port}" in ready[0] and "/docs" in ready[0]
    assert '"POST /text2img HTTP/1.1" 200' in logs
    assert "GET /health/ready" not in logs and "GET /metrics" not in logs


# -- HTTP surface ---------------------------------------------------------------------------


def test_docs_work_offline(serve_thread):
    server = serve_thread(PACKAGES / "echo")
    page = server.client.get("/docs")
    assert page.status_code == 200 and "http" not in page.text.split("<body>")[0].lower()
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    script = server.client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert server.client.get("/docs/assets/swagger-ui.css").status_code == 200


def test_unknown_paths_and_wrong_methods_answer_json(serve_thread):
    server = serve_thread(PACKAGES / "echo")
    missing = server.client.post("/nowhere", json={})
    assert missing.status_code == 404
    message = missing.json()["error"]["message"]
    assert "POST /nowhere" in message and "POST /predict" in message
    assert "GET /health/ready" in message
    wrong = server.client.get("/predict")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == {
        "type": "method_not_allowed",
        "message": "/predict does not take GET; it takes POST",
        "field": None,
    }


def test_every_outcome_is_counted_4xx_included(serve_thread):
    server = serve_thread(CALLPATH)
    server.client.post("/pictures", json={"images": "nope"})
    server.client.post("/predict", content=b"{bad")
    text = server.client.get("/metrics").text
    assert metric(text, "impasto_requests_total", endpoint="pictures", outcome="invalid_input")
    assert metric(text, "impasto_requests_total", endpoint="predict", outcome="malformed_input")


# -- the CLI --------------------------------------------------------------------------------


def test_version_debug_anywhere_and_help_with_examples():
    from impasto import __version__

    assert impasto("--version").stdout.strip() == f"impasto {__version__}"
    plain = impasto("predict", str(PACKAGES / "echo"), "-d", "{oops")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = impasto("predict", str(PACKAGES / "echo"), "-d", "{oops", "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    for command in ("serve", "predict", "init", "models import", "models list"):
        text = impasto(*command.split(), "--help").stdout
        assert "Example: impasto" in text, command
        assert "<bool>" not in text
    serve_help = impasto("serve", "--help").stdout
    assert "<debug|info|warning|error|critical>" in serve_help
    bad = impasto("serve", str(PACKAGES / "echo"), "--log-level", "loud", "--port", "0")
    assert bad.returncode == 2 and "'loud' is not one of" in bad.stderr


def test_predict_writes_media_as_the_server_encodes_it(tmp_path):
    env = {"IMPASTO_HOME": str(tmp_path / "home")}
    example = str(REPO / "examples" / "tiny-sd")
    base = {"prompt": "x", "seed": 1, "num_inference_steps": 1}
    jpeg = impasto("predict", example, "-d", json.dumps({**base, "output_format": "jpeg"}), env=env)
    assert jpeg.returncode == 0, jpeg.stderr
    body = json.loads(jpeg.stdout)
    assert body["images"][0]["format"] == "jpeg"
    assert ": " not in jpeg.stdout.split('"images"')[0]  # compact, as the server answers
    one = tmp_path / "fox.png"
    r = impasto("predict", example, "-d", json.dumps(base), "-o", str(one), env=env)
    assert r.returncode == 0, r.stderr
    assert one.read_bytes().startswith(b"\x89PNG")
    two = json.dumps({**base, "num_images": 2})
    refused = impasto("predict", example, "-d", two, "-o", str(tmp_path / "two.png"), env=env)
    assert refused.returncode == 2 and "pass a folder" in refused.stderr
    folder = tmp_path / "out"
    r = impasto("predict", example, "-d", two, "-o", f"{folder}/", env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png"]


def test_predict_url_to_a_server_that_is_down_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = impasto("predict", "--url", f"http://127.0.0.1:{port}", "-d", "{}")
    assert r.returncode == 13
    assert r.stderr.strip().startswith("error: no server answers at")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("accept", ["image/png", "video/mp4"])
def test_an_accept_the_result_cannot_meet_is_406(tmp_path, serve_process, accept):
    server = serve_process(
        REPO / "examples" / "tiny-sd", env={"IMPASTO_HOME": str(tmp_path / "home")}
    )
    server.wait_ready(timeout=300)
    images = 2 if accept == "image/png" else 1
    r = server.client.post(
        "/text2img",
        json={"prompt": "x", "num_inference_steps": 1, "num_images": images},
        headers={"Accept": accept},
    )
    assert r.status_code == 406, r.text
    error = r.json()["error"]
    assert error["type"] == "not_acceptable" and "application/json" in error["message"]
    if images == 2:
        assert "multipart/mixed" in error["message"]
    else:
        assert "image/png" in error["message"]
