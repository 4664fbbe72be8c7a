"""Zero-code diffusers through `impasto serve`, over HTTP, against tiny real pipelines.

One server per example package for the whole module: the tiny weights are built into a
session model store on first load, exactly as a user's first `impasto serve` does.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import re
import time
from email.parser import BytesParser
from email.policy import HTTP

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, ProcessServer, metric, sse_events

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def store_home(tmp_path_factory):
    return tmp_path_factory.mktemp("impasto-home")


def _start(name: str, home, tmp_path_factory) -> ProcessServer:
    log = tmp_path_factory.mktemp(f"log-{name}") / "server.log"
    server = ProcessServer(REPO / "examples" / name, env={"IMPASTO_HOME": str(home)}, log=log)
    server.client.timeout = 120
    server.wait_live(120)
    server.wait_ready(300)
    return server


@pytest.fixture(scope="module")
def sd(store_home, tmp_path_factory):
    server = _start("tiny-sd", store_home, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def svd(store_home, tmp_path_factory):
    server = _start("tiny-svd", store_home, tmp_path_factory)
    yield server
    server.stop()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _b64_image(item: dict) -> Image.Image:
    data = item["data"].split(",", 1)[-1]
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _metric(text: str, name: str, labels: str) -> float:
    pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    return metric(text, name, **pairs)


def _image_b64(size=(64, 64), color=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_text2img_json_carries_images_seeds_recipe_and_timings(sd):
    r = sd.client.post("/text2img", json={"prompt": "a red fox", "seed": 3, "num_images": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [item["format"] for item in body["images"]] == ["png", "png"]
    assert all(_b64_image(item).size == (64, 64) for item in body["images"])
    assert body["seeds"] == [3, 4]
    recipe = body["recipe"]
    assert recipe["seed"] == 3 and recipe["steps"] == 4 and recipe["width"] == 64
    assert recipe["model"].startswith("tiny-sd:") and recipe["pipeline"]
    timings = body["timings"]
    assert timings["inference_s"] > 0 and timings["queue_s"] >= 0 and timings["encode_s"] > 0
    assert {"queue", "total", "encode"} <= {
        span.split(";")[0].strip() for span in r.headers["server-timing"].split(",")
    }


def test_predict_is_the_first_task_and_openapi_has_typed_routes(sd):
    r = sd.client.post("/predict", json={"prompt": "x", "seed": 1})
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    spec = sd.client.get("/openapi.json").json()
    for route in ("/text2img", "/img2img", "/inpaint"):
        assert route in spec["paths"]
    schemas = spec["components"]["schemas"]
    text2img = next(v for k, v in schemas.items() if k.startswith("Text2Img"))
    width = text2img["properties"]["width"]["anyOf"][0]
    assert width["maximum"] == 256 and width["multipleOf"] == 8  # limits.max_side from config


def test_raw_png_is_reproducible_from_its_recipe(sd):
    r = sd.client.post(
        "/text2img", json={"prompt": "a lighthouse", "seed": 7}, headers={"Accept": "image/png"}
    )
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    recipe = json.loads(image.text["impasto_recipe"])
    assert recipe["seed"] == 7 and recipe["prompt"] == "a lighthouse"
    again = sd.client.post(
        "/text2img",
        headers={"Accept": "image/png"},
        json={
            "prompt": recipe["prompt"],
            "seed": recipe["seed"],
            "num_inference_steps": recipe["steps"],
            "guidance_scale": recipe["guidance_scale"],
            "width": recipe["width"],
            "height": recipe["height"],
            "scheduler": recipe["scheduler"],
        },
    )
    assert np.abs(_png(again.content) - _png(r.content)).max() <= 1
    other = sd.client.post(
        "/text2img", json={"prompt": "a lighthouse", "seed": 8}, headers={"Accept": "image/png"}
    )
    assert np.abs(_png(other.content) - _png(r.content)).max() > 10


def test_random_seed_is_reported(sd):
    body = sd.client.post("/text2img", json={"prompt": "x"}).json()
    assert isinstance(body["seeds"][0], int) and body["recipe"]["seed"] == body["seeds"][0]


@pytest.mark.parametrize(
    ("fmt", "ctype", "magic"),
    [
        ("jpeg", "image/jpeg", b"\xff\xd8"),
        ("webp", "image/webp", b"RIFF"),
        ("png", "image/png", b"\x89PNG"),
    ],
)
def test_output_formats(sd, fmt, ctype, magic):
    r = sd.client.post(
        "/text2img",
        json={
            "prompt": "x",
            "seed": 1,
            "output_format": fmt,
            "quality": 80,
            "width": 96,
            "height": 64,
        },
        headers={"Accept": ctype},
    )
    assert r.headers["content-type"] == ctype and r.content.startswith(magic)
    assert Image.open(io.BytesIO(r.content)).size == (96, 64)
    as_json = sd.client.post("/text2img", json={"prompt": "x", "seed": 1, "output_format": fmt})
    assert as_json.json()["images"][0]["content_type"] == ctype


def test_several_images_as_multipart(sd):
    r = sd.client.post(
        "/text2img",
        json={"prompt": "x", "seed": 1, "num_images": 3},
        headers={"Accept": "multipart/mixed"},
    )
    assert r.headers["content-type"].startswith("multipart/mixed")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content
    )
    parts = list(message.iter_parts())
    assert len(parts) == 3
    assert all(Image.open(io.BytesIO(p.get_content())).size == (64, 64) for p in parts)


def test_img2img_and_inpaint_json_and_multipart(sd):
    r = sd.client.post(
        "/img2img", json={"prompt": "x", "seed": 1, "image": _image_b64(), "strength": 0.6}
    )
    assert r.status_code == 200, r.text
    assert _b64_image(r.json()["images"][0]).size == (64, 64)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buf, format="JPEG")
    mask = io.BytesIO()
    Image.new("L", (64, 64), 255).save(mask, format="PNG")
    r = sd.client.post(
        "/inpaint",
        data={"prompt": "x", "seed": "2", "strength": "0.9"},
        files={
            "image": ("in.jpg", buf.getvalue(), "image/jpeg"),
            "mask": ("mask.png", mask.getvalue(), "image/png"),
        },
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)


@pytest.mark.parametrize(
    ("route", "payload", "field"),
    [
        ("/text2img", {"prompt": "x", "width": 65}, "width"),
        ("/text2img", {"prompt": "x", "width": 512}, "width"),
        ("/text2img", {"prompt": "x" * 3000}, "prompt"),
        ("/text2img", {"prompt": "x", "num_inference_steps": 500}, "num_inference_steps"),
        ("/text2img", {"prompt": "x", "num_images": 9}, "num_images"),
        ("/text2img", {"prompt": "x", "scheduler": "NoSuchScheduler"}, "scheduler"),
        ("/text2img", {"prompt": "x", "output_format": "bmp"}, "output_format"),
        ("/text2img", {"prompt": "x", "steps": 4}, "steps"),
        ("/text2img", {}, "prompt"),
        ("/img2img", {"prompt": "x", "image": "bm90IGFuIGltYWdl"}, "image"),
        ("/img2img", {"prompt": "x", "image": _image_b64(), "strength": 0}, "strength"),
        ("/inpaint", {"prompt": "x", "image": _image_b64()}, "mask"),
    ],
)
def test_bad_inputs_are_422_naming_the_field(sd, route, payload, field):
    r = sd.client.post(route, json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"].split(".")[0] == field


def test_concurrent_requests_are_batched_and_equal_to_single_runs(sd):
    payloads = [{"prompt": f"prompt {i}", "seed": 100 + i} for i in range(8)]
    singles = [
        _png(sd.client.post("/text2img", json=p, headers={"Accept": "image/png"}).content)
        for p in payloads
    ]
    before = _metric(
        sd.client.get("/metrics").text, "impasto_batch_size_count", 'endpoint="text2img"'
    )
    before_sum = _metric(
        sd.client.get("/metrics").text, "impasto_batch_size_sum", 'endpoint="text2img"'
    )

    def call(payload):
        with httpx.Client(base_url=sd.url, timeout=120) as client:
            return client.post("/text2img", json=payload, headers={"Accept": "image/png"}).content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        batched = [_png(c) for c in pool.map(call, payloads)]
    metrics = sd.client.get("/metrics").text
    calls = _metric(metrics, "impasto_batch_size_count", 'endpoint="text2img"') - before
    items = _metric(metrics, "impasto_batch_size_sum", 'endpoint="text2img"') - before_sum
    assert items == 8 and calls < 8  # merged into fewer pipeline calls
    for alone, together in zip(singles, batched, strict=True):
        assert np.abs(alone - together).max() <= 2  # within 2/255 per pixel


def test_progress_events_then_result(sd):
    with sd.client.stream(
        "POST",
        "/text2img",
        json={"prompt": "x", "seed": 1, "num_inference_steps": 4},
        headers={"Accept": "text/event-stream"},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(r.iter_lines()))
    kinds = [kind for kind, _ in events]
    progress = [data for kind, data in events if kind == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4]
    assert all(p["total"] == 4 and "eta" in p and "elapsed" in p for p in progress)
    assert "preview" in kinds  # preview_every: 2 in the example's config
    assert kinds[-1] == "result"
    assert events[-1][1]["images"][0]["format"] == "png"


def test_disconnect_stops_generation_within_a_step(sd):
    steps = "impasto_progress_steps_total"
    canceled = "impasto_canceled_total"
    text = sd.client.get("/metrics").text
    before = _metric(text, steps, 'endpoint="text2img"')
    gone_before = _metric(text, canceled, 'endpoint="text2img",reason="disconnected"')
    payload = {"prompt": "x", "seed": 1, "num_inference_steps": 50, "width": 256, "height": 256}
    seen = 0
    with (
        httpx.Client(base_url=sd.url, timeout=60) as client,
        client.stream(
            "POST", "/text2img", json=payload, headers={"Accept": "text/event-stream"}
        ) as r,
    ):
        for kind, _data in sse_events(r.iter_lines()):
            if kind == "progress":
                seen += 1
                if seen == 2:
                    break  # leaving the block closes the connection
    # the server records the disconnect with its true reason...
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = sd.client.get("/metrics").text
        if _metric(text, canceled, 'endpoint="text2img",reason="disconnected"') > gone_before:
            break
    else:
        raise AssertionError("the disconnect was never recorded")
    # ...and the pipeline lock is free again only once the canceled call stopped, so a
    # one-step request that completes proves the generation is over
    ok = sd.client.post("/text2img", json={"prompt": "x", "seed": 1, "num_inference_steps": 1})
    assert ok.status_code == 200  # the pipeline stays usable
    after = _metric(sd.client.get("/metrics").text, steps, 'endpoint="text2img"')
    ran = after - before - 1
    assert 2 <= ran < 50, ran  # the server stopped computing well before the last step


def test_img2vid_returns_mp4_and_json(svd):
    import av

    r = svd.client.post(
        "/img2vid",
        json={"image": _image_b64(), "seed": 1, "num_frames": 4, "num_inference_steps": 2},
        headers={"Accept": "video/mp4"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(r.content)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4
    gif = svd.client.post(
        "/img2vid",
        json={
            "image": _image_b64(),
            "seed": 1,
            "num_frames": 4,
            "num_inference_steps": 2,
            "output_format": "gif",
        },
    )
    video = gif.json()["video"]
    assert video["format"] == "gif" and video["frames"] == 4
    bad = svd.client.post("/img2vid", json={"image": _image_b64(), "num_frames": 500})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "num_frames"
