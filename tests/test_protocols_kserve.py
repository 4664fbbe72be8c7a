"""KServe v2 (the Open Inference Protocol) and KServe v1 through the official clients:
``tritonclient[http]`` in impasto's test environment, and the ``kserve`` client in a venv of
its own (its pins are not impasto's), against real servers on loopback. Every conformance
check of the wire reference but the two exempt ones (``GET /`` and ``GET /v1/models/{name}``
keep their Truss meaning; see docs/protocols.md)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import threading

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from client_venvs import client_venv
from conftest import PACKAGES, ThreadServer

pytestmark = pytest.mark.timeout(900)

KSERVE = "kserve==0.21.0"


def _triton(server: ThreadServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=120)


def _prompt(*texts: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("prompt", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary)
    return tensor


def _png_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


# 3.6 check 1 (the part that is not exempt) and check 2 --------------------------------------
def test_health_and_readiness(three_models):
    c = _triton(three_models)
    assert c.is_server_live() and c.is_server_ready()
    assert all(c.is_model_ready(name) for name in ("sd", "painter", "typed"))
    http = three_models.client
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/models/sd/ready").json() == {"name": "sd", "ready": True}
    unknown = http.get("/v2/models/nope/ready")
    assert unknown.status_code == 404 and "sd, painter, typed" in unknown.json()["error"]
    assert not c.is_model_ready("nope")


def test_ready_is_503_while_a_model_loads():
    from impasto import build_app, load_package

    package = load_package(PACKAGES / "painter")
    package.spec.cls.load_gate = gate = threading.Event()
    server = ThreadServer(build_app(package)).start()
    try:
        c = _triton(server)
        assert c.is_server_live()
        ready = server.client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert server.client.get("/v2/models/painter/ready").status_code == 503
        assert not c.is_server_ready() and not c.is_model_ready("painter")
        gate.set()
        server.wait_ready()
        assert c.is_server_ready() and c.is_model_ready("painter")
    finally:
        gate.set()
        server.stop()


# check 4: KServe v1 for impasto's own packages ----------------------------------------------
def test_v1_instances(three_models):
    http = three_models.client
    r = http.post("/v1/models/sd:predict", json={"instances": ["a cat", {"prompt": "a dog"}]})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 2 and all(p["images"][0]["format"] == "png" for p in predictions)
    painter = http.post("/v1/models/painter:predict", json={"instances": ["fox"]}).json()
    assert painter["predictions"][0]["prompt"] == "fox"
    bad = http.post("/v1/models/sd:predict", json={"instances": "x"})
    assert bad.status_code == 400 and bad.json() == {"error": 'Expected "instances" to be a list'}
    invalid = http.post("/v1/models/sd:predict", json={"instances": [{"prompt": "x", "seed": -1}]})
    assert invalid.status_code == 400 and "seed" in invalid.json()["error"]


def test_one_bad_instance_fails_the_request_and_too_many_are_refused(three_models):
    http = three_models.client
    r = http.post("/v1/models/painter:predict", json={"instances": ["fine", {"prompt": ""}]})
    assert r.status_code == 400 and "prompt" in r.json()["error"]
    many = http.post("/v1/models/painter:predict", json={"instances": ["x"] * 17})
    assert many.status_code == 400 and "runtime.max_request_items" in many.json()["error"]
    assert http.post("/v1/models/painter:predict", json={"instances": ["ok"]}).status_code == 200


def test_v1_other_bodies_keep_impastos_answer_and_truss_packages_keep_truss(three_models):
    http = three_models.client
    plain = http.post("/v1/models/painter:predict", json={"prompt": "fox"})
    assert plain.status_code == 200 and plain.json()["prompt"] == "fox"
    # typed is Truss-shaped: its predict() gets the body as it is, instances or not, and a
    # body its pydantic annotation refuses is Truss's 400 "Input Parsing Error"
    truss = http.post("/v1/models/typed:predict", json={"instances": ["hi"]})
    assert truss.status_code == 400, truss.text
    assert truss.json()["error"].startswith("Input Parsing Error") and "prompt" in truss.text
    assert http.post("/v1/models/typed:predict", json={"prompt": "hi"}).json()["result"] == "hi"


# check 5 -------------------------------------------------------------------------------------
def test_json_bytes_without_a_content_type(three_models):
    body = {
        "id": "r5",
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["a cat"]}],
        "parameters": {"seed": 5},
    }
    r = three_models.client.post("/v2/models/sd/infer", content=json.dumps(body).encode())
    assert "content-type" not in r.request.headers
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "sd" and out["id"] == "r5"
    images = next(o for o in out["outputs"] if o["name"] == "images")
    assert images["datatype"] == "BYTES" and images["shape"] == [1]
    assert images["parameters"] == {"content_type": "base64"}
    seeds = next(o for o in out["outputs"] if o["name"] == "seeds")
    assert seeds == {"name": "seeds", "datatype": "INT64", "shape": [1], "data": [5],
                     "parameters": None}  # fmt: skip
    no_id = three_models.client.post(
        "/v2/models/painter/infer",
        content=json.dumps({"inputs": body["inputs"]}).encode(),
    ).json()
    assert isinstance(no_id["id"], str) and no_id["id"]


def test_tritonclient_json_inputs(three_models):
    r = _triton(three_models).infer(
        "painter", [_prompt("fox", binary=False)], parameters={"width": 24, "height": 8}
    )  # without `outputs`, tritonclient asks for every output as binary data
    (encoded,) = r.as_numpy("images")
    assert Image.open(io.BytesIO(encoded)).size == (24, 8)
    assert r.as_numpy("prompt")[0] == b"fox"


# check 6 -------------------------------------------------------------------------------------
def test_binary_input_and_output_layout(three_models):
    header = json.dumps(
        {
            "inputs": [
                {"name": "prompt", "shape": [1], "datatype": "BYTES",
                 "parameters": {"binary_data_size": 9}}
            ],
            "outputs": [{"name": "images", "parameters": {"binary_data": True}}],
            "parameters": {"seed": 1},
        }
    ).encode()  # fmt: skip
    body = header + struct.pack("<I", 5) + b"a cat"
    r = three_models.client.post(
        "/v2/models/sd/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    length = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:length])
    (images,) = head["outputs"]
    size = images["parameters"]["binary_data_size"]
    tail = r.content[length:]
    assert len(tail) == size
    (n,) = struct.unpack_from("<I", tail)
    assert n == size - 4 and Image.open(io.BytesIO(tail[4:])).format == "PNG"


def test_tritonclient_binary_in_and_out(three_models):
    r = _triton(three_models).infer(
        "sd",
        [_prompt("a cat")],
        outputs=[triton.InferRequestedOutput("images", binary_data=True)],
        request_id="r1",
        parameters={"seed": 3, "output_format": "webp"},
    )
    assert r.get_response()["id"] == "r1"
    (data,) = r.as_numpy("images")
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP" and img.size == (64, 64)


def test_uint8_pixels_and_a_batch_of_prompts(three_models):
    r = _triton(three_models).infer(
        "painter",
        [_prompt("a", "b", "c")],
        parameters={"image_encoding": "uint8", "width": 12, "height": 10, "seed": 4},
        outputs=[
            triton.InferRequestedOutput("images", binary_data=True),
            triton.InferRequestedOutput("prompt", binary_data=False),
        ],
    )
    pixels = r.as_numpy("images")
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 10, 12, 3)
    assert list(r.as_numpy("prompt")) == ["a", "b", "c"]  # one prediction per row, in order


def test_an_image_input_and_an_endpoint_by_name(three_models):
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([_png_bytes()], dtype=np.object_), binary_data=True)
    r = _triton(three_models).infer(
        "sd:img2img", [_prompt("green"), image], parameters={"seed": 1, "strength": 0.5}
    )
    assert r.get_response()["parameters"] == {"endpoint": "img2img"}
    assert Image.open(io.BytesIO(r.as_numpy("images")[0])).size == (64, 64)
    pixels = triton.InferInput("image", [1, 32, 48, 3], "UINT8")
    pixels.set_data_from_numpy(np.zeros((1, 32, 48, 3), dtype=np.uint8), binary_data=True)
    r = _triton(three_models).infer(
        "sd", [_prompt("x"), pixels], query_params={"endpoint": "img2img"}
    )
    assert Image.open(io.BytesIO(r.as_numpy("images")[0])).size == (48, 32)


def test_a_truss_shaped_package_by_name(three_models):
    times = triton.InferInput("times", [1], "INT64")
    times.set_data_from_numpy(np.array([2], dtype=np.int64))
    r = _triton(three_models).infer("typed", [_prompt("hi"), times])
    assert r.as_numpy("result")[0] == b"hi hi" and r.as_numpy("length")[0] == 5


def test_gzip_request_compression(three_models):
    r = _triton(three_models).infer(
        "painter", [_prompt("zip")], request_compression_algorithm="gzip"
    )
    assert r.as_numpy("prompt")[0] == b"zip"
    bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")
    small = three_models.client.post(
        "/v2/models/painter/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert small.status_code == 400  # inflated and parsed (not an inference request)


# check 7 -------------------------------------------------------------------------------------
def test_data_that_does_not_fill_its_shape_is_a_400(three_models):
    http = three_models.client
    two = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["a", "b"]}]}
    r = http.post("/v2/models/painter/infer", json=two)
    assert r.status_code == 400 and "shape [1]" in r.json()["error"]
    header = json.dumps(
        {"inputs": [{"name": "n", "shape": [2], "datatype": "INT64",
                     "parameters": {"binary_data_size": 8}}]}
    ).encode()  # fmt: skip
    r = http.post(
        "/v2/models/painter:tokens/infer",
        content=header + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and "8 bytes do not fill shape [2]" in r.json()["error"]
    unknown = http.post(
        "/v2/models/painter/infer",
        json={"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]},
    )
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"]


# check 8 -------------------------------------------------------------------------------------
def test_server_and_model_metadata(three_models):
    c = _triton(three_models)
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata("sd")
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert inputs["prompt"]["datatype"] == "BYTES" and "optional" not in inputs["prompt"].get(
        "parameters", {}
    )
    assert inputs["num_inference_steps"]["datatype"] == "INT64"
    outputs = {t["name"]: t["datatype"] for t in meta["outputs"]}
    assert outputs["images"] == "BYTES" and outputs["seeds"] == "INT64"
    img2img = three_models.client.get("/v2/models/sd:img2img").json()
    assert "image" in {t["name"] for t in img2img["inputs"]}
    assert three_models.client.get("/v2/models").json() == {"models": ["sd", "painter", "typed"]}


# check 9 -------------------------------------------------------------------------------------
def test_version_paths_are_served_for_version_1_only(three_models):
    http = three_models.client
    tensor = {"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["v"]}
    ok = http.post("/v2/models/painter/versions/1/infer", json={"inputs": [tensor]})
    assert ok.status_code == 200
    for path in ("/v2/models/painter/versions/2", "/v2/models/painter/versions/2/ready"):
        r = http.get(path)
        assert r.status_code == 404 and "version" in r.json()["error"]
    r = http.post("/v2/models/painter/versions/2/infer", json={"inputs": [tensor]})
    assert r.status_code == 404 and "version" in r.json()["error"]
    assert http.get("/v2/models/painter/versions/1/ready").json()["ready"] is True


# check 10 ------------------------------------------------------------------------------------
def test_errors_through_tritonclient(three_models):
    c = _triton(three_models)
    with pytest.raises(InferenceServerException) as err:
        c.infer("nope", [_prompt("x")])
    assert err.value.status() == "404" and "no model named 'nope'" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        c.infer("painter", [_prompt("")])
    assert err.value.status() == "400" and "prompt" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        c.infer("painter", [_prompt("x")], parameters={"fail": True})
    assert err.value.status() == "500" and "dropped its brush" in err.value.message()


# the kserve client, in its own venv ----------------------------------------------------------
KSERVE_SCRIPT = r"""
import asyncio, json, sys
import httpx, numpy as np
from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput

URL = sys.argv[1]
out = {}

async def main():
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=120))
    out["live"] = await v2.is_server_live(URL)
    out["ready"] = await v2.is_server_ready(URL)
    out["model_ready"] = await v2.is_model_ready(URL, "painter")
    for name, binary in (("sd", False), ("sd", True), ("painter", True), ("typed", False)):
        inp = InferInput(name="prompt", shape=[1], datatype="BYTES")
        inp.set_data_from_numpy(np.array([b"a cat"], dtype=np.object_), binary_data=binary)
        r = await v2.infer(URL, InferRequest(model_name=name, infer_inputs=[inp], request_id="k1"),
                           model_name=name)
        out[f"{name}-{binary}"] = {"model": r.model_name, "id": r.id,
                                    "outputs": sorted(o.name for o in r.outputs)}
    try:
        inp = InferInput(name="prompt", shape=[1], datatype="BYTES")
        inp.set_data_from_numpy(np.array([b"x"], dtype=np.object_), binary_data=False)
        await v2.infer(URL, InferRequest(model_name="nope", infer_inputs=[inp]), model_name="nope")
    except httpx.HTTPStatusError as exc:
        out["error"] = [exc.response.status_code, exc.response.json()]
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=120))
    r = await v1.infer(URL, {"instances": ["a cat", "a dog"]}, model_name="painter")
    out["v1"] = [p["prompt"] for p in r["predictions"]]

asyncio.run(main())
print(json.dumps(out))
"""


def test_the_kserve_client(three_models, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(KSERVE_SCRIPT)
    done = subprocess.run(
        [str(client_venv("kserve-0.21.0", [KSERVE])), str(script), three_models.url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["live"] is True and out["ready"] is True and out["model_ready"] is True
    assert out["sd-False"] == {
        "model": "sd",
        "id": "k1",
        "outputs": ["images", "recipe", "seeds", "timings"],
    }
    assert out["sd-True"]["outputs"] == out["sd-False"]["outputs"]
    assert out["painter-True"]["outputs"] == ["images", "prompt", "seeds"]
    assert out["typed-False"]["outputs"] == ["length", "result"]
    assert out["error"][0] == 404 and "nope" in out["error"][1]["error"]
    assert out["v1"] == ["a cat", "a dog"]
