"""Media over HTTP against real servers: every input transport, every output envelope, every
limit, several endpoints on one model, and the image-tools example package.

Three servers run the same test model (``tests/packages/media_io``) with different
``media:`` settings: the defaults, tight limits, and URLs plus other output defaults.
"""

from __future__ import annotations

import base64
import email
import email.policy
import http.server
import io
import json
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import yaml
from PIL import Image as PILImage

from conftest import PACKAGES, REPO, ThreadServer, metric
from impasto import Audio, Video, build_app
from impasto.media import encode

# -- media to send ---------------------------------------------------------------------------


def make_image(w: int = 32, h: int = 24, mode: str = "RGB", seed: int = 0) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    img = PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return img if mode == "RGB" else img.convert(mode)


def image_bytes(img: PILImage.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def gif_bytes(frames: int, w: int = 16, h: int = 12) -> bytes:
    images = [make_image(w, h, seed=i) for i in range(frames)]
    return image_bytes(images[0], "GIF", save_all=True, append_images=images[1:], duration=100)


def declared_size(png: bytes, w: int, h: int) -> bytes:
    """A small PNG whose header claims another size: what a decompression bomb looks like."""
    ihdr = struct.pack(">II", w, h) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


PNG = image_bytes(make_image())
RGBA_PNG = image_bytes(make_image(mode="RGBA"))
MP4 = encode(Video([make_image(32, 16, seed=i) for i in range(5)], fps=10), format="mp4").data
WAV = Audio.from_array(np.sin(np.linspace(0, 200, 8000)), 16000).data
CSV = b"a,b\n1,2\n"

SAMPLES = {  # field -> (bytes, content type, file name)
    "image": (RGBA_PNG, "image/png", "photo.png"),
    "video": (MP4, "video/mp4", "clip.mp4"),
    "audio": (WAV, "audio/wav", "voice.wav"),
    "file": (CSV, "text/csv", "table.csv"),
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{b64(data)}"


def decoded(response: httpx.Response) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(response.content))
    img.load()
    return img


def from_json(item: dict) -> bytes:
    data = item["data"]
    return base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data)


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/mixed response, as (content type, bytes)."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + response.content, policy=email.policy.HTTP)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in message.iter_parts()]


def assert_error(response: httpx.Response, status: int, field: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    for word in words:
        assert word in error["message"], error
    assert response.headers["x-request-id"]
    return error


# -- servers ---------------------------------------------------------------------------------


class _Files(http.server.BaseHTTPRequestHandler):
    """A loopback file server for the URL transport."""

    routes: dict[str, tuple[bytes, str]] = {}
    release = threading.Event()  # /slow answers only once the test sets it

    def do_GET(self):
        if self.path == "/slow":
            self.release.wait(30)
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/photo.png")
            self.end_headers()
            return
        body, content_type = self.routes.get(self.path, (b"missing", "text/plain"))
        self.send_response(200 if self.path in self.routes else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # /slow writes to a client that gave up: expected


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    _Files.routes = {f"/{name}": (data, ctype) for data, ctype, name in SAMPLES.values()}
    _Files.routes["/big.png"] = (b"\x89PNG" + bytes(300_000), "image/png")
    httpd = _Quiet(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def serve_module() -> Iterator[Callable[[Path], ThreadServer]]:
    started: list[ThreadServer] = []

    def start(path: Path) -> ThreadServer:
        server = ThreadServer(build_app(path)).start()
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def variant(tmp_path_factory, name: str, config: dict) -> Path:
    """media_io with more config.yaml keys."""
    root = tmp_path_factory.mktemp(name) / name
    shutil.copytree(PACKAGES / "media_io", root)
    base = yaml.safe_load((root / "config.yaml").read_text())
    (root / "config.yaml").write_text(yaml.safe_dump({**base, **config}))
    return root


@pytest.fixture(scope="module")
def io_server(serve_module) -> ThreadServer:
    return serve_module(PACKAGES / "media_io")


@pytest.fixture(scope="module")
def strict(serve_module, tmp_path_factory) -> ThreadServer:
    config = {
        "runtime": {"max_body_bytes": 60_000},
        "media": {
            "allow_urls": True,  # but not to private addresses
            "max_part_bytes": 20_000,
            "max_pixels": 256 * 256,
            "max_frames": 4,
            "allowed_content_types": ["image/png", "image/jpeg", "image/gif", "video/*"],
        },
    }
    return serve_module(variant(tmp_path_factory, "strict", config))


@pytest.fixture(scope="module")
def open_server(serve_module, tmp_path_factory) -> ThreadServer:
    config = {
        "media": {
            "allow_urls": True,
            "allow_private_urls": True,  # the loopback file server of these tests
            "url_timeout_s": 3,  # /slow never answers; a loaded machine still fetches in time
            "max_part_bytes": 200_000,
            "data_uri": True,
            "image_format": "webp",
            "video_format": "gif",
            "quality": 40,
        }
    }
    return serve_module(variant(tmp_path_factory, "open", config))


@pytest.fixture(scope="module")
def tools(serve_module) -> ThreadServer:
    return serve_module(REPO / "examples" / "image-tools")


# -- inputs: each media kind in each transport ------------------------------------------------


def send(client: httpx.Client, field: str, transport: str, files_url: str = "") -> httpx.Response:
    data, ctype, name = SAMPLES[field]
    if transport == "multipart":
        return client.post("/inputs", files={field: (name, data, ctype)}, data={"note": "mp"})
    value = {
        "base64": lambda: b64(data),
        "data-uri": lambda: data_uri(data, ctype),
        "url": lambda: f"{files_url}/{name}",
    }[transport]()
    return client.post("/inputs", json={field: value, "note": transport})


EXPECTED = {
    "image": {"width": 32, "height": 24, "mode": "RGBA"},
    "video": {"frames": 5, "fps": 10.0, "size": [32, 16]},
    "audio": {"content_type": "audio/wav", "rate": 16000},
}


@pytest.mark.parametrize("transport", ["base64", "data-uri", "multipart", "url"])
@pytest.mark.parametrize("field", list(SAMPLES))
def test_each_media_kind_in_each_transport(io_server, open_server, files, field, transport):
    server = open_server if transport == "url" else io_server  # URLs need media.allow_urls
    r = send(server.client, field, transport, files)
    assert r.status_code == 200, r.text
    got = r.json()[field]
    if field == "file":
        assert got["bytes"] == len(CSV)
        plain = transport == "base64"  # plain base64 carries no content type
        assert got["content_type"] == ("application/octet-stream" if plain else "text/csv")
        assert got["filename"] == ("table.csv" if transport == "multipart" else None)
    else:
        assert {k: got[k] for k in EXPECTED[field]} == EXPECTED[field]


def test_urls_are_refused_by_default(io_server, files):
    for field, (_, _, name) in SAMPLES.items():
        r = io_server.client.post("/inputs", json={field: f"{files}/{name}"})
        assert_error(r, 422, field, "media.allow_urls is false")


def test_private_urls_are_refused_unless_allowed(strict, files):
    r = strict.client.post("/predict", json={"image": f"{files}/photo.png"})
    assert_error(r, 422, "image", "non-public address 127.0.0.1", "media.allow_private_urls")


def test_url_fetch_follows_redirects_with_a_size_cap_and_a_timeout(open_server, files):
    moved = open_server.client.post("/predict", json={"image": f"{files}/moved"})
    assert moved.status_code == 200 and moved.json()["width"] == 32
    big = open_server.client.post("/predict", json={"image": f"{files}/big.png"})
    assert_error(big, 413, "image", "media.max_part_bytes 200000")
    try:  # /slow never answers while the request waits: only the timeout can end it
        slow = open_server.client.post("/predict", json={"image": f"{files}/slow"})
        assert_error(slow, 422, "image", "media.url_timeout_s")
    finally:
        _Files.release.set()
    missing = open_server.client.post("/predict", json={"image": f"{files}/nope.png"})
    assert_error(missing, 422, "image", "HTTP 404")


def test_image_mode_is_the_declared_one(io_server):
    r = io_server.client.post("/predict", files={"image": ("a.png", RGBA_PNG, "image/png")})
    assert (r.json()["mode"], len(r.json()["corner"])) == ("RGB", 3)  # RGBA sent, RGB declared
    mask = image_bytes(make_image(8, 8, "RGB"))
    edit = io_server.client.post("/tools/edit", json={"image": b64(PNG), "mask": b64(mask)})
    assert edit.status_code == 200 and edit.json()["mode"] == "RGB"


@pytest.mark.parametrize("transport", ["multipart", "base64"])
def test_exif_orientation_is_applied(io_server, transport):
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    jpeg = image_bytes(make_image(40, 20), "JPEG", exif=exif.tobytes())
    if transport == "multipart":
        r = io_server.client.post("/predict", files={"image": ("p.jpg", jpeg, "image/jpeg")})
    else:
        r = io_server.client.post("/predict", json={"image": b64(jpeg)})
    assert (r.json()["width"], r.json()["height"]) == (20, 40)


def test_multipart_form_values_json_part_and_repeated_files(io_server):
    small = image_bytes(make_image(8, 6))
    r = io_server.client.post(
        "/inputs",
        data={"note": "form values", "count": "3"},
        files=[("images", ("a.png", PNG, "image/png")), ("images", ("b.png", small, "image/png"))],
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["note"], out["count"]) == ("form values", 3)  # "3" validated into an int
    assert [(i["width"], i["height"]) for i in out["images"]] == [(32, 24), (8, 6)]
    r = io_server.client.post(
        "/inputs",
        files={
            "json": (None, json.dumps({"note": "one json part", "count": 2}), "application/json"),
            "image": ("a.png", PNG, "image/png"),
        },
    )
    assert r.json()["note"] == "one json part" and r.json()["image"]["width"] == 32
    one = io_server.client.post("/inputs", files={"images": ("a.png", PNG, "image/png")})
    assert len(one.json()["images"]) == 1  # one part for a list field is a list of one


def test_pydantic_input_model_by_json_and_multipart(io_server):
    mask = image_bytes(make_image(4, 4), "PNG")
    by_json = io_server.client.post(
        "/tools/edit", json={"image": data_uri(PNG, "image/png"), "mask": b64(mask), "scale": 2}
    )
    by_form = io_server.client.post(
        "/v1/models/media-io/edit",
        files={"image": ("i.png", PNG, "image/png"), "mask": ("m.png", mask, "image/png")},
        data={"scale": "2"},
    )
    assert by_json.status_code == by_form.status_code == 200, by_form.text
    assert by_json.json() == by_form.json()
    assert (by_json.json()["width"], by_json.json()["height"]) == (64, 48)
    bad = io_server.client.post("/tools/edit", data={"scale": "9"}, files={"image": ("i", PNG)})
    assert_error(bad, 422, "scale", "less than or equal to 4")


# -- bad input and limits: 4xx naming the field -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (PNG[: len(PNG) // 2], "not a valid image"),  # truncated
        (b"hello, I am text", "not an image (its bytes are no known image format)"),
        (MP4, "not an image (video/mp4)"),  # another kind of media
    ],
    ids=["truncated", "text", "video"],
)
def test_bad_image_uploads_are_422_naming_the_field(io_server, data, message):
    r = io_server.client.post("/predict", files={"image": ("x.png", data, "image/png")})
    assert_error(r, 422, "image", message)
    r = io_server.client.post("/predict", json={"image": b64(data)})
    assert_error(r, 422, "image", message)


def test_wrong_types_and_missing_parts_are_422_naming_the_field(io_server):
    assert_error(io_server.client.post("/predict", json={"image": 42}), 422, "image", "got int")
    assert_error(
        io_server.client.post("/predict", json={"image": "not base64!"}), 422, "image", "base64"
    )
    missing = io_server.client.post("/tools/edit", files={"mask": ("m.png", PNG, "image/png")})
    assert_error(missing, 422, "image", "Field required")
    in_list = io_server.client.post("/inputs", json={"images": [b64(PNG), b64(b"oops")]})
    assert_error(in_list, 422, "images.1", "not an image")
    card = {"title": "t", "image": b64(b"oops"), "thumbnails": []}
    nested = io_server.client.post("/recaption", json={"card": card})
    assert_error(nested, 422, "card.image", "not an image")
    text = io_server.client.post("/predict", files={"image": ("a.txt", b"hi", "text/plain")})
    assert_error(text, 422, "image", "not an image (text/plain)")
    assert "object at 0x" not in text.text
    video = io_server.client.post("/inputs", files={"video": ("v.mp4", b"\0" * 64, "video/mp4")})
    assert_error(video, 422, "video", "not a valid video")
    audio = io_server.client.post("/inputs", json={"audio": b64(PNG)})
    assert_error(audio, 422, "audio", "audio")


def test_media_errors_carry_the_request_id(io_server):
    r = io_server.client.post(
        "/predict", json={"image": b64(b"nope")}, headers={"X-Request-ID": "media-err-1"}
    )
    assert r.status_code == 422 and r.headers["x-request-id"] == "media-err-1"


def test_decompression_bomb_is_413_naming_the_field_never_a_crash(io_server, strict):
    bomb = declared_size(PNG, 5_000, 5_000)  # 25 M pixels claimed by a 2 KB file
    r = io_server.client.post("/predict", files={"image": ("bomb.png", bomb, "image/png")})
    assert_error(r, 413, "image", "5000x5000", "media.max_pixels 16777216")
    huge = declared_size(PNG, 50_000, 50_000)  # past Pillow's own bomb check too
    r = io_server.client.post("/predict", json={"image": b64(huge)})
    assert_error(r, 413, "image", "decompression bomb")
    r = io_server.client.post("/tools/edit", json={"image": b64(PNG), "mask": b64(bomb)})
    assert_error(r, 413, "mask", "media.max_pixels")
    real = image_bytes(PILImage.new("L", (2000, 2000)))  # 4 M pixels that compress to 4 KB
    assert len(real) < 20_000
    r = strict.client.post("/predict", files={"image": ("zeros.png", real, "image/png")})
    assert_error(r, 413, "image", "2000x2000", "media.max_pixels 65536")
    assert io_server.client.post("/predict", json={"image": b64(PNG)}).status_code == 200


def test_oversize_part_is_413_naming_the_field(strict):
    noise = image_bytes(make_image(100, 100))  # 30 KB: over 20 KB a part, under 60 KB a body
    assert 20_000 < len(noise) < 40_000
    r = strict.client.post("/predict", files={"image": ("n.png", noise, "image/png")})
    assert_error(r, 413, "image", f"{len(noise)} bytes", "media.max_part_bytes")
    r = strict.client.post("/predict", data={"image": b64(noise)})  # base64 as a form value
    assert_error(r, 413, "image", "media.max_part_bytes 20000")
    r = strict.client.post("/predict", json={"image": b64(noise)})
    assert_error(r, 413, "image", "media.max_part_bytes 20000")


def test_body_limit_is_413(strict):
    body = bytes(70_000)
    r = strict.client.post("/predict", files={"image": ("big.png", body, "image/png")})
    assert_error(r, 413, "body", "runtime.max_body_bytes")
    r = strict.client.post("/predict", json={"image": b64(body)})
    assert_error(r, 413, "body", "runtime.max_body_bytes")


def test_frame_limit_is_413_naming_the_field(strict):
    ok = strict.client.post("/inputs", files={"video": ("ok.gif", gif_bytes(3), "image/gif")})
    assert ok.status_code == 200 and ok.json()["video"]["frames"] == 3
    r = strict.client.post("/inputs", files={"video": ("long.gif", gif_bytes(6), "image/gif")})
    assert_error(r, 413, "video", "6 frames exceeds media.max_frames 4")
    r = strict.client.post("/inputs", json={"video": b64(MP4)})  # 5 frames
    assert_error(r, 413, "video", "media.max_frames 4")


def test_content_types_outside_the_allowed_list_are_422(strict):
    webp = image_bytes(make_image(), "WEBP")
    r = strict.client.post("/predict", files={"image": ("a.webp", webp, "image/webp")})
    assert_error(r, 422, "image", "image/webp is not allowed", "media.allowed_content_types")
    r = strict.client.post("/inputs", json={"audio": b64(WAV)})
    assert_error(r, 422, "audio", "audio/wav is not allowed")
    assert strict.client.post("/predict", json={"image": b64(PNG)}).status_code == 200


# -- outputs: each kind with each Accept ------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "fmt"), [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")]
)
def test_accept_an_image_type_returns_raw_bytes(io_server, accept, fmt):
    r = io_server.client.post(
        "/image", json={"width": 40, "height": 30}, headers={"Accept": accept}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == accept
    img = decoded(r)
    assert (img.format, img.size) == (fmt, (40, 30))


def test_json_is_the_default_with_plain_base64(io_server):
    for accept in (None, "*/*", "application/json"):
        headers = {"Accept": accept} if accept else {}
        r = io_server.client.post("/image", json={}, headers=headers)
        assert r.headers["content-type"] == "application/json"
        out = r.json()
        assert {k: out[k] for k in ("content_type", "format", "width", "height")} == {
            "content_type": "image/png",
            "format": "png",
            "width": 32,
            "height": 24,
        }
        assert not out["data"].startswith("data:")
        assert PILImage.open(io.BytesIO(from_json(out))).size == (32, 24)


def test_config_sets_data_uris_and_the_default_format(open_server):
    out = open_server.client.post("/image", json={}).json()
    assert out["format"] == "webp"  # media.image_format
    assert out["data"].startswith("data:image/webp;base64,")  # media.data_uri
    assert PILImage.open(io.BytesIO(from_json(out))).format == "WEBP"
    video = open_server.client.post("/video", json={}).json()
    assert (video["format"], video["frames"]) == ("gif", 4)  # media.video_format
    star = open_server.client.post("/image", json={}, headers={"Accept": "image/*"})
    assert star.headers["content-type"] == "image/webp"


def test_output_format_and_quality_from_the_body(io_server):
    def size(body: dict) -> int:
        r = io_server.client.post("/image", json={"width": 96, "height": 96, **body})
        assert r.json()["format"] == body["output_format"]
        return len(from_json(r.json()))

    assert size({"output_format": "jpeg", "quality": 10}) < size(
        {"output_format": "jpeg", "quality": 95}
    )
    assert size({"output_format": "webp", "quality": 10}) < size(
        {"output_format": "webp", "quality": 95}
    )
    raw = io_server.client.post(
        "/image", json={"output_format": "jpeg"}, headers={"Accept": "image/*"}
    )
    assert raw.headers["content-type"] == "image/jpeg" and decoded(raw).format == "JPEG"
    form = io_server.client.post("/image", data={"output_format": "webp", "quality": "50"})
    assert form.json()["format"] == "webp"
    bad = io_server.client.post("/image", json={"output_format": "bmp"})
    assert_error(bad, 422, "output_format", "'png', 'jpeg' or 'webp'")  # the model's schema
    bad = io_server.client.post("/image", json={"quality": 0})
    assert_error(bad, 422, "quality", "greater than or equal to 1")


def test_output_format_and_quality_from_the_query(io_server):
    r = io_server.client.post("/plain?output_format=webp&quality=30", json={})
    assert r.json()["format"] == "webp"
    r = io_server.client.post("/plain?output_format=jpg", json={}, headers={"Accept": "image/*"})
    assert r.headers["content-type"] == "image/jpeg"
    bad = io_server.client.post("/plain?output_format=bmp", json={})
    assert_error(bad, 422, "output_format", "not a image format")
    bad = io_server.client.post("/plain?quality=high", json={})
    assert_error(bad, 400, "quality", "integer")


def test_a_models_own_quality_field_is_left_alone(io_server):
    r = io_server.client.post("/grade", json={"quality": "final"})
    assert r.status_code == 200, r.text
    assert (r.json()["format"], r.json()["height"]) == ("png", 32)
    bad = io_server.client.post("/grade", json={"quality": "best"})
    assert_error(bad, 422, "quality", "'draft' or 'final'")


def test_several_images_as_json_or_multipart_mixed(io_server):
    listed = io_server.client.post("/images", json={"count": 3}).json()
    assert [(i["format"], i["width"]) for i in listed] == [("png", 16), ("png", 17), ("png", 18)]
    r = io_server.client.post("/images", json={"count": 3}, headers={"Accept": "multipart/mixed"})
    assert r.headers["content-type"].startswith("multipart/mixed; boundary=")
    got = parts(r)
    assert [ctype for ctype, _ in got] == ["image/png"] * 3
    assert [PILImage.open(io.BytesIO(data)).size for _, data in got] == [
        (16, 8),
        (17, 8),
        (18, 8),
    ]
    jpeg = io_server.client.post(
        "/images?output_format=jpeg", json={"count": 2}, headers={"Accept": "multipart/mixed"}
    )
    assert [ctype for ctype, _ in parts(jpeg)] == ["image/jpeg"] * 2


def test_numpy_array_output(io_server):
    raw = io_server.client.post("/array", json={}, headers={"Accept": "image/png"})
    img = decoded(raw)
    assert (img.size, img.mode) == ((20, 10), "RGB")
    out = io_server.client.post("/array", json={}).json()
    assert (out["format"], out["width"], out["height"]) == ("png", 20, 10)


@pytest.mark.parametrize(
    ("accept", "container"),
    [("video/mp4", "mp4"), ("image/gif", "gif"), ("image/webp", "webp"), (None, "mp4")],
)
def test_video_output(io_server, accept, container):
    headers = {"Accept": accept} if accept else {}
    r = io_server.client.post("/video", json={"frames": 4, "fps": 8}, headers=headers)
    assert r.status_code == 200, r.text
    if accept is None:
        out = r.json()
        assert (out["format"], out["frames"], out["content_type"]) == ("mp4", 4, "video/mp4")
        data = from_json(out)
    else:
        assert r.headers["content-type"] == accept
        data = r.content
    if container == "mp4":
        with av.open(io.BytesIO(data)) as media:
            assert len(list(media.decode(video=0))) == 4
    else:
        img = PILImage.open(io.BytesIO(data))
        assert (img.format, img.n_frames) == (container.upper(), 4)


def test_file_output_by_its_content_type_or_json(io_server):
    raw = io_server.client.post("/file", json={"text": "x,y"}, headers={"Accept": "text/csv"})
    assert raw.headers["content-type"].startswith("text/csv") and raw.content == b"x,y"
    out = io_server.client.post("/file", json={"text": "x,y"}).json()
    assert (out["content_type"], out["format"], out["filename"]) == ("text/csv", "csv", "table.csv")
    assert from_json(out) == b"x,y"
    images_only = io_server.client.post("/file", json={}, headers={"Accept": "image/png"})
    assert images_only.headers["content-type"] == "application/json"


def test_audio_in_and_out(io_server):
    r = io_server.client.post("/audio", files={"clip": ("v.wav", WAV, "audio/wav")})
    out = r.json()
    assert out["rate"] == 16000 and out["clip"]["content_type"] == "audio/wav"
    assert from_json(out["clip"]) == WAV  # kept as sent
    raw = io_server.client.post(
        "/audio", json={"clip": data_uri(WAV, "audio/wav")}, headers={"Accept": "audio/wav"}
    )
    assert raw.headers["content-type"] == "audio/wav" and raw.content == WAV


def test_pydantic_output_model_holding_images(io_server):
    out = io_server.client.post("/card", json={"title": "hi"}).json()
    assert out["title"] == "hi"
    assert (out["image"]["format"], out["image"]["width"], out["image"]["height"]) == (
        "png",
        24,
        12,
    )
    assert [t["width"] for t in out["thumbnails"]] == [8, 8]
    r = io_server.client.post("/card", json={}, headers={"Accept": "multipart/mixed"})
    assert [ctype for ctype, _ in parts(r)] == ["image/png"] * 3
    back = io_server.client.post("/recaption", json={"card": out})  # an output is an input
    assert back.status_code == 200, back.text
    assert back.json()["title"] == "HI!" and back.json()["image"]["width"] == 24


# -- several endpoints on one model ------------------------------------------------------------


def test_openapi_has_both_request_bodies_and_distinct_schemas(io_server):
    spec = io_server.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def body(path: str) -> dict:
        return spec["paths"][path]["post"]["requestBody"]["content"]

    def props(ref: dict) -> dict:
        return schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"]

    predict, edit = body("/predict"), body("/tools/edit")
    for content in (predict, edit):
        assert set(content) == {"application/json", "multipart/form-data"}
        assert content["application/json"]["schema"] == content["multipart/form-data"]["schema"]
    assert set(props(predict["application/json"]["schema"])) == {"image"}
    edit_props = props(edit["application/json"]["schema"])
    assert set(edit_props) == {"image", "mask", "scale"}
    assert edit_props["image"]["format"] == "binary"
    assert edit_props["image"]["contentMediaType"] == "image/*"
    assert any(o.get("format") == "binary" for o in edit_props["mask"]["anyOf"])
    inputs = props(body("/inputs")["multipart/form-data"]["schema"])
    assert inputs["images"]["items"]["format"] == "binary"
    assert set(body("/image")) == {"application/json"}  # no media field: no multipart body
    # outputs: media fields are the encoded object a JSON response carries
    ok = spec["paths"]["/card"]["post"]["responses"]["200"]["content"]["application/json"]
    card = schemas[ok["schema"]["$ref"].rsplit("/", 1)[1]]
    assert card["properties"]["image"]["required"] == ["data", "content_type", "format"]
    recaption = props(body("/recaption")["application/json"]["schema"])["card"]
    assert recaption["$ref"] != ok["schema"]["$ref"]  # one model, an input and an output side
    assert props(recaption)["image"]["format"] == "binary"
    assert set(props(body("/card")["application/json"]["schema"])) == {"title"}  # not clobbered
    refs = set(re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs <= set(schemas)  # every reference resolves
    schema = io_server.client.get("/v1/models/media-io/schema").json()
    assert schema["input_schema"]["properties"]["image"]["format"] == "binary"


def test_metrics_count_each_endpoint(io_server):
    io_server.client.post("/image", json={})
    io_server.client.post("/tools/edit", json={"image": b64(PNG)})
    text = io_server.client.get("/metrics").text
    for endpoint in ("image", "edit"):
        assert metric(text, "impasto_requests_total", endpoint=endpoint, outcome="ok") >= 1


# -- the image-tools example ----------------------------------------------------------------


def test_example_render_returns_an_image(tools):
    r = tools.client.post(
        "/render",
        json={"width": 200, "height": 80, "start": "black", "end": "white", "text": ""},
        headers={"Accept": "image/png"},
    )
    img = decoded(r)
    assert img.size == (200, 80)
    assert img.getpixel((0, 0)) == (0, 0, 0) and min(img.getpixel((199, 79))) > 250
    out = tools.client.post("/render", json={"output_format": "jpeg", "quality": 60}).json()
    assert (out["format"], out["width"], out["height"]) == ("jpeg", 512, 256)
    bad = tools.client.post("/render", json={"start": "not-a-colour"})
    assert_error(bad, 422, "start", "unknown color")


def test_example_edit_applies_an_effect_inside_the_mask(tools):
    photo = make_image(64, 48)
    mask = PILImage.new("L", (32, 24), 0)
    mask.paste(255, (0, 0, 16, 24))  # the left half, at half the size
    r = tools.client.post(
        "/edit",
        files={
            "image": ("photo.png", image_bytes(photo), "image/png"),
            "mask": ("mask.png", image_bytes(mask), "image/png"),
        },
        data={"effect": "invert"},
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200, r.text
    out = decoded(r)
    assert out.getpixel((60, 20)) == photo.getpixel((60, 20))  # outside the mask: untouched
    inverted = tuple(255 - c for c in photo.getpixel((4, 20)))
    assert out.getpixel((4, 20)) == inverted
    by_json = tools.client.post("/edit", json={"image": b64(image_bytes(photo)), "effect": "blur"})
    assert by_json.json()["format"] == "png"
    bmp = tools.client.post("/edit", files={"image": ("p.bmp", image_bytes(photo, "BMP"))})
    assert_error(bmp, 422, "image", "image/bmp is not allowed")


def test_example_variants_and_predict(tools):
    photo = image_bytes(make_image(300, 200))
    r = tools.client.post(
        "/variants", files={"image": ("p.png", photo)}, headers={"Accept": "multipart/mixed"}
    )
    got = parts(r)
    assert len(got) == 4
    assert {PILImage.open(io.BytesIO(data)).size for _, data in got} == {(256, 171)}
    named = tools.client.post("/variants", json={"image": b64(photo), "size": 64}).json()
    assert named["names"] == ["original", "mirror", "grayscale", "poster"]
    assert {i["width"] for i in named["images"]} == {64}
    summary = tools.client.post("/predict", files={"image": ("p.png", photo)}).json()
    assert (summary["width"], summary["height"]) == (300, 200)
    assert summary["mean_color"].startswith("#") and 1 <= len(summary["palette"]) <= 5
    assert (summary["thumbnail"]["width"], summary["thumbnail"]["height"]) == (128, 85)


def test_example_openapi_and_examples_file(tools):
    spec = tools.client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/predict", "/render", "/edit", "/variants"} <= set(paths)
    assert set(paths["/render"]["post"]["requestBody"]["content"]) == {"application/json"}
    assert "multipart/form-data" in paths["/edit"]["post"]["requestBody"]["content"]
    refs = {p: paths[p]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            for p in ("/predict", "/render", "/edit", "/variants")}  # fmt: skip
    assert len(set(refs.values())) == 4
    examples = yaml.safe_load((REPO / "examples/image-tools/examples.yaml").read_text())
    for example in examples:
        r = tools.client.post("/render", json=example["input"], headers={"Accept": "image/*"})
        assert r.status_code == 200, (example["name"], r.text)
        fmt = example["input"].get("output_format", "png")
        assert r.headers["content-type"] == f"image/{fmt}"


def test_docs_python_examples_run(tools, tmp_path, monkeypatch, capsys):
    """Every Python block of docs/media.md, each on its own, against the example package."""
    text = (REPO / "docs" / "media.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        code = block.replace("http://localhost:8080", tools.url)
        exec(compile(code, f"docs/media.md python block {i}", "exec"), {"__name__": "docs"})
    assert {"banner.png", "mask.png", "edited.png", "render.webp", "media-3.png"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert PILImage.open("edited.png").size == (384, 128)
    printed = capsys.readouterr().out
    for line in ("webp 512 256", "422 image", "image: not a valid image: image file is truncated"):
        assert line in printed
