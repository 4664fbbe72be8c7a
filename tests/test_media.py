"""impasto.media without a server: every transport in, every format out, every limit."""

from __future__ import annotations

import base64
import email
import email.policy
import http.server
import io
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import pytest
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from impasto.config import MediaConfig
from impasto.errors import InputError, ModelError, PayloadTooLarge
from impasto.media import (
    Audio,
    Encoded,
    File,
    Image,
    UploadedFile,
    Video,
    decode_image,
    decode_video,
    encode,
    encode_multipart,
    find_media,
    format_for_accept,
    is_media,
    load_bytes,
    media_kind,
    to_jsonable,
)
from impasto.media.decode import _is_public

CFG = MediaConfig()


def make_image(w: int = 64, h: int = 48, seed: int = 0) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def image_bytes(img: PILImage.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


PNG = image_bytes(make_image())


def frames(count: int = 6, w: int = 48, h: int = 32) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (count, h, w, 3), dtype=np.uint8)


# -- transports ----------------------------------------------------------------------------


def _b64_ragged(data: bytes) -> str:
    text = base64.b64encode(data).decode().rstrip("=")
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(PNG).decode(),
        _b64_ragged(PNG),
        base64.urlsafe_b64encode(PNG).decode(),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        PNG,
        bytearray(PNG),
        UploadedFile(PNG, "application/octet-stream", "x.png"),
        {"data": base64.b64encode(PNG).decode(), "content_type": "image/png"},
    ],
    ids=["b64", "ragged-b64", "urlsafe", "data-uri", "bytes", "bytearray", "upload", "envelope"],
)
def test_load_bytes_transports(value):
    data, content_type = load_bytes(value, field="image", config=CFG)
    assert data == PNG
    assert content_type == "image/png"  # sniffed, whatever was declared


@pytest.mark.parametrize("value", ["not base64!", "abcde", "ÿÿÿÿ", 42, ""])
def test_load_bytes_bad_values_name_the_field(value):
    with pytest.raises(InputError) as err:
        load_bytes(value, field="image", config=CFG)
    assert err.value.field == "image" and err.value.message.startswith("image: ")
    assert not isinstance(err.value, PayloadTooLarge)


def test_oversize_bytes_and_base64_are_413():
    small = MediaConfig(max_part_bytes=100)
    for value in (PNG, base64.b64encode(PNG).decode(), UploadedFile(PNG)):
        with pytest.raises(PayloadTooLarge, match=r"exceeds media.max_part_bytes 100") as err:
            load_bytes(value, field="image", config=small)
        assert err.value.field == "image"


def test_allowed_content_types():
    jpeg = image_bytes(make_image(), "JPEG")
    only_png = MediaConfig(allowed_content_types=["image/png"])
    with pytest.raises(InputError, match=r"image/jpeg is not allowed; .*image/png"):
        load_bytes(jpeg, field="image", config=only_png)
    images = MediaConfig(allowed_content_types=["image/*"])
    assert load_bytes(jpeg, field="image", config=images)[1] == "image/jpeg"


def test_urls_refused_by_default_and_other_schemes_always():
    with pytest.raises(InputError, match="allow_urls is false"):
        load_bytes("https://example.com/a.png", field="image", config=CFG)
    with pytest.raises(InputError, match="file:// URLs are not accepted"):
        load_bytes("file:///etc/passwd", field="image", config=MediaConfig(allow_urls=True))


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self):
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _Handler.routes = {
        "/a.png": (200, {"Content-Type": "image/png", "Content-Length": str(len(PNG))}, PNG),
        "/stream": (200, {}, b"x" * 5000),  # no Content-Length: read until close
        "/hop": (302, {"Location": "/a.png"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


PRIVATE_OK = MediaConfig(allow_urls=True, allow_private_urls=True)


def test_url_fetch_when_allowed(server):
    assert load_bytes(f"{server}/a.png", field="image", config=PRIVATE_OK) == (PNG, "image/png")
    assert load_bytes(f"{server}/hop", field="image", config=PRIVATE_OK)[0] == PNG


def test_url_to_loopback_refused_without_allow_private(server):
    with pytest.raises(InputError, match=r"non-public address 127\.0\.0\.1") as err:
        load_bytes(f"{server}/a.png", field="image", config=MediaConfig(allow_urls=True))
    assert err.value.field == "image"


def test_url_errors(server):
    with pytest.raises(InputError, match="HTTP 404"):
        load_bytes(f"{server}/nope", field="image", config=PRIVATE_OK)
    with pytest.raises(InputError, match="only http"):
        load_bytes(f"{server}/to-file", field="image", config=PRIVATE_OK)
    capped = MediaConfig(allow_urls=True, allow_private_urls=True, max_part_bytes=1000)
    for path in ("/a.png", "/stream"):
        with pytest.raises(PayloadTooLarge, match="max_part_bytes 1000"):
            load_bytes(f"{server}{path}", field="image", config=capped)


NON_PUBLIC = "127.0.0.1 10.1.2.3 192.168.0.1 169.254.169.254 100.64.0.1 224.0.0.1 0.0.0.0 ::1"


@pytest.mark.parametrize("address", [*NON_PUBLIC.split(), "fe80::1%eth0", "::ffff:127.0.0.1"])
def test_non_public_addresses_are_refused(address):
    assert not _is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert _is_public(address)


# -- image decode --------------------------------------------------------------------------


def test_exif_orientation_is_applied():
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = image_bytes(make_image(40, 20), "JPEG", exif=exif.tobytes())
    assert decode_image(data, field="image", config=CFG).size == (20, 40)


def test_mode_conversion():
    rgba = image_bytes(make_image().convert("RGBA"))
    assert decode_image(rgba, field="image", config=CFG, mode="L").mode == "L"
    assert decode_image(rgba, field="image", config=CFG).mode == "RGBA"


@pytest.mark.parametrize("data", [PNG[: len(PNG) // 2], b"hello, not an image", PNG[:30]])
def test_broken_images_are_422_naming_the_field(data):
    with pytest.raises(InputError, match=r"^photo: not a(n| valid) image") as err:
        decode_image(data, field="photo", config=CFG)
    assert err.value.field == "photo" and not isinstance(err.value, PayloadTooLarge)


def _declare_size(png: bytes, w: int, h: int) -> bytes:
    """A small PNG whose header claims another size (what a decompression bomb looks like)."""
    ihdr = struct.pack(">II", w, h) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


def test_pixel_limit_checked_on_the_header():
    with pytest.raises(PayloadTooLarge) as err:
        decode_image(_declare_size(PNG, 5000, 5000), field="image", config=CFG)
    assert err.value.message == (
        "image: 5000x5000 = 25000000 pixels exceeds media.max_pixels 16777216"
    )
    assert err.value.field == "image"


def test_decompression_bomb_beyond_pillow_limit_is_413():
    lenient = MediaConfig(max_pixels=10**9)  # Pillow's own bomb check answers first
    with pytest.raises(PayloadTooLarge) as err:
        decode_image(_declare_size(PNG, 30000, 30000), field="image", config=lenient)
    assert err.value.field == "image"


# -- pydantic ------------------------------------------------------------------------------


Gray = Image["L"]  # an alias: linters read a string inside an annotation as a name


class Inputs(BaseModel):
    image: Image
    gray: Gray | None = None
    images: list[Image] = []
    video: Video | None = None
    doc: File | None = None
    clip: Audio | None = None


def test_pydantic_fields_validate_every_media_kind():
    mp4 = encode(Video(frames(5), fps=5), format="mp4").data
    wav = Audio.from_array(np.sin(np.linspace(0, 100, 1600)), 16000).data
    model = Inputs.model_validate(
        {
            "image": base64.b64encode(PNG).decode(),
            "gray": PNG,
            "images": [PNG, make_image()],
            "video": base64.b64encode(mp4).decode(),
            "doc": UploadedFile(b"a,b\n1,2\n", "text/csv", "t.csv"),
            "clip": wav,
        }
    )
    assert model.image.size == (64, 48) and model.gray.mode == "L"
    assert len(model.images) == 2 and model.images[1].size == (64, 48)
    assert len(model.video) == 5 and model.video.size == (48, 32) and model.video.fps == 5
    assert model.doc == File(b"a,b\n1,2\n", "text/csv", "t.csv")
    assert model.clip.sample_rate == 16000 and model.clip.content_type == "audio/wav"
    dumped = model.model_dump(mode="json", context={"media": MediaConfig(data_uri=True)})
    assert dumped["image"]["data"].startswith("data:image/png;base64,iVBOR")
    assert dumped["video"]["frames"] == 5 and dumped["doc"]["filename"] == "t.csv"


def test_pydantic_errors_carry_the_loc():
    with pytest.raises(ValidationError) as err:
        Inputs.model_validate({"image": PNG, "images": [PNG, "bad!"], "clip": b"not audio"})
    errors = {e["loc"]: e["msg"] for e in err.value.errors()}
    assert "not valid base64" in errors[("images", 1)]
    assert "not a valid audio file" in errors[("clip",)]


def test_pydantic_limit_is_413_naming_the_field():
    context = {"media": MediaConfig(max_pixels=100)}
    with pytest.raises(PayloadTooLarge, match=r"^image: 64x48") as err:
        Inputs.model_validate({"image": PNG}, context=context)
    assert err.value.field == "image"
    with pytest.raises(PayloadTooLarge, match="max_frames 3"):
        mp4 = encode(Video(frames(6)), format="mp4").data
        Inputs.model_validate({"image": PNG, "video": mp4}, context={"media": {"max_frames": 3}})


def test_signature_style_model_and_schema():
    model = create_model("PredictInput", image=(Image["RGB"], ...), scale=(float, 1.0))
    value = model.model_validate({"image": image_bytes(make_image().convert("RGBA"))})
    assert value.image.mode == "RGB"
    schema = model.model_json_schema()["properties"]["image"]
    assert schema["type"] == "string" and schema["format"] == "binary"
    assert schema["contentMediaType"] == "image/*" and "base64" in schema["description"]
    out = model.model_json_schema(mode="serialization")["properties"]["image"]
    assert out["type"] == "object" and out["required"] == ["data", "content_type", "format"]
    assert media_kind(Image) == media_kind(Image["RGB"]) == media_kind(list[Image]) == "image"
    assert media_kind(Video | None) == "video" and media_kind(int) is None
    with pytest.raises(TypeError, match="not a PIL mode"):
        Image["XYZ"]


def test_video_decode_errors():
    with pytest.raises(InputError, match=r"^clip: not a valid video"):
        decode_video(b"\x00" * 300, field="clip", config=CFG)
    gif = encode(Video(frames(6)), format="gif").data
    with pytest.raises(PayloadTooLarge, match=r"clip: 6 frames exceeds media\.max_frames 2"):
        decode_video(gif, field="clip", config=MediaConfig(max_frames=2))


# -- encode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "content_type"),
    [
        ("png", "png", "image/png"),
        ("jpeg", "jpeg", "image/jpeg"),
        ("JPG", "jpeg", "image/jpeg"),
        ("webp", "webp", "image/webp"),
        ("image/webp", "webp", "image/webp"),
    ],
)
def test_encode_image_formats(fmt, name, content_type):
    enc = encode(make_image(), format=fmt)
    assert (enc.format, enc.content_type, enc.width, enc.height) == (name, content_type, 64, 48)
    decoded = PILImage.open(io.BytesIO(enc.data))
    assert decoded.format == name.upper() and decoded.size == (64, 48)


def test_encode_quality_and_limits():
    img = make_image(128, 128)
    assert len(encode(img, format="jpeg", quality=20).data) < len(
        encode(img, format="jpeg", quality=95).data
    )
    with pytest.raises(InputError) as err:
        encode(img, format="jpeg", quality=101)
    assert err.value.field == "quality"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_is_lossless(mode, level):
    img = make_image(37, 21).convert(mode)
    enc = encode(img, format="png", config=MediaConfig(png_compress_level=level))
    back = PILImage.open(io.BytesIO(enc.data))
    assert back.mode == img.mode
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_rgba_to_jpeg_flattens_on_white():
    arr = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    arr[:4, :, :] = (255, 0, 0, 255)  # opaque red top half
    out = np.asarray(PILImage.open(io.BytesIO(encode(arr, format="jpeg").data)))
    assert out[6, 4].min() > 240 and out[1, 4, 0] > 200 and out[1, 4, 1] < 60


@pytest.mark.parametrize(
    ("array", "mode"),
    [
        (np.zeros((10, 12, 3), np.uint8), "RGB"),
        (np.zeros((10, 12, 4), np.uint8), "RGBA"),
        (np.zeros((10, 12), np.uint8), "L"),
        (np.zeros((10, 12, 1), np.uint8), "L"),
        (np.full((10, 12, 3), 0.5, np.float32), "RGB"),
    ],
)
def test_encode_arrays(array, mode):
    back = PILImage.open(io.BytesIO(encode(array, format="png").data))
    assert back.mode == mode and back.size == (12, 10)
    if array.dtype == np.float32:
        assert np.asarray(back)[0, 0, 0] == 128


def test_encode_refuses_odd_arrays():
    for bad in (np.zeros((4, 4, 5), np.uint8), np.zeros((4, 4), np.int64), np.zeros((0, 4, 3))):
        with pytest.raises(ModelError):
            encode(bad)


def test_unknown_format_names_the_allowed_ones():
    with pytest.raises(InputError, match="'bmp' is not a image format; use one of png, jpeg, webp"):
        encode(make_image(), format="bmp")
    with pytest.raises(InputError, match="use one of mp4, gif, webp") as err:
        encode(Video(frames(2)), format="png")
    assert err.value.field == "output_format"


@pytest.mark.parametrize(("w", "h"), [(48, 32), (47, 33)])
@pytest.mark.parametrize("fmt", ["mp4", "gif", "webp"])
def test_video_round_trip(fmt, w, h):
    enc = encode(Video(frames(6, w, h), fps=10), format=fmt)
    even = (w + w % 2, h + h % 2) if fmt == "mp4" else (w, h)
    assert (enc.frames, enc.width, enc.height) == (6, *even)
    if fmt == "mp4":
        with av.open(io.BytesIO(enc.data)) as container:
            decoded = [f.to_image() for f in container.decode(video=0)]
        assert len(decoded) == 6 and decoded[0].size == even
    else:
        img = PILImage.open(io.BytesIO(enc.data))
        assert img.n_frames == 6 and img.size == (w, h)
    back = decode_video(enc.data, field="video", config=CFG)
    assert len(back) == 6 and back.size == even and back.fps == pytest.approx(10, rel=0.05)


def test_video_values():
    pil_frames = [PILImage.fromarray(f) for f in frames(3)]
    assert encode(Video(pil_frames, fps=7)).format == "mp4"
    assert encode(Video(frames(3).astype(np.float32) / 255), format="gif").frames == 3
    with pytest.raises(ValueError, match="at least one frame"):
        Video([])
    with pytest.raises(ModelError, match="differ in size"):
        encode(Video([make_image(10, 10), make_image(12, 10)]))


def test_audio_and_file_pass_through():
    audio = Audio(b"RIFF....WAVE", "audio/wav", 16000)
    assert encode(audio, format="png") == Encoded(audio.data, "audio/wav", "wav")
    enc = encode(File(b"%PDF-1.4", "application/pdf", "report.pdf"))
    assert (enc.format, enc.content_type, enc.filename) == ("pdf", "application/pdf", "report.pdf")


ACCEPT_CASES = """
    image/png                                | image | png
    image/jpeg                               | image | jpeg
    image/webp;q=0.9, image/jpeg;q=0.5       | image | webp
    image/jpeg;q=0.5, image/webp             | image | webp
    image/avif,image/webp,image/*,*/*;q=0.8  | image | webp
    image/*                                  | image | png
    application/json                         | image | -
    application/json, image/png;q=0.5        | image | -
    */*                                      | image | -
    text/html,*/*;q=0.8                      | image | -
    image/png;q=0                            | image | -
    -                                        | image | -
    video/mp4                                | video | mp4
    image/gif                                | video | gif
    image/webp                               | video | webp
    video/*                                  | video | mp4
    image/png                                | video | -
    video/mp4                                | image | -
"""  # Accept header | kind | format (- is None)


@pytest.mark.parametrize("case", ACCEPT_CASES.strip().splitlines())
def test_format_for_accept(case):
    accept, kind, expected = (None if p == "-" else p for p in map(str.strip, case.split("|")))
    assert format_for_accept(accept, kind) == expected


# -- envelopes -----------------------------------------------------------------------------


class Out(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    image: PILImage.Image
    score: float
    mask: Image | None = None


@dataclass
class Pair:
    left: np.ndarray
    label: str


def test_to_jsonable_nested():
    img = make_image()
    value = {
        "out": Out(image=img, score=0.5, mask=make_image(8, 8)),
        "list": [img, (np.float32(1.5), np.int64(3))],
        "pair": Pair(np.zeros((2, 2, 3), np.uint8), "x"),
        "embedding": np.ones((2, 3), np.float32),
        "raw": b"\x00\x01",
        "video": Video(frames(2), fps=4),
        1: None,
    }
    out = to_jsonable(value, config=MediaConfig(data_uri=True))
    json.dumps(out)  # all JSON-able
    media = out["out"]["image"]
    assert media["data"].startswith("data:image/png;base64,")
    assert (media["content_type"], media["format"], media["width"], media["height"]) == (
        "image/png", "png", 64, 48,
    )  # fmt: skip
    assert out["out"]["score"] == 0.5 and out["out"]["mask"]["width"] == 8
    assert out["list"][0]["width"] == 64 and out["list"][1] == [1.5, 3]
    assert out["pair"]["left"]["format"] == "png" and out["pair"]["label"] == "x"
    assert out["embedding"] == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert out["raw"] == "AAE=" and out["1"] is None
    assert out["video"]["frames"] == 2 and out["video"]["content_type"] == "video/mp4"


def test_to_jsonable_format_and_plain_base64():
    out = to_jsonable([make_image(), make_image(8, 8)], format="jpeg", quality=50)
    assert [o["format"] for o in out] == ["jpeg", "jpeg"]
    assert base64.b64decode(out[0]["data"])[:3] == b"\xff\xd8\xff"


def test_find_media_and_is_media():
    img, arr = make_image(), np.zeros((4, 4, 3), np.uint8)
    video, doc = Video(frames(1)), File(b"x")
    value = {"a": [img, {"b": arr}], "m": Out(image=img, score=1), "v": video, "f": doc, "n": 1}
    assert [id(m) for m in find_media(value)] == [id(img), id(arr), id(img), id(video), id(doc)]
    assert find_media(img) == [img] and find_media({"x": 1}) == []
    assert not is_media(np.zeros((4, 4, 3), np.float32)) and not is_media(np.zeros((4, 4, 5)))


def test_multipart_is_parseable():
    parts = [encode(make_image(), format="png"), encode(make_image(), format="jpeg")]
    body, content_type = encode_multipart(parts)
    assert content_type.startswith("multipart/mixed; boundary=")
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    got = [(p.get_content_type(), p.get_filename(), p.get_payload(decode=True)) for p in
           message.iter_parts()]  # fmt: skip
    assert got == [
        ("image/png", "media-0.png", parts[0].data),
        ("image/jpeg", "media-1.jpg", parts[1].data),
    ]
    with pytest.raises(ValueError, match="boundary"):
        encode_multipart([Encoded(b"--abc", "text/plain", "txt")], boundary="abc")


def test_png_keeps_text_metadata_at_every_level():
    import io as _io

    from PIL import Image as _PIL

    from impasto.config import MediaConfig
    from impasto.media import encode as _encode

    image = _PIL.new("RGB", (8, 8), "red")
    image.info["impasto_recipe"] = '{"seed": 1}'
    for level in (1, 6):
        out = _encode(image, format="png", config=MediaConfig(png_compress_level=level))
        back = _PIL.open(_io.BytesIO(out.data))
        back.load()
        assert back.text == {"impasto_recipe": '{"seed": 1}'}
        assert back.getpixel((0, 0)) == (255, 0, 0)
