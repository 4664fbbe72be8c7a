"""SageMaker model folders served unchanged: the hosting contract (protocols.md §2.6) over
HTTP with httpx and through boto3's ``sagemaker-runtime`` client, against tiny real
pipelines saved with ``save_pretrained`` plus ``code/inference.py`` in each handler style."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import threading

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from PIL import Image

from conftest import free_port
from impasto import load_package
from impasto.errors import PackageError
from sagemaker_folders import BOTH, CONTEXT_FNS, GATED, PREDICT_FN, TRANSFORM_FN, code_folder
from sagemaker_http import PROMPT, image, png, post, runtime, toolkit_error

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def default_srv(tiny_sd, tmp_path_factory, serve_module):
    import shutil

    folder = tmp_path_factory.mktemp("default") / "model"
    shutil.copytree(tiny_sd, folder)  # save_pretrained output only: the default handler
    return serve_module(folder)


@pytest.fixture(scope="module")
def predict_srv(tiny_sd, tmp_path_factory, serve_module):
    folder = code_folder(tmp_path_factory.mktemp("predict") / "model", PREDICT_FN, weights=tiny_sd)
    return serve_module(folder)


@pytest.fixture(scope="module")
def transform_srv(tiny_sd, tmp_path_factory, serve_module):
    root = tmp_path_factory.mktemp("transform") / "model"
    return serve_module(code_folder(root, TRANSFORM_FN, weights=tiny_sd))


@pytest.fixture(scope="module")
def context_srv(tiny_sd, tmp_path_factory, serve_module):
    root = tmp_path_factory.mktemp("context") / "model"
    return serve_module(code_folder(root, CONTEXT_FNS, weights=tiny_sd))


# -- the default handler (no code/: a diffusers folder) -------------------------------------------


def test_ping_is_an_empty_200_once_loaded(default_srv):
    r = default_srv.client.get("/ping")
    assert r.status_code == 200
    assert r.content == b""


def test_png_accept_answers_png_bytes(default_srv):
    r = post(default_srv, PROMPT, Accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert image(r.content).size == (64, 64)


def test_json_accept_answers_a_bare_base64_png_string(default_srv):
    r = post(default_srv, PROMPT, Accept="application/json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.content.startswith(b'"iVBOR')
    assert image(base64.b64decode(r.json())).format == "PNG"


def test_missing_or_any_accept_is_json(default_srv):
    request = default_srv.client.build_request(
        "POST",
        "/invocations",
        content=json.dumps(PROMPT),
        headers={"Content-Type": "application/json"},
    )
    del request.headers["accept"]
    r = default_srv.client.send(request)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.content.startswith(b'"iVBOR')
    r = post(default_srv, PROMPT, Accept="*/*")
    assert r.headers["content-type"] == "application/json"
    assert r.content.startswith(b'"iVBOR')


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("image/jpeg", "JPEG"),
        ("image/webp", "WEBP"),
        ("image/tiff", "TIFF"),
        ("image/bmp", "BMP"),
        ("image/gif", "GIF"),
        ("image/x-image", "PNG"),
    ],
)
def test_image_accepts_answer_that_format(default_srv, accept, fmt):
    r = post(default_srv, PROMPT, Accept=accept)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == accept
    assert image(r.content).format == fmt


def test_npy_accept_answers_the_image_array(default_srv):
    r = post(default_srv, PROMPT, Accept="application/x-npy")
    assert r.status_code == 200, r.text
    assert np.load(io.BytesIO(r.content)).shape == (64, 64, 3)


def test_csv_body_with_an_inputs_header(predict_srv):
    r = post(predict_srv, b"inputs\na fox\n", content_type="text/csv", Accept="image/png")
    assert r.status_code == 200, r.text  # predict_fn got {"inputs": ["a fox"]}
    assert image(r.content).format == "PNG"
    r = post(predict_srv, b"prompt\na fox\n", content_type="text/csv")
    assert "correct CSV with Header columns" in toolkit_error(r, 400)


def test_unsupported_content_type_is_the_toolkit_400(default_srv):
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        r = post(default_srv, b"a fox", content_type=ctype)
        message = toolkit_error(r, 400)
        assert message.startswith(f"Content type {ctype} is not supported by this framework.")


def test_unsupported_accept_is_the_toolkit_400(default_srv):
    message = toolkit_error(post(default_srv, PROMPT, Accept="text/plain"), 400)
    assert message.startswith("Content type text/plain is not supported")


def test_malformed_json_is_a_400_naming_the_problem(default_srv):
    message = toolkit_error(post(default_srv, b'{"inputs": "a fox",'), 400)
    assert "Expecting" in message


def test_openapi_lists_the_sagemaker_routes(default_srv):
    paths = default_srv.client.get("/openapi.json").json()["paths"]
    assert {"/ping", "/invocations", "/endpoints/{endpoint_name}/invocations"} <= set(paths)


# -- predict_fn: image bodies, a handler that raises ------------------------------------------------


def test_image_body_reaches_predict_fn_as_an_rgb_pil_image(predict_srv):
    r = post(predict_srv, png((48, 40), "RGBA"), content_type="image/png", Accept="image/png")
    assert r.status_code == 200, r.text
    out = image(r.content)
    assert (out.format, out.size) == ("PNG", (48, 40))  # img2img kept the input's size


def test_a_handler_that_raises_is_a_400_and_the_server_goes_on(predict_srv):
    message = toolkit_error(post(predict_srv, {"inputs": "raise"}), 400)
    assert message == "the handler refused this prompt"
    r = post(predict_srv, {"inputs": "a fox", "parameters": {"seed": 3}}, Accept="image/png")
    assert r.status_code == 200


def test_model_fn_without_context_and_seeded_predict_fn(predict_srv):
    body = {"inputs": "a fox", "parameters": {"seed": 7}}
    first = post(predict_srv, body, Accept="image/png").content
    assert post(predict_srv, body, Accept="image/png").content == first
    body["parameters"]["seed"] = 8
    assert post(predict_srv, body, Accept="image/png").content != first


def test_image_bodies_are_decoded_under_the_image_limits(predict_srv):
    buf = io.BytesIO()
    Image.new("L", (4100, 4100)).save(buf, format="PNG")  # over media.max_pixels (4096x4096)
    message = toolkit_error(post(predict_srv, buf.getvalue(), content_type="image/png"), 400)
    assert "media.max_pixels" in message
    message = toolkit_error(post(predict_srv, b"not a png", content_type="image/png"), 400)
    assert "not an image" in message


def test_npy_and_audio_bodies_reach_predict_fn(predict_srv):
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), dtype=np.float32))
    r = post(predict_srv, buf.getvalue(), content_type="application/x-npy")
    assert r.json() == {"array": [2, 3], "dtype": "float32"}
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object))  # a pickle inside: refused
    assert (
        "pickle"
        in toolkit_error(
            post(predict_srv, buf.getvalue(), content_type="application/x-npy"), 400
        ).lower()
    )
    for ctype in ("audio/wave", "audio/x-flac", "audio/mpeg", "audio/ogg", "audio/x-audio"):
        r = post(predict_srv, b"RIFF0000WAVE", content_type=ctype)
        assert r.json() == {"audio_bytes": 12}


def test_the_default_pipeline_makes_one_image_whatever_is_asked(default_srv):
    body = {"inputs": "a fox", "parameters": {"num_inference_steps": 2, "num_images_per_prompt": 3}}
    r = post(default_srv, body)
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), str)  # one image, as a base64 string


def test_impastos_own_predict_route_runs_the_handlers_too(predict_srv):
    r = predict_srv.client.post(
        "/predict", json={"inputs": "a fox"}, headers={"Accept": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert image(r.content).format == "PNG"


# -- transform_fn ----------------------------------------------------------------------------------


def test_transform_fn_gets_text_for_json_and_csv_and_bytes_otherwise(transform_srv, tmp_path):
    r = post(transform_srv, b"inputs\nx\n", content_type="text/csv", Accept="*/*")
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["type"] == "str"
    assert seen["accept"] == "application/json"
    assert seen["loaded_from"].endswith("model")  # model_fn(model_dir, context) got the folder
    r = post(transform_srv, b"\x00\x01raw", content_type="application/x-echo", Accept="text/x-mine")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/x-mine"  # the Accept, whatever it is
    assert json.loads(r.content)["type"] == "bytearray"
    assert json.loads(r.content)["size"] == 5


def test_transform_fn_answers_per_accept(transform_srv):
    r = post(transform_srv, {"inputs": "a fox"}, Accept="image/png")
    assert r.status_code == 200
    assert image(r.content).format == "PNG"
    r = post(transform_srv, {"inputs": "a fox"})
    assert image(base64.b64decode(r.json()["image"])).size == (64, 64)


def test_transform_fn_with_predict_fn_is_a_start_up_error(tmp_path):
    folder = code_folder(tmp_path / "model", BOTH)
    with pytest.raises(PackageError) as info:
        load_package(folder)
    assert "transform_fn" in info.value.message
    assert "predict_fn" in info.value.message
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "impasto.cli.main",
            "serve",
            str(folder),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4
    assert "transform_fn" in done.stderr
    assert "predict_fn" in done.stderr


def test_a_handler_with_the_wrong_arity_is_a_start_up_error(tmp_path):
    folder = code_folder(tmp_path / "model", "def predict_fn(data):\n    return data\n")
    with pytest.raises(PackageError, match=r"predict_fn takes 2 or 3 arguments"):
        load_package(folder)


# -- input_fn/output_fn with context: headers in, custom attributes out ---------------------------


def test_custom_attributes_reach_the_handler_and_are_echoed(context_srv):
    def run(seed: int) -> httpx.Response:
        return post(
            context_srv,
            {"inputs": "a fox"},
            Accept="image/png",
            **{
                "X-Amzn-SageMaker-Custom-Attributes": f"seed={seed}",
                "X-Amzn-SageMaker-Something-New": "ignored",
            },
        )

    first = run(42)
    assert first.status_code == 200, first.text
    assert first.headers["x-amzn-sagemaker-custom-attributes"] == "echo;seed=42"
    assert first.headers["x-model-dir"].endswith("model")
    assert run(42).content == first.content  # the seed reached input_fn
    assert run(43).content != first.content


def test_context_headers_and_system_properties(context_srv):
    r = post(context_srv, {"inputs": "a fox"}, **{"X-Amzn-SageMaker-Inference-Id": "inf-7"})
    assert r.status_code == 200, r.text
    assert r.json() == {"size": [64, 64], "inference_id": "inf-7", "gpu_id": None}


# -- boto3's invoke_endpoint against the local server -------------------------------------------------


def test_boto3_invoke_endpoint_answers_png(default_srv):
    r = runtime(default_srv).invoke_endpoint(
        EndpointName="sd-endpoint",
        Body=json.dumps(PROMPT).encode(),
        ContentType="application/json",
        Accept="image/png",
    )
    assert r["ContentType"] == "image/png"
    assert r["InvokedProductionVariant"] == "AllTraffic"
    assert image(r["Body"].read()).size == (64, 64)


def test_boto3_custom_attributes_round_trip(context_srv):
    r = runtime(context_srv).invoke_endpoint(
        EndpointName="sd",
        Body=b'{"inputs": "a fox"}',
        ContentType="application/json",
        Accept="image/png",
        CustomAttributes="seed=42",
        InferenceId="inf-1",
    )
    assert r["CustomAttributes"] == "echo;seed=42"
    assert image(r["Body"].read()).format == "PNG"


def test_boto3_sees_a_handler_error_as_model_error(predict_srv):
    client = runtime(predict_srv)
    with pytest.raises(client.exceptions.ModelError) as info:
        client.invoke_endpoint(
            EndpointName="sd", Body=b'{"inputs": "raise"}', ContentType="application/json"
        )
    response = info.value.response
    assert response["OriginalStatusCode"] == 400
    assert json.loads(response["OriginalMessage"])["message"] == "the handler refused this prompt"
    assert "Received client error (400) from primary" in response["Error"]["Message"]


def test_boto3_body_over_6_mib_is_a_validation_error(default_srv):
    client = runtime(default_srv)
    with pytest.raises(client.exceptions.ClientError) as info:
        client.invoke_endpoint(
            EndpointName="sd", Body=b"x" * (6 * 1024 * 1024 + 1), ContentType="text/csv"
        )
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unsigned_boto3_works_too(default_srv):
    import botocore

    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=default_srv.url,
        region_name="us-east-1",
        config=Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}),
    )
    r = client.invoke_endpoint(
        EndpointName="sd", Body=json.dumps(PROMPT), ContentType="application/json"
    )
    assert r["ContentType"] == "application/json"
    assert r["Body"].read().startswith(b'"iVBOR')


# -- health, overload and deadlines ---------------------------------------------------------------


def blocked_request(server, folder) -> tuple[dict, threading.Thread]:
    """A request the GATED handler holds until ``release`` exists, once it is running."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(r=post(server, {"inputs": "block"})))
    worker.start()
    while not (folder / "started").exists() and worker.is_alive():
        worker.join(0.01)
    return result, worker


def test_ping_is_503_while_loading_and_fast_while_a_request_runs(tmp_path, serve_module):
    folder = code_folder(tmp_path / "model", GATED)
    server = serve_module(folder, ready=False)
    r = server.client.get("/ping")
    assert r.status_code == 503
    assert json.loads(r.content)["type"] == "ServiceUnavailableException"
    assert toolkit_error(post(server, {"inputs": "early"}), 503)  # invocations too
    (folder / "load.open").write_text("1")
    server.wait_ready(60)
    assert server.client.get("/ping").status_code == 200

    result, worker = blocked_request(server, folder)
    try:
        with httpx.Client(base_url=server.url, timeout=2.0) as quick:  # SageMaker's ping timeout
            assert quick.get("/ping").status_code == 200
    finally:
        (folder / "release").write_text("1")
        worker.join(30)
    assert result["r"].json() == {"echo": "block"}
    assert (folder / "loads").read_text() == "x"  # model_fn ran once


def test_overload_is_429_and_a_deadline_504_in_the_toolkit_shape(tmp_path, serve_module):
    config = "runtime:\n  max_queue: 0\n  predict_timeout_s: 1.0\n"
    folder = code_folder(tmp_path / "model", GATED, config=config)
    (folder / "load.open").write_text("1")
    server = serve_module(folder)
    result, worker = blocked_request(server, folder)
    try:
        assert "too many requests" in toolkit_error(post(server, {"inputs": "more"}), 429)
        worker.join(30)
    finally:
        (folder / "release").write_text("1")
    assert "deadline" in toolkit_error(result["r"], 504)


def test_a_deadline_stops_the_default_pipeline_within_a_step(tiny_sd, tmp_path, serve_module):
    folder = code_folder(
        tmp_path / "model", "# every handler is the default\n", weights=tiny_sd,
        config="runtime:\n  predict_timeout_s: 2.0\n",
    )  # fmt: skip
    server = serve_module(folder)
    runner = server.server.config.app.state.runner
    endless = {"inputs": "a fox", "parameters": {"num_inference_steps": 999}}  # minutes of work
    assert "deadline" in toolkit_error(post(server, endless), 504)
    for _ in range(3000):  # the pipeline's thread returns within a step, not 999 steps later
        if runner.stats()["running"] == 0:
            break
        threading.Event().wait(0.01)
    assert runner.stats()["running"] == 0


# -- HF_MODEL_ID, SAGEMAKER_BIND_TO_PORT, argv `serve`, requirements ------------------------------


def test_hf_model_id_loads_through_the_model_store(tiny_sd, tmp_path, monkeypatch, serve_module):
    from impasto.sagemaker import hub_store_ref
    from impasto.store import ModelStore

    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path / "home"))
    ref = hub_store_ref("Tiny-Org/tiny-sd", None)
    assert ref == "hf--tiny-org--tiny-sd:main"
    ModelStore().import_folder(ref, tiny_sd)  # what the first start downloads
    monkeypatch.setenv("HF_MODEL_ID", "Tiny-Org/tiny-sd")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_package(empty).kind == "sagemaker"
    server = serve_module(empty)
    r = post(server, PROMPT, Accept="image/png")
    assert r.status_code == 200, r.text
    assert image(r.content).size == (64, 64)


def test_serve_with_argv_serve_only_uses_sm_model_dir_and_bind_port(tmp_path):
    folder = code_folder(tmp_path / "opt-ml-model", GATED)
    (folder / "load.open").write_text("1")
    here = tmp_path / "cwd"
    here.mkdir()
    port = free_port()
    env = {**os.environ, "SM_MODEL_DIR": str(folder), "SAGEMAKER_BIND_TO_PORT": str(port)}
    env.pop("IMPASTO_PORT", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "impasto.cli.main", "serve"], cwd=here, env=env, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            status = None
            for _ in range(1200):
                if proc.poll() is not None:
                    break
                try:
                    status = client.get("/ping").status_code
                except httpx.TransportError:
                    status = None
                if status == 200:
                    break
                threading.Event().wait(0.1)
            assert status == 200, (tmp_path / "serve.log").read_text()
            r = client.post("/invocations", json={"inputs": "hi"})
            assert r.json() == {"echo": "hi"}
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()


def test_port_defaults_to_8080_and_honours_sagemaker_bind_to_port():
    from typer.main import get_command

    from impasto.cli.main import app

    serve = get_command(app).commands["serve"]
    port = next(p for p in serve.params if p.name == "port")
    assert port.default == 8080
    assert "SAGEMAKER_BIND_TO_PORT" in port.envvar


def test_missing_requirements_are_reported_at_load(tmp_path, caplog):
    folder = code_folder(tmp_path / "model", "def predict_fn(data, model):\n    return data\n")
    (folder / "code" / "requirements.txt").write_text(
        "pillow\nimpasto-no-such-package==1.0  # pinned\ntorch @ https://example.invalid/torch-2.0.1-cp310.whl\n"
    )
    with caplog.at_level(logging.WARNING, logger="impasto.package"):
        load_package(folder)
    warned = [r.getMessage() for r in caplog.records if "not installed" in r.getMessage()]
    assert len(warned) == 1
    assert "impasto-no-such-package==1.0" in warned[0]
    assert "pillow" not in warned[0].split("not installed in this environment: ")[1]
    assert "torch" not in warned[0].split("not installed in this environment: ")[1]
