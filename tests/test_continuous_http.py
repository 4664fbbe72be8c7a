"""Continuous batching through a real `impasto serve`, over HTTP, on the tiny SD example.

A long request streams its progress; once it has done two steps a short one is posted.
With step-level batching the short one joins the running batch and answers while the long
one is still denoising; its image equals the same request made alone.
"""

from __future__ import annotations

import concurrent.futures
import io
import shutil

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, ProcessServer, sse_events

pytest.importorskip("diffusers")
pytestmark = pytest.mark.timeout(600)

LONG_STEPS = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("continuous-http")
    package = root / "tiny-sd"
    shutil.copytree(REPO / "examples" / "tiny-sd", package)
    config = yaml.safe_load((package / "config.yaml").read_text())
    config["batching"] = {"mode": "continuous", "max_batch_size": 8}
    # runtime.predict_concurrency stays 1: endpoints that batch themselves get a batch's
    # worth of places (max_batch_size) per slot
    (package / "config.yaml").write_text(yaml.safe_dump(config))
    srv = ProcessServer(package, env={"IMPASTO_HOME": str(root / "home")}, log=root / "log")
    srv.client.timeout = 120
    srv.wait_live(120)
    srv.wait_ready(300)
    yield srv
    srv.stop()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_short_request_joins_a_running_one_and_finishes_first(server):
    short = {"prompt": "a red cat", "seed": 5, "num_inference_steps": 2, "guidance_scale": 1.0}
    png = {"Accept": "image/png"}

    def post_short() -> bytes:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            r = client.post("/text2img", json=short, headers=png)
            assert r.status_code == 200, r.text
            return r.content

    long_payload = {"prompt": "a blue dog", "seed": 4, "num_inference_steps": LONG_STEPS}
    steps, kinds, answered_at = [], [], None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = None
        with server.client.stream(
            "POST", "/text2img", json=long_payload, headers={"Accept": "text/event-stream"}
        ) as r:
            for kind, data in sse_events(r.iter_lines()):
                kinds.append(kind)
                if kind == "progress":
                    steps.append(data["step"])
                    if data["step"] == 2:
                        future = pool.submit(post_short)
                    if future is not None and future.done() and answered_at is None:
                        answered_at = data["step"]
                if kind == "result":
                    result = data
        assert future is not None
        together = _png(future.result())
    assert answered_at is not None and answered_at < LONG_STEPS  # before the long one ended
    assert steps == list(range(1, LONG_STEPS + 1)) and "preview" in kinds
    assert result["recipe"]["steps"] == LONG_STEPS and result["seeds"] == [4]
    alone = _png(server.client.post("/text2img", json=short, headers=png).content)
    assert np.abs(alone - together).max() <= 2
    figures = _engine_metrics(server.client.get("/metrics").text)
    assert figures["impasto_engine_active"] == 0 and figures["impasto_engine_queued"] == 0
    # the short request's two steps rode on the long one's, then it ran alone: 2 more steps;
    # rows: 2 per step with guidance (the long one), 1 without (the short one)
    steps, rows = figures["impasto_engine_steps_total"], figures["impasto_engine_rows_total"]
    assert (steps, rows) == (LONG_STEPS + 2, 2 * LONG_STEPS + 2 + 2)


def _engine_metrics(text: str) -> dict[str, float]:
    return {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("impasto_engine_")
    }
