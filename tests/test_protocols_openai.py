"""The OpenAI Images API through the official ``openai`` SDK, against a real server on
loopback: every conformance check of the wire reference (generations, url and b64_json,
n, sizes, formats, edits with a mask and with ``image[]``, variations, streaming with
partial images, errors as the SDK's exception classes, ``models.list()``), on a
three-model server where ``model`` picks the model, and on a one-model server where any
name does."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from conftest import PACKAGES, ThreadServer, metric

pytestmark = pytest.mark.timeout(600)


def _client(server: ThreadServer, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="local", max_retries=0, **kwargs)


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _png(size=(64, 64), mode="RGB", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _mask(size=(64, 64)) -> bytes:
    """OpenAI's mask: the transparent left half is what to repaint."""
    img = Image.new("RGBA", size, (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def single():
    """A server with one model: any model name maps to it."""
    from impasto import build_app

    server = ThreadServer(build_app(PACKAGES / "painter")).start()
    server.wait_ready()
    yield server
    server.stop()


# 4.7 check 1 ---------------------------------------------------------------------------------
def test_any_model_name_on_a_one_model_server_returns_a_png(single):
    r = _client(single).images.generate(model="any", prompt="fox")
    assert isinstance(r.created, int) and len(r.data) == 1
    img = _image(r.data[0].b64_json)
    assert img.format == "PNG" and img.size == (16, 16)


def test_model_picks_the_served_model_by_name(three_models):
    c = _client(three_models)
    sd = c.images.generate(model="sd", prompt="a red fox", extra_body={"seed": 1})
    assert _image(sd.data[0].b64_json).size == (64, 64)  # the tiny-sd default size
    painter = c.images.generate(model="painter", prompt="a red fox")
    assert _image(painter.data[0].b64_json).size == (16, 16)  # the painter's default
    with pytest.raises(openai.NotFoundError) as err:
        c.images.generate(model="dall-e-3", prompt="x")
    assert err.value.code == "model_not_found" and err.value.param == "model"
    assert "sd, painter, typed" in err.value.message


def test_a_model_that_makes_no_images_says_so(three_models):
    with pytest.raises(openai.BadRequestError) as err:  # typed answers text
        _client(three_models).images.generate(model="typed", prompt="fox")
    assert err.value.param == "model" and "does not make images" in err.value.message


def test_without_a_model_the_default_model_answers(three_models):
    r = three_models.client.post("/v1/images/generations", json={"prompt": "fox"})
    assert r.status_code == 200, r.text
    assert _image(r.json()["data"][0]["b64_json"]).size == (64, 64)


# check 2 -------------------------------------------------------------------------------------
def test_url_and_b64_json(three_models):
    c = _client(three_models)
    r = c.images.generate(model="sd", prompt="fox", response_format="url")
    url = r.data[0].url
    assert url.startswith(three_models.url + "/v1/images/results/") and r.data[0].b64_json is None
    got = three_models.client.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(got.content)).size == (64, 64)
    assert three_models.client.get(url[:-3] + "xyz").status_code == 404
    b64 = c.images.generate(model="sd", prompt="fox", response_format="b64_json")
    assert b64.data[0].url is None and _image(b64.data[0].b64_json).format == "PNG"


# check 3 -------------------------------------------------------------------------------------
def test_n_images_and_bounds(three_models):
    c = _client(three_models)
    assert len(c.images.generate(model="sd", prompt="fox", n=3).data) == 3
    for n in (0, 11):
        with pytest.raises(openai.BadRequestError) as err:
            c.images.generate(model="sd", prompt="fox", n=n)
        assert err.value.param == "n" and err.value.type == "invalid_request_error"


def test_n_beyond_a_models_own_limit_is_a_400_naming_n(three_models):
    with pytest.raises(openai.BadRequestError) as err:  # models.yaml lets sd make 3 at once
        _client(three_models).images.generate(model="sd", prompt="fox", n=4)
    assert err.value.param == "n"


# check 4 -------------------------------------------------------------------------------------
def test_size_sets_the_image_dimensions(three_models):
    c = _client(three_models)
    r = c.images.generate(model="painter", prompt="fox", size="512x768")
    assert _image(r.data[0].b64_json).size == (512, 768)
    assert r.size == "512x768"
    sd = c.images.generate(model="sd", prompt="fox", size="96x64", extra_body={"seed": 2})
    assert _image(sd.data[0].b64_json).size == (96, 64)  # width x height
    auto = c.images.generate(model="painter", prompt="fox", size="auto")
    assert _image(auto.data[0].b64_json).size == (16, 16)
    for size in ("4096x4096", "big"):
        with pytest.raises(openai.BadRequestError) as err:
            c.images.generate(model="sd", prompt="fox", size=size)
        assert err.value.param == "size"


# check 5 -------------------------------------------------------------------------------------
def test_output_format_compression_and_background(three_models):
    c = _client(three_models)
    r = c.images.generate(model="sd", prompt="fox", output_format="webp", output_compression=80)
    data = base64.b64decode(r.data[0].b64_json)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and r.output_format == "webp"
    jpeg = c.images.generate(model="sd", prompt="fox", output_format="jpeg")
    assert base64.b64decode(jpeg.data[0].b64_json)[:3] == b"\xff\xd8\xff"
    with pytest.raises(openai.BadRequestError) as err:
        c.images.generate(model="sd", prompt="fox", background="transparent", output_format="jpeg")
    assert err.value.param == "background"
    with pytest.raises(openai.BadRequestError) as err:
        c.images.generate(model="sd", prompt="fox", output_format="tiff")
    assert err.value.param == "output_format"


def test_quality_maps_to_a_steps_preset(three_models):
    c = _client(three_models)

    def steps_for(quality: str) -> float:
        before = metric(three_models.client.get("/metrics").text, _STEPS, model="painter")
        c.images.generate(model="painter", prompt="fox", quality=quality)
        return metric(three_models.client.get("/metrics").text, _STEPS, model="painter") - before

    # the painter's default is 4 steps: low is half of it, high twice, auto the default
    assert [steps_for(q) for q in ("low", "auto", "high")] == [2, 4, 8]
    with pytest.raises(openai.BadRequestError) as err:
        c.images.generate(model="sd", prompt="fox", quality="ultra")
    assert err.value.param == "quality"


_STEPS = "impasto_progress_steps_total"


# check 6 -------------------------------------------------------------------------------------
def test_edit_with_a_mask_and_n_as_a_form_string(three_models):
    r = _client(three_models).images.edit(
        model="sd",
        image=("in.png", _png(), "image/png"),
        mask=("mask.png", _mask(), "image/png"),
        prompt="add a hat",
        n=2,
        extra_body={"seed": 3},
    )
    assert len(r.data) == 2
    assert all(_image(d.b64_json).size == (64, 64) for d in r.data)


def test_edit_several_images_as_image_array(three_models):
    r = _client(three_models).images.edit(
        model="sd",
        image=[("a.png", _png(), "image/png"), ("b.png", _png(color=(0, 0, 255)), "image/png")],
        prompt="make it blue",
        n=1,
    )
    assert len(r.data) == 2  # n results per image


def test_variations_are_img2img_with_an_empty_prompt(three_models):
    r = _client(three_models).images.create_variation(
        model="sd", image=("a.png", _png(), "image/png"), n=2, response_format="url"
    )
    assert len(r.data) == 2 and all(
        three_models.client.get(d.url).status_code == 200 for d in r.data
    )


# check 7 -------------------------------------------------------------------------------------
def test_a_mask_of_another_size_is_a_400_naming_the_mask(three_models):
    c = _client(three_models)
    with pytest.raises(openai.BadRequestError) as err:
        c.images.edit(
            model="sd",
            image=("in.png", _png(), "image/png"),
            mask=("mask.png", _mask((32, 32)), "image/png"),
            prompt="x",
        )
    assert err.value.param == "mask" and "32x32" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:  # no alpha: nothing says what to edit
        c.images.edit(
            model="sd",
            image=("in.png", _png(), "image/png"),
            mask=("mask.png", _png(), "image/png"),
            prompt="x",
        )
    assert err.value.param == "mask"


# check 8 -------------------------------------------------------------------------------------
def test_stream_with_partial_images(three_models):
    events = list(
        _client(three_models).images.generate(
            model="sd", prompt="fox", stream=True, partial_images=1, extra_body={"seed": 4}
        )
    )
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image", "image_generation.completed"]
    assert events[0].partial_image_index == 0
    assert _image(events[0].b64_json).size == (64, 64)
    assert _image(events[-1].b64_json).size == (64, 64)


def test_stream_on_a_custom_package_and_on_edits(three_models):
    c = _client(three_models)
    events = list(c.images.generate(model="painter", prompt="fox", stream=True, partial_images=3))
    assert [e.type for e in events].count("image_generation.partial_image") == 3
    edits = list(
        c.images.edit(
            model="sd",
            image=("in.png", _png(), "image/png"),
            prompt="x",
            stream=True,
            partial_images=1,
        )
    )
    assert edits[-1].type == "image_edit.completed"


# check 9 -------------------------------------------------------------------------------------
def test_missing_prompt_is_a_400_naming_it(three_models):
    r = three_models.client.post("/v1/images/generations", json={"model": "sd"})
    assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
    assert r.json()["error"]["param"] == "prompt" and "x-request-id" in r.headers
    with pytest.raises(openai.BadRequestError) as err:
        _client(three_models).images.generate(model="sd", prompt="")
    assert err.value.param == "prompt"


def test_a_model_error_is_a_500_the_sdk_does_not_retry(three_models):
    before = metric(
        three_models.client.get("/metrics").text,
        "impasto_requests_total",
        model="painter",
        outcome="model_error",
    )
    c = openai.OpenAI(base_url=three_models.url + "/v1", api_key="local", max_retries=2)
    with pytest.raises(openai.InternalServerError) as err:
        c.images.generate(model="painter", prompt="fox", extra_body={"fail": True})
    assert err.value.type == "server_error" and "dropped its brush" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"
    after = metric(
        three_models.client.get("/metrics").text,
        "impasto_requests_total",
        model="painter",
        outcome="model_error",
    )
    assert after == before + 1  # asked once: x-should-retry: false kept the SDK from retrying


# check 10 ------------------------------------------------------------------------------------
def test_models_list(three_models):
    models = list(_client(three_models).models.list())
    assert [m.id for m in models] == ["sd", "painter", "typed"]
    assert all(m.object == "model" and isinstance(m.created, int) for m in models)
    assert all(m.owned_by == "impasto" for m in models)


def test_unknown_fields_are_ignored_and_endpoint_fields_pass_through(three_models):
    r = three_models.client.post(
        "/v1/images/generations",
        json={"model": "painter", "prompt": "fox", "style": "vivid", "moderation": "low",
              "frame_count": 3, "seed": 7, "width_hint": 1},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    again = three_models.client.post(
        "/v1/images/generations",
        json={"model": "painter", "prompt": "fox", "seed": 7},
    )
    assert r.json()["data"] == again.json()["data"]  # the same seed, the same image
