"""Every impasto package (zero-code diffusers, @impasto.endpoint classes) answers the
SageMaker contract too: /ping, and /invocations mapping toolkit bodies onto its endpoints,
driven with httpx and boto3."""

from __future__ import annotations

import base64

import pytest

from sagemaker_http import image, png, post, runtime

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def zero_code_srv(tiny_sd, tmp_path_factory, serve_module):
    folder = tmp_path_factory.mktemp("zero-code")
    (folder / "config.yaml").write_text(
        f"model_name: tiny\ndiffusers:\n  model: {tiny_sd}\n  default_steps: 2\n"
    )
    return serve_module(folder)


def test_zero_code_package_answers_toolkit_bodies(zero_code_srv):
    assert zero_code_srv.client.get("/ping").status_code == 200
    body = {"inputs": "a fox", "parameters": {"num_inference_steps": 2, "seed": 1}}
    r = post(zero_code_srv, body, Accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert image(r.content).size == (64, 64)
    body["parameters"]["num_images_per_prompt"] = 2
    r = post(zero_code_srv, body)
    assert r.status_code == 200, r.text
    assert r.json()["seeds"] == [1, 2]
    assert len(r.json()["images"]) == 2


def test_zero_code_package_custom_attributes_pick_the_endpoint(zero_code_srv):
    image_b64 = base64.b64encode(png((64, 64))).decode()
    body = {"inputs": "a fox", "parameters": {"image": image_b64, "strength": 0.5, "seed": 2}}
    r = post(
        zero_code_srv,
        body,
        Accept="image/jpeg",
        **{"X-Amzn-SageMaker-Custom-Attributes": "endpoint=img2img"},
    )
    assert r.status_code == 200, r.text
    assert image(r.content).format == "JPEG"
    r = post(zero_code_srv, body, **{"X-Amzn-SageMaker-Custom-Attributes": "endpoint=nope"})
    assert r.status_code == 404
    assert "img2img" in r.json()["error"]["message"]


def test_zero_code_package_bad_fields_are_422_naming_them(zero_code_srv):
    r = post(zero_code_srv, {"inputs": "a fox", "parameters": {"num_inference_steps": 0}})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "num_inference_steps"
    r = post(zero_code_srv, png(), content_type="image/png")
    assert r.status_code == 400


def test_zero_code_package_through_boto3(zero_code_srv):
    r = runtime(zero_code_srv).invoke_endpoint(
        EndpointName="tiny",
        Body=b'{"inputs": "a fox", "parameters": {"seed": 5}}',
        ContentType="application/json",
        Accept="image/webp",
    )
    assert r["ContentType"] == "image/webp"
    assert image(r["Body"].read()).format == "WEBP"


def test_endpoint_class_package_maps_json_to_its_endpoints(tmp_path, serve_module):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(
        "import impasto\n\n\nclass Model:\n"
        "    @impasto.endpoint\n    def echo(self, text: str) -> dict:\n        return {'echo': text}\n\n"
        "    @impasto.endpoint\n    def shout(self, text: str) -> dict:\n        return {'shout': text.upper()}\n"
    )
    server = serve_module(tmp_path)
    assert server.client.get("/ping").status_code == 200
    assert post(server, {"text": "hi"}).json() == {"echo": "hi"}
    assert post(server, {"inputs": "hi"}).json() == {"echo": "hi"}
    attrs = {"X-Amzn-SageMaker-Custom-Attributes": "trace=1;endpoint=shout"}
    assert post(server, {"text": "hi"}, **attrs).json() == {"shout": "HI"}
    assert post(server, {"txt": "hi"}).status_code == 422
