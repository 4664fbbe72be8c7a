"""The playground's pieces without a browser: forms read from schemas, the request built
from the form, the curl and Python snippets, when the page is on, the browser redirect."""

from __future__ import annotations

import base64
import json
import shlex

import httpx
import pytest

from conftest import PACKAGES
from impasto import build_app
from impasto.config import DiffusersConfig
from impasto.diffusers.schemas import make_schemas
from impasto.server.openapi import schema_of
from impasto.ui import is_loopback, ui_enabled
from impasto.ui.describe import endpoint_view, views_from_openapi
from impasto.ui.forms import Form, FormError, payload_from
from impasto.ui.snippets import Upload, curl_command, python_snippet


def view_of(task: str):
    model = make_schemas(DiffusersConfig(model="-", default_steps=4))[task]
    defs: dict = {}
    return endpoint_view("sd", task, f"/{task}", schema_of(model, defs), defs)


def test_widgets_follow_the_schema() -> None:
    view = view_of("inpaint")
    kinds = {f.name: f.kind for f in view.fields}
    assert kinds["prompt"] == "prompt"
    assert kinds["seed"] == "seed"
    assert kinds["num_inference_steps"] == "slider"
    assert kinds["scheduler"] == "choice"
    assert kinds["loras"] == "json"
    assert (kinds["image"], kinds["mask"]) == ("image", "mask")
    assert [f.name for f in view.mask_pair] == ["image", "mask"]
    steps = view.field("num_inference_steps")
    assert (steps.minimum, steps.maximum, steps.default, steps.step) == (1, 150, 4, 1)
    strength = view.field("strength")  # exclusiveMinimum 0: the slider starts one step up
    assert strength.minimum == pytest.approx(0.01) and strength.maximum == 1
    width = view.field("width")  # nullable, default None: a box that may stay empty
    assert width.kind == "integer" and width.nullable and width.default is None
    advanced = {f.name for f in view.fields if f.advanced}
    assert {"num_images", "loras", "output_format", "quality"} <= advanced
    assert not {"prompt", "image", "mask", "seed", "num_inference_steps"} & advanced


def test_views_from_an_openapi_document_of_several_models(serve_thread) -> None:
    server = serve_thread([PACKAGES / "steps", PACKAGES / "echo"])
    views = views_from_openapi(server.client.get("/openapi.json").json())
    assert [m.name for m in views] == ["steps", "echo"]
    count = next(e for e in views[0].endpoints if e.endpoint == "count")
    assert count.path == "/v1/models/steps/count"
    assert [f.name for f in count.fields] == ["n", "block_at"]
    assert views[1].endpoints[0].raw  # no input schema: the body is JSON text


def _form(view, readers) -> Form:
    return Form(view, inputs=[None] * len(readers), readers=readers)


def test_payload_leaves_out_defaults_and_names_bad_values() -> None:
    view = view_of("text2img")
    f = view.field
    form = _form(
        view,
        [
            (f("prompt"), "text"),
            (f("negative_prompt"), "text"),
            (f("num_inference_steps"), "number"),
            (f("width"), "numtext"),
            (f("scheduler"), "choice"),
            (f("seed"), "seed"),
            (f("seed"), "seed-random"),
            (f("loras"), "json"),
        ],
    )
    payload = payload_from(form, ["a cat", "", 4.0, "", "(default)", 7, False, ""])
    assert payload == {"prompt": "a cat", "seed": 7}  # steps 4 is the default
    payload = payload_from(form, ["a cat", "", 9.0, "96", "DDIMScheduler", 0, True, "[]"])
    assert payload["num_inference_steps"] == 9 and isinstance(payload["num_inference_steps"], int)
    assert payload["width"] == 96 and payload["scheduler"] == "DDIMScheduler"
    assert 0 <= payload["seed"] < 2**32  # random: picked here, so the request is repeatable
    with pytest.raises(FormError) as bad:
        payload_from(form, ["a cat", "", 4, "wide", "(default)", 1, False, ""])
    assert bad.value.field == "width"
    with pytest.raises(FormError) as bad:
        payload_from(form, ["a cat", "", 4, "", "(default)", 1, False, "[{"])
    assert bad.value.field == "loras"


def test_snippets_are_the_request(serve_thread) -> None:
    payload = {"text": 'it\'s "quoted"', "n": 2}
    curl = curl_command("http://h:1", "/predict", payload, api_key=True)
    args = shlex.split(curl.replace("\\\n", " "))
    assert args[:3] == ["curl", "-s", "http://h:1/predict"]
    assert json.loads(args[args.index("-d") + 1]) == payload
    assert "Authorization: Bearer $IMPASTO_API_KEY" in args
    media = {"prompt": "[a] cat", "image": Upload("photo.png", b"x", "image/png"), "strength": 0.5}
    curl = curl_command("http://h:1", "/img2img", media)
    assert "-F image=@photo.png" in curl and "-F strength=0.5" in curl
    assert "-F 'prompt=\"[a] cat\"'" in curl  # JSON-looking text is sent as a JSON string
    server = serve_thread(PACKAGES / "echo")
    namespace: dict = {}
    exec(python_snippet(server.url, "/predict", {"text": "hi"}), namespace)
    assert namespace["result"]["shout"] == "HI"


def test_when_the_playground_is_on(monkeypatch) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert ui_enabled(None, None, "127.0.0.1") is True  # Gradio is installed here
    assert ui_enabled(None, None, "0.0.0.0") is False  # listening everywhere: opt in
    assert ui_enabled(None, True, "0.0.0.0") is True
    assert ui_enabled(False, True, "127.0.0.1") is False  # the flag wins over config
    import impasto.ui as ui

    monkeypatch.setattr(ui, "available", lambda: False)
    assert ui_enabled(None, None, "127.0.0.1") is False
    with pytest.raises(Exception, match=r"impasto\[ui\]"):
        ui_enabled(True, None, "127.0.0.1")


def test_root_redirects_browsers_only(serve_thread) -> None:
    app = build_app(PACKAGES / "steps", ui=True)
    from conftest import ThreadServer

    server = ThreadServer(app).start()
    try:
        server.wait_ready()
        assert server.client.get("/").json() is True
        assert server.client.get("/", headers={"Accept": "application/json"}).json() is True
        html = server.client.get("/", headers={"Accept": "text/html,*/*"})
        assert html.status_code == 307 and html.headers["location"] == "/ui/"
        page = httpx.get(server.url + "/ui/", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    finally:
        server.stop()
    plain = serve_thread(PACKAGES / "steps")  # without the playground: no page, no redirect
    assert plain.client.get("/ui/").status_code == 404
    assert plain.client.get("/", headers={"Accept": "text/html"}).json() is True


def test_a_lone_media_result_or_string_is_shown_as_json(tmp_path) -> None:
    from impasto.ui.results import split_outputs

    png = base64.b64encode(b"\x89PNG fake").decode()
    out = split_outputs({"data": png, "content_type": "image/png", "format": "png"}, tmp_path)
    assert out.rest == {"output": "<image image-1.png>"} and len(out.images) == 1
    assert split_outputs("plain text", tmp_path).rest == {"output": "plain text"}
    assert split_outputs({"n": 1}, tmp_path).rest == {"n": 1}
